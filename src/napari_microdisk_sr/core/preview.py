"""Previews: upscale the window a user is looking at, reusing the blocks already upscaled.

A preview cuts its window's plane into fixed blocks of the image's grid (:data:`BLOCK` input pixels). The
blocks that are not in its :class:`PreviewCache` are upscaled together, as the box around them, with
:func:`~.infer.upscale`'s ``region``: with the tiles' context around it and the plane's value range, so that
every block, and the preview assembled from them, equals the same window of the whole plane's result
(exactly where the context covers the network's receptive field, as the model's padding does for
SRVGGNetCompact). Panning back, zooming out or overlapping rectangles then only computes the blocks not seen
before with the same model and settings.
"""

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Generator, Hashable
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .images import ImageLayout, Normalization, image_layout
from .infer import TileEvent, UpscaleConfig, UpscaleResult, upscale
from .models import LoadedModel
from .progress import StopFlag
from .regions import Region

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
    normalization: "tuple[Normalization, Normalization | None] | None" = None,
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
        Tile, padding, device, half precision and intensity, as for :func:`~.infer.upscale`.
    cache : PreviewCache, optional
        Blocks computed earlier with the same plane, model and settings are taken from it, new ones added.
    stop : StopFlag, optional
        Checked before every tile; once set the job returns None.
    rgb : bool, optional
        Whether the last axis holds channels.
    normalization : (Normalization, Normalization or None), optional
        The value mappings of the whole stack the plane belongs to (see :func:`.images.normalizations_for`),
        so that the preview equals that plane's part of the whole stack's result; by default the plane's own.

    Returns
    -------
    generator of TileEvent (the tiles of the blocks to compute), returning UpscaleResult or None
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
    return _preview_job(
        plane, layout, model, region, config=config, cache=cache, stop=stop, rgb=rgb,
        normalization=normalization,
    )  # fmt: skip


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
    normalization: "tuple[Normalization, Normalization | None] | None",
) -> Generator[TileEvent, None, "UpscaleResult | None"]:
    scale = model.spec.scale
    blocks = _Grid(region, layout.height, layout.width).blocks()
    key = (_fingerprint(plane), model.sha256, config, normalization)
    cached = {block: None if cache is None else cache.get((key, block)) for block in blocks}
    missing = [block for block, image in cached.items() if image is None]
    made_with = {"model": model.name, "model_source": model.source, "model_sha256": model.sha256}
    if missing:  # one job for all of them: the context around each block is computed once
        box = Region(min(b.y0 for b in missing), max(b.y1 for b in missing),
                     min(b.x0 for b in missing), max(b.x1 for b in missing))  # fmt: skip
        job = upscale(
            plane,
            model,
            **config.arguments(),
            stop=stop,
            rgb=rgb,
            region=box,
            normalization=normalization,
        )
        result = yield from job
        if result is None:
            return None
        made_with = {k: v for k, v in result.provenance.items() if k != "region"}
        for block in missing:
            cached[block] = _cut(result.image, block, box, scale)
            if cache is not None:
                cache.put((key, block), cached[block])
    top, left = blocks[0].y0, blocks[0].x0
    channels = () if layout.is_gray else (layout.channels,)
    out = np.empty(((blocks[-1].y1 - top) * scale, (blocks[-1].x1 - left) * scale, *channels), plane.dtype)
    cover = Region(top, blocks[-1].y1, left, blocks[-1].x1)
    for block, image in cached.items():
        out[_window(block, cover, scale)] = image
    where = {"region": [region.y0, region.y1, region.x0, region.x1]}
    return UpscaleResult(np.ascontiguousarray(out[_window(region, cover, scale)]), made_with | where)


def _window(inner: Region, outer: Region, scale: int) -> tuple[slice, slice]:
    """Where ``inner`` lies in the upscaled ``outer``."""
    return (
        slice((inner.y0 - outer.y0) * scale, (inner.y1 - outer.y0) * scale),
        slice((inner.x0 - outer.x0) * scale, (inner.x1 - outer.x0) * scale),
    )


def _cut(upscaled: np.ndarray, block: Region, box: Region, scale: int) -> np.ndarray:
    return np.ascontiguousarray(upscaled[_window(block, box, scale)])


def _fingerprint(plane: np.ndarray) -> str:
    """What identifies a plane's pixels for the cache (its dtype, shape and bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    array = np.ascontiguousarray(plane)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.data)
    return digest.hexdigest()
