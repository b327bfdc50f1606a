"""Previews: upscale the window a user is looking at, reusing the blocks already upscaled.

A preview cuts its window's plane into fixed blocks of the image's grid (:data:`BLOCK` input pixels) and
upscales each block that is not in its :class:`PreviewCache` with :func:`~.infer.upscale`'s ``region``: with
the tiles' context around it and the plane's value range, so that every block, and the preview assembled from
them, equals the same window of the whole plane's result (exactly where the context covers the network's
receptive field, as the model's padding does for SRVGGNetCompact). Panning back, zooming out or overlapping
rectangles then only computes the blocks not seen before with the same model and settings.
"""

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Generator, Hashable
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .images import ImageLayout, image_layout
from .infer import Region, TileEvent, UpscaleConfig, UpscaleResult, upscale
from .models import LoadedModel
from .progress import StopFlag, drive

__all__ = ["BLOCK", "PreviewCache", "preview"]

BLOCK = 64
"""Side of the cached blocks in input pixels: a screen-sized region is a few dozen of them."""
_CACHE_BYTES = 512 * 2**20


class PreviewCache:
    """Upscaled blocks by (image, model, settings, block), least recently used dropped beyond ``max_bytes``.

    Thread-safe: previews run in workers while the GUI may start the next one.
    """

    def __init__(self, max_bytes: int = _CACHE_BYTES) -> None:
        self._blocks: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> "np.ndarray | None":
        with self._lock:
            block = self._blocks.get(key)
            if block is None:
                self.misses += 1
                return None
            self.hits += 1
            self._blocks.move_to_end(key)
            return block

    def put(self, key: Hashable, block: np.ndarray) -> None:
        with self._lock:
            if key in self._blocks:
                return
            self._blocks[key] = block
            self._bytes += block.nbytes
            while self._bytes > self._max_bytes and len(self._blocks) > 1:
                _, dropped = self._blocks.popitem(last=False)
                self._bytes -= dropped.nbytes


@dataclass(frozen=True)
class _Grid:
    """The blocks of a plane that cover a region."""

    region: Region
    height: int
    width: int

    def blocks(self) -> list[Region]:
        r = self.region
        return [
            Region(y, min(y + BLOCK, self.height), x, min(x + BLOCK, self.width))
            for y in range(r.y0 // BLOCK * BLOCK, r.y1, BLOCK)
            for x in range(r.x0 // BLOCK * BLOCK, r.x1, BLOCK)
        ]


def preview(
    plane: np.ndarray,
    model: LoadedModel,
    region: Region,
    *,
    config: UpscaleConfig,
    cache: "PreviewCache | None" = None,
    stop: "StopFlag | None" = None,
    rgb: "bool | None" = None,
) -> Generator[TileEvent, None, "UpscaleResult | None"]:
    """Upscale ``region`` of a plane block by block, as a job generator (see the module notes).

    Parameters
    ----------
    plane : (H, W), (H, W, 3) or (H, W, 4) ndarray
        One plane of a layer (the one on screen); its value range maps the values.
    model : LoadedModel
    region : Region
        The window in the plane's pixels.
    config : UpscaleConfig
        Tile, padding, device, half precision and bit depth, as for :func:`~.infer.upscale`.
    cache : PreviewCache, optional
        Blocks computed earlier with the same plane, model and settings are taken from it, new ones added.
    stop : StopFlag, optional
        Checked between and within blocks; once set the job returns None.
    rgb : bool, optional
        Whether the last axis holds channels.

    Returns
    -------
    generator of TileEvent (one per block: ``done`` of ``total`` blocks), returning UpscaleResult or None
        The window x the model's scale, with the provenance of the blocks and the ``region``.

    Raises
    ------
    InputError
        For a stack (give one plane) or a region outside the plane.
    """
    layout = image_layout(plane.shape, rgb=rgb)
    if layout.leading:
        raise InputError(f"a preview takes one plane, got a stack of shape {plane.shape}")
    region.check_inside(layout.height, layout.width)
    return _preview_job(plane, layout, model, region, config=config, cache=cache, stop=stop, rgb=rgb)


def _preview_job(
    plane: np.ndarray,
    layout: ImageLayout,
    model: LoadedModel,
    region: Region,
    *,
    config: UpscaleConfig,
    cache: "PreviewCache | None",
    stop: "StopFlag | None",
    rgb: "bool | None",
) -> Generator[TileEvent, None, "UpscaleResult | None"]:
    scale = model.spec.scale
    blocks = _Grid(region, layout.height, layout.width).blocks()
    key = (_fingerprint(plane), model.sha256, config)
    top, left = blocks[0].y0, blocks[0].x0
    channels = () if layout.is_gray else (layout.channels,)
    out = np.empty(((blocks[-1].y1 - top) * scale, (blocks[-1].x1 - left) * scale, *channels), plane.dtype)
    provenance: dict = {}
    for done, block in enumerate(blocks, 1):
        if stop is not None and stop.is_set():
            return None
        upscaled = None if cache is None else cache.get((key, block))
        if upscaled is None:
            job = upscale(
                plane,
                model,
                tile=config.tile,
                tile_pad=config.tile_pad,
                device=config.device,
                half=config.half,
                bit_depth=config.bit_depth,
                stop=stop,
                rgb=rgb,
                region=block,
            )
            result = drive(job)  # one block is quick: the preview reports blocks
            if result is None:
                return None
            upscaled, provenance = result.image, result.provenance
            if cache is not None:
                cache.put((key, block), upscaled)
        ys = slice((block.y0 - top) * scale, (block.y1 - top) * scale)
        xs = slice((block.x0 - left) * scale, (block.x1 - left) * scale)
        out[ys, xs] = upscaled
        yield TileEvent(done, len(blocks), 0, 1, BLOCK, provenance.get("precision", "float32"))
    ys = slice((region.y0 - top) * scale, (region.y1 - top) * scale)
    xs = slice((region.x0 - left) * scale, (region.x1 - left) * scale)
    made_with = provenance or {
        "model": model.name,
        "model_source": model.source,
        "model_sha256": model.sha256,
    }
    where = {"region": [region.y0, region.y1, region.x0, region.x1]}
    return UpscaleResult(np.ascontiguousarray(out[ys, xs]), made_with | where)


def _fingerprint(plane: np.ndarray) -> str:
    """What identifies a plane's pixels for the cache (its dtype, shape and bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    array = np.ascontiguousarray(plane)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.data)
    return digest.hexdigest()
