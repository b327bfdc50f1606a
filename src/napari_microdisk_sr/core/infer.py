"""Tiled super-resolution with overlap, progress per tile, bounded memory and a clean out-of-memory fallback.

Every tile is read with ``tile_pad`` extra pixels on each side (none beyond the image border, where the
network zero-pads exactly as it does on the whole image), run through the network, and only the output of its
core is kept. When ``tile_pad`` covers the network's receptive field the tiled output equals the untiled one
to float precision.

``tile`` bounds memory: no network input is larger than ``tile + 2 * tile_pad`` pixels a side, the input of
a tile of ``tile`` pixels away from the border. Within that bound the plane is cut into as few tiles as
possible, with inputs of about the same size (within the model's size multiple): a tile at the border needs
padding on one side only, so its core may be ``tile_pad`` pixels longer. An image no larger than one padded
tile is not cut at all. Fewer tiles means less overlap computed twice and fewer seams.

The output array, of the input's dtype, is allocated once and filled tile by tile; temporaries are the size
of one tile. On out-of-memory the tile is halved until the largest input shrinks (down to :data:`MIN_TILE`)
and the plane restarts, so no output ever mixes a failed tile with good ones.
"""

import functools
import itertools
import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from .device import DEVICE_CHOICES, describe_device, half_dtype, is_device_name, resolve_device
from .errors import InputError, MicrodiskSRError
from .images import (
    ImageLayout,
    Normalization,
    bit_depth_hint,
    from_model_output,
    image_layout,
    normalizations_for,
    resize_alpha,
    to_model_input,
    validate_image,
)
from .intensity import AUTO, Intensity
from .model_copies import copied, memory_format, prepared
from .models import LoadedModel
from .progress import StopFlag, drive
from .regions import Region

log = logging.getLogger(__name__)

DEFAULT_TILE = 256
"""Default tile side in low-resolution pixels (x4plus in float32 on CUDA: about 1 GiB of activations)."""
MIN_TILE = 32
"""Smallest tile tried after running out of memory."""
DEFAULT_TILE_PAD = 32
"""Tile padding for a bare ``nn.Module`` whose receptive field is unknown (a LoadedModel knows its own)."""
_ALPHA_PAD = 2
"""Bicubic interpolation reads 2 source pixels on each side."""


@dataclass(frozen=True)
class TileEvent:
    """Progress of an upscaling job, yielded after each tile.

    Attributes
    ----------
    done, total : int
        Tiles finished and tiles in the whole job (all planes). Both can change when the tile shrinks after
        running out of memory: the plane restarts, ``done`` goes back and ``total`` is recounted.
    plane, planes : int
        Index of the plane being processed (0-based) and the number of planes.
    tile : int
        Tile setting in use, in low-resolution pixels (see :class:`UpscaleConfig`); 0 means the whole plane
        at once. It is smaller than asked for after running out of memory.
    precision : {"float32", "float16", "bfloat16"}
        What the tile was computed in (half precision falls back to float32 after a non-finite output).
    """

    done: int
    total: int
    plane: int
    planes: int
    tile: int
    precision: str


@dataclass(frozen=True, eq=False)
class UpscaleResult:
    """What an upscaling job returns: the image and what it was made with.

    Attributes
    ----------
    image : ndarray
        The upscaled image, shape ``(..., H * scale, W * scale[, C])``, of the input's dtype and range.
    provenance : dict
        ``model``, ``model_source``, ``model_sha256`` (None for a bare module), ``scale``, and the settings in
        effect at the end: ``tile`` (smaller than asked for after running out of memory), ``tile_pad`` (the
        model's when not given, rounded up to its input size multiple), ``device`` (in words), ``half``
        (whether 16-bit floats were used), ``precision`` (``float32``, ``float16`` or ``bfloat16``: float32
        after a non-finite half-precision output), ``intensity`` (the mapping used, in its text form) and
        ``value_range`` (the values that mapped to 0 and 1).
    """

    image: np.ndarray
    provenance: dict[str, Any]


@dataclass(frozen=True)
class UpscaleConfig:
    """Settings of an upscaling job, shared by the command line and the widgets.

    Attributes
    ----------
    tile : int
        Tile side in low-resolution pixels, which bounds memory: no network input is larger than
        ``tile + 2 * tile_pad`` a side (tiles at the border may have longer cores, see the module notes);
        0 processes each plane at once (fastest, most memory).
    tile_pad : int or None
        Overlap on each side of a tile, in low-resolution pixels; None uses the model's recommendation
        (``LoadedModel.spec.tile_pad``), or :data:`DEFAULT_TILE_PAD` for a bare module.
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"}
        Where to run; ``auto`` picks CUDA, then Apple MPS, then the CPU.
    half : bool
        16-bit autocast, a fast preview: float16 on CUDA (about half the memory), bfloat16 on CPUs with
        native bfloat16 (x4plus about 2x faster; its 8-bit output about 52 dB from float32's, about as far
        as tiling moves it); ignored with a logged notice elsewhere (see :func:`.device.half_dtype`).
    intensity : Intensity or None
        How values map to the network's ``[0, 1]`` and back (see :class:`.intensity.Intensity`; its text form,
        e.g. ``"percentile"`` or ``"bits:12"``, is accepted too). None: the mapping a fine-tuned model was
        trained with (recorded in its sidecar), else ``auto`` (uint8 by its range, every other dtype by
        its 1st-99.8th percentiles, which keeps a dim 16-bit image's intensities).
    """

    tile: int = DEFAULT_TILE
    tile_pad: "int | None" = None
    device: str = "auto"
    half: bool = False
    intensity: "Intensity | None" = None

    def __post_init__(self) -> None:
        if not _is_int(self.tile) or self.tile < 0:
            raise InputError(f"tile must be a whole number >= 0 (0 = no tiling), not {self.tile!r}")
        if self.tile_pad is not None and (not _is_int(self.tile_pad) or self.tile_pad < 0):
            raise InputError(f"tile_pad must be a whole number >= 0, not {self.tile_pad!r}")
        if not isinstance(self.device, str) or not is_device_name(self.device):
            raise InputError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICE_CHOICES)}")
        if not isinstance(self.half, bool):
            raise InputError(f"half must be True or False, not {self.half!r}")
        if self.intensity is not None:
            object.__setattr__(self, "intensity", Intensity.parse(self.intensity))

    def arguments(self) -> dict[str, Any]:
        """These settings as the keyword arguments of :func:`upscale`."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def upscale(
    image: np.ndarray,
    model: "LoadedModel | nn.Module",
    *,
    tile: int = DEFAULT_TILE,
    tile_pad: "int | None" = None,
    device: "str | torch.device" = "auto",
    half: bool = False,
    intensity: "Intensity | str | None" = None,
    stop: "StopFlag | None" = None,
    rgb: "bool | None" = None,
    scale: "int | None" = None,
    region: "Region | None" = None,
    normalization: "tuple[Normalization, Normalization | None] | None" = None,
) -> Generator[TileEvent, None, "UpscaleResult | None"]:
    """Super-resolve an image tile by tile, as a job generator.

    The arguments are checked when ``upscale`` is called (bad input raises before any work); the returned
    generator does the work, yields a :class:`TileEvent` after each tile and returns an
    :class:`UpscaleResult` (the image with its provenance). Drive it with
    :func:`~napari_microdisk_sr.core.progress.drive` or use :func:`upscale_array`. Like every job of the
    package, it reports a failure by raising.

    Parameters
    ----------
    image : (H, W), (H, W, 3), (H, W, 4) ndarray, or a stack of those with leading axes (4D at most)
        Integer or float data (see :mod:`~napari_microdisk_sr.core.images` for the value mapping).
    model : LoadedModel or nn.Module
        A loaded model, or a bare module mapping ``(N, 3, h, w)`` in ``[0, 1]`` to
        ``(N, 3, h * scale, w * scale)`` (then ``scale`` is required). The module is not modified: the job
        runs on its own copy, on ``device``, so training may go on meanwhile. A bare module is copied for
        each job; a LoadedModel stands for its weights file, so its copy on a device is made once and reused
        (it is remade when a parameter or buffer is replaced or loaded anew). Put a bare module in eval mode.
    tile, tile_pad, device, half, intensity
        See :class:`UpscaleConfig`. The value mapping is computed once, from the whole image (all planes),
        by :func:`.images.normalizations_for`, and used for every tile and region.
    stop : StopFlag, optional
        Checked before each tile; once set, the job ends and returns None (never a partial image).
    rgb : bool, optional
        Whether the last axis holds RGB(A) channels (see :func:`.images.image_layout`).
    scale : int, optional
        Upscaling factor of a bare module; for a LoadedModel it must match ``model.spec.scale`` if given.
    region : Region, optional
        Upscale only this window of every plane (a preview): it is read with ``tile_pad`` pixels of context
        around it (none beyond the image border) and values are mapped by the whole image's range, so the
        result equals the same window of the whole image's result (exactly when the padding covers the
        receptive field, as the model's does for SRVGGNetCompact). The result is the window x ``scale``.
    normalization : (Normalization, Normalization or None), optional
        The colour and alpha value mappings to use instead of the image's own (see
        :func:`.images.normalizations_for`): a block of a larger image is mapped by the whole image's, so
        that the blocks make up the whole image's result (see :mod:`.ome_zarr`).

    Returns
    -------
    Generator[TileEvent, None, UpscaleResult or None]
        Its return value is the upscaled image with its provenance, or None if stopped.

    Raises
    ------
    InputError
        Invalid image, model or settings (when called).
    MicrodiskSRError
        Out of memory even with :data:`MIN_TILE` tiles, or a module whose output has the wrong shape (while
        running).
    """
    config = UpscaleConfig(tile=tile, tile_pad=tile_pad, device=str(device), half=half, intensity=intensity)
    image = np.asarray(image)
    validate_image(image)
    layout = image_layout(image.shape, rgb=rgb)
    mapping = intensity_for(model, config.intensity)
    norms = normalization or normalizations_for(image, layout, intensity=mapping)
    if region is not None:
        region.check_inside(layout.height, layout.width)
    if normalization is None and mapping.for_dtype(image.dtype).mode == "range":
        _hint_bit_depth(image[..., :3] if layout.has_alpha else image)
    module, factor, pad, multiple = _unpack_model(model, scale=scale, tile_pad=config.tile_pad)
    dev = resolve_device(config.device)
    half = half_dtype(dev) if config.half else None
    if config.half and half is None:
        log.warning(
            "half precision needs CUDA or a CPU with native bfloat16; running in float32 on %s",
            describe_device(dev),
        )
    pad = _round_up(pad, multiple)
    run = functools.partial(
        _upscale_job,
        module=module,
        device=dev,
        scale=factor,
        half=half,
        reuse=isinstance(model, LoadedModel),
        norms=norms,
        tile=config.tile,
        pad=pad,
        multiple=multiple,
        stop=stop,
        made_with=_model_record(model),
        intensity=mapping,
    )
    if region is not None:
        return _region_job(image, layout, region, pad, multiple, factor, run)
    return run(image, layout)


def _region_job(
    image: np.ndarray,
    layout: ImageLayout,
    region: Region,
    pad: int,
    multiple: int,
    scale: int,
    run: "Callable[[np.ndarray, ImageLayout], Generator[TileEvent, None, UpscaleResult | None]]",
) -> Generator[TileEvent, None, "UpscaleResult | None"]:
    """Upscale ``region`` of every plane with its context (``run`` on the grown window), keep its core."""
    context = region.grown(pad, multiple, layout.height, layout.width)
    window = (
        image[..., context.y0 : context.y1, context.x0 : context.x1, :]
        if not layout.is_gray
        else (image[..., context.y0 : context.y1, context.x0 : context.x1])
    )
    window_layout = image_layout(window.shape, rgb=not layout.is_gray)
    result = yield from run(window, window_layout)
    if result is None:
        return None
    ys = slice((region.y0 - context.y0) * scale, (region.y1 - context.y0) * scale)
    xs = slice((region.x0 - context.x0) * scale, (region.x1 - context.x0) * scale)
    core = result.image[..., ys, xs, :] if not layout.is_gray else result.image[..., ys, xs]
    where = {"region": [region.y0, region.y1, region.x0, region.x1]}
    return UpscaleResult(np.ascontiguousarray(core), result.provenance | where)


def intensity_for(model: "LoadedModel | nn.Module", intensity: "Intensity | str | None") -> Intensity:
    """The value mapping :func:`upscale` uses: ``intensity``, else the one ``model`` was fine-tuned with
    (see :attr:`.models.LoadedModel.intensity`), else ``auto``."""
    if intensity is not None:
        return Intensity.parse(intensity)
    recorded = model.intensity if isinstance(model, LoadedModel) else None
    return AUTO if recorded is None else recorded


def _hint_bit_depth(values: np.ndarray) -> None:
    """Warn when an image mapped by its dtype's full range seems to hold data of fewer bits."""
    hint = bit_depth_hint(values, f"this {values.dtype} image", "use intensity bits:{bits} (or percentile)")
    if hint is not None:
        log.warning(hint)


def tile_pad_for(
    model: "LoadedModel | nn.Module", tile_pad: "int | None", *, scale: "int | None" = None
) -> int:
    """The tile padding :func:`upscale` uses with ``model``: ``tile_pad``, or the model's own, rounded up to
    the model's input size multiple (what its results record as ``tile_pad``); ``scale`` as for
    :func:`upscale` (a bare module's)."""
    _, _, pad, multiple = _unpack_model(model, scale=scale, tile_pad=tile_pad)
    return _round_up(pad, multiple)


def size_multiple_of(model: "LoadedModel | nn.Module") -> int:
    """The multiple that ``model``'s input sides must be (1 for a bare module)."""
    return model.spec.size_multiple if isinstance(model, LoadedModel) else 1


def _model_record(model: "LoadedModel | nn.Module") -> dict[str, Any]:
    """How a result's provenance names its model: a LoadedModel's name and file, a bare module's class."""
    if isinstance(model, LoadedModel):
        return {"model": model.name, "model_source": model.source, "model_sha256": model.sha256}
    return {"model": type(model).__name__, "model_source": None, "model_sha256": None}


def _precision_name(half: "torch.dtype | None") -> str:
    return str(half or torch.float32).removeprefix("torch.")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def upscale_array(
    image: np.ndarray,
    model: "LoadedModel | nn.Module",
    *,
    on_event: "Callable[[TileEvent], None] | None" = None,
    **options: Any,
) -> "np.ndarray | None":
    """Run :func:`upscale` to its end and return the upscaled image alone (None if ``options["stop"]`` was
    set).

    Parameters
    ----------
    image, model
        As for :func:`upscale`.
    on_event : callable, optional
        Called with each :class:`TileEvent`.
    **options
        Keyword arguments of :func:`upscale` (``tile``, ``tile_pad``, ``device``, ``half``, ``intensity``,
        ``stop``, ``rgb``, ``scale``).
    """
    result = drive(upscale(image, model, **options), on_event)
    return None if result is None else result.image


def _unpack_model(
    model: "LoadedModel | nn.Module", *, scale: "int | None", tile_pad: "int | None"
) -> tuple[nn.Module, int, int, int]:
    """The module, its scale, the tile padding and the multiple its input sizes must be."""
    if isinstance(model, LoadedModel):
        spec = model.spec
        if spec.in_channels != 3 or spec.out_channels != 3:
            raise InputError(
                f"model {model.name} maps {spec.in_channels} to {spec.out_channels} channels; "
                "only RGB models (3 to 3) can upscale images"
            )
        if scale is not None and scale != spec.scale:
            raise InputError(f"scale={scale} was given but model {model.name} upscales x{spec.scale}")
        pad = spec.tile_pad if tile_pad is None else tile_pad
        return model.module, spec.scale, pad, spec.size_multiple
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a LoadedModel or a torch nn.Module, not {type(model).__name__}")
    if not _is_int(scale) or scale < 1:
        raise InputError(
            f"a bare nn.Module needs its upscaling factor: pass scale= (a whole number), not {scale!r}"
        )
    return model, int(scale), DEFAULT_TILE_PAD if tile_pad is None else tile_pad, 1


class _Network:
    """A job's view of its module on its device, with 16-bit autocast (``half``) and its fallback to fp32."""

    def __init__(
        self,
        module: nn.Module,
        device: torch.device,
        *,
        scale: int,
        half: "torch.dtype | None",
        reuse: bool,
    ) -> None:
        self.device = device
        self.scale = scale
        self.half = half
        self.memory_format = memory_format(device)
        self.module = prepared(module, device) if reuse else copied(module, device)

    @property
    def precision(self) -> str:
        """The precision tiles are computed in now: ``float32``, ``float16`` or ``bfloat16``."""
        return _precision_name(self.half)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """``(1, 3, h, w)`` in [0, 1] -> ``(1, 3, h * scale, w * scale)`` float32 on the device."""
        module = self.module
        x = batch.to(self.device).contiguous(memory_format=self.memory_format)
        with torch.inference_mode():
            if self.half is not None:
                with torch.autocast(self.device.type, dtype=self.half):
                    y = module(x)
                if not bool(torch.isfinite(y).all()):
                    log.warning("half precision gave NaN/Inf values; continuing in float32")
                    self.half = None
            if self.half is None:
                y = module(x)
        expected = (1, 3, x.shape[2] * self.scale, x.shape[3] * self.scale)
        if tuple(y.shape) != expected:
            raise MicrodiskSRError(
                f"the model turned a {tuple(x.shape)} input into {tuple(y.shape)}, not {expected}: "
                f"it is not an RGB x{self.scale} model"
            )
        return y.float()


def _upscale_job(
    image: np.ndarray,
    layout: ImageLayout,
    module: nn.Module,
    *,
    device: torch.device,
    scale: int,
    half: "torch.dtype | None",
    reuse: bool,
    norms: "tuple[Normalization, Normalization | None]",
    tile: int,
    pad: int,
    multiple: int,
    stop: "StopFlag | None",
    made_with: dict[str, Any],
    intensity: Intensity,
) -> Generator[TileEvent, None, "UpscaleResult | None"]:
    """The work of :func:`upscale`, plane by plane, restarting a plane with smaller tiles on out-of-memory.

    ``made_with`` names the model in the result's provenance, to which the job adds the settings it used.
    """
    network = _Network(module, device, scale=scale, half=half, reuse=reuse)
    color_norm, alpha_norm = norms
    out = np.empty(layout.output_shape(network.scale), dtype=image.dtype)
    height, width, planes = layout.height, layout.width, layout.planes
    done = 0
    for plane, index in enumerate(layout.plane_indices()):
        while True:
            boxes = [
                (ys, xs)
                for ys in _spans(height, tile, pad, multiple)
                for xs in _spans(width, tile, pad, multiple)
            ]
            total = done + len(boxes) * (planes - plane)
            out_of_memory = False
            try:
                for k, (ys, xs) in enumerate(boxes, 1):
                    if stop is not None and stop.is_set():
                        return None
                    _fill_tile(
                        image[index], out[index], ys, xs, network, pad, multiple, color_norm, alpha_norm
                    )
                    yield TileEvent(done + k, total, plane, planes, tile, network.precision)
            except torch.OutOfMemoryError:
                out_of_memory = True  # handled below, once the failed tile's tensors are released
            if not out_of_memory:
                done += len(boxes)
                break
            tile = _smaller_tile(tile, (height, width), pad, multiple, network.device)
    if stop is not None and stop.is_set():
        return None
    provenance = made_with | {
        "scale": network.scale,
        "tile": tile,
        "tile_pad": pad,
        "device": describe_device(network.device),
        "half": network.half is not None,
        "precision": network.precision,
        "intensity": str(intensity),
        "value_range": [color_norm.low, color_norm.high],
    }
    return UpscaleResult(out, provenance)


def _spans(size: int, tile: int, pad: int, multiple: int) -> list[tuple[int, int]]:
    """Split ``range(size)`` into the fewest ``(start, stop)`` tile cores whose padded inputs fit the bound.

    Every input (the core grown by ``pad`` on each side, clipped to the plane) is at most ``tile + 2 * pad``
    long, and all inputs are about equally long: the span between the outer pads is cut into near-equal
    parts and the first and last parts reach out to the borders. ``tile == 0`` gives one span. Inner edges
    fall on multiples of ``multiple`` (which ``pad`` is a multiple of), so that every tile starts where a
    pixel-unshuffle of the whole image would start a block.
    """
    units = -(-size // multiple)
    if tile == 0:
        return [(0, size)]
    per_tile, pad_units = max(1, tile // multiple), pad // multiple
    inner = units - 2 * pad_units
    count = max(1, -(-inner // per_tile))
    edges = [0, *(pad_units + i * inner // count for i in range(1, count)), units]
    return [(a * multiple, min(b * multiple, size)) for a, b in itertools.pairwise(edges)]


def _largest_input(sizes: tuple[int, int], tile: int, pad: int, multiple: int) -> int:
    """The longest side of a network input (a padded tile) in the layout of ``tile``."""
    return max(
        min(stop + pad, size) - max(start - pad, 0)
        for size in sizes
        for start, stop in _spans(size, tile, pad, multiple)
    )


def _smaller_tile(tile: int, sizes: tuple[int, int], pad: int, multiple: int, device: torch.device) -> int:
    """Release cached GPU memory and return the largest tile under ``tile`` (halving it, down to
    :data:`MIN_TILE`) whose layout has smaller network inputs; raise if there is none."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    largest = _largest_input(sizes, tile, pad, multiple)
    smaller = min(tile, max(sizes)) if tile else max(sizes)
    while smaller > MIN_TILE:
        smaller = max(MIN_TILE, smaller // 2)
        inputs = _largest_input(sizes, smaller, pad, multiple)
        if inputs < largest:
            log.warning(
                "out of memory with %d-pixel network inputs on %s; restarting the plane with %d-pixel tiles "
                "(inputs of %d pixels)",
                largest,
                device,
                smaller,
                inputs,
            )
            return smaller
    raise MicrodiskSRError(
        f"out of memory on {describe_device(device)} even with {MIN_TILE}-pixel tiles (network inputs of "
        f"{largest} pixels with the padding); free memory (close other GPU programs), use half precision, "
        "a smaller tile padding, or run on the CPU"
    )


def _fill_tile(
    plane: np.ndarray,
    target: np.ndarray,
    ys: tuple[int, int],
    xs: tuple[int, int],
    network: _Network,
    pad: int,
    multiple: int,
    color_norm: Normalization,
    alpha_norm: "Normalization | None",
) -> None:
    """Upscale the tile ``plane[y0:y1, x0:x1]`` with ``pad`` pixels of context and write its output core.

    A region that ends at the bottom or right border of a plane whose size is not a multiple of
    ``multiple`` is extended by reflection to the next multiple, as the whole plane would be.

    Parameters
    ----------
    plane : (H, W) or (H, W, C) ndarray
        The input plane.
    target : (H * s, W * s) or (H * s, W * s, C) ndarray
        The output plane, written only inside the tile's upscaled box.
    """
    s = network.scale
    (y0, y1), (x0, x1) = ys, xs
    py0, px0, py1, px1 = _padded(ys, xs, pad, plane.shape[:2])
    color = plane[py0:py1, px0:px1, :3] if plane.ndim == 3 else plane[py0:py1, px0:px1]
    extend = ((0, -(py1 - py0) % multiple), (0, -(px1 - px0) % multiple))
    if extend != ((0, 0), (0, 0)):
        color = np.pad(color, extend + ((0, 0),) * (color.ndim - 2), mode="reflect")
    sr = network(to_model_input(color, color_norm, network.device))
    core = sr[:, :, (y0 - py0) * s : (y1 - py0) * s, (x0 - px0) * s : (x1 - px0) * s]
    upscaled = from_model_output(core, color_norm, gray=plane.ndim == 2)
    box = (slice(y0 * s, y1 * s), slice(x0 * s, x1 * s))
    if alpha_norm is None:
        target[box] = upscaled
        return
    target[(*box, slice(0, 3))] = upscaled
    ay0, ax0, ay1, ax1 = _padded(ys, xs, _ALPHA_PAD, plane.shape[:2])
    alpha = resize_alpha(plane[ay0:ay1, ax0:ax1, 3], s, alpha_norm)
    target[(*box, 3)] = alpha[(y0 - ay0) * s : (y1 - ay0) * s, (x0 - ax0) * s : (x1 - ax0) * s]


def _padded(
    ys: tuple[int, int], xs: tuple[int, int], pad: int, shape: tuple[int, int]
) -> tuple[int, int, int, int]:
    """``(y0, x0, y1, x1)`` of the tile grown by ``pad`` on each side, clipped to the plane."""
    return max(ys[0] - pad, 0), max(xs[0] - pad, 0), min(ys[1] + pad, shape[0]), min(xs[1] + pad, shape[1])
