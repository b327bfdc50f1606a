"""Images larger than memory: x4 results written to OME-Zarr block by block, with their pyramid.

A whole-slide mosaic of 30,000 x 30,000 pixels upscales to 120,000 x 120,000 (14 GB at 8 bits): no result
is ever held whole. The input is opened lazily (:func:`.lazy.open_lazy`), its value mapping is computed
once for the whole image (:func:`.lazy.lazy_normalizations`), and the output
store is filled one block at a time (:func:`upscale_block`): the block is read with the model's tile
padding as context and upscaled with :func:`~.infer.upscale`'s ``region``, so every block equals the same
window of the whole image's result (the tiling is seamless), and its x4 result fills whole chunks of level
0. The pyramid levels are then made by 2x2 averaging, block by block (:func:`downsample_block`). Memory is
bounded by the block, not by the image.

The job (:func:`upscale_to_ome_zarr`) writes into a hidden temporary folder beside the target and renames
it into place when complete, under the first free name (``-1``, ``-2``, ...): an interrupted run leaves no
half output under the final name. Its provenance goes into the store's attributes (``microdisk_sr``), which
a rerun compares (:func:`~.batch.done_output`). Each finished block is marked in the temporary folder, so a
rerun of a killed job resumes it where it stopped (:mod:`.unfinished`).

The block functions take plain, picklable arguments (a :class:`~.lazy.LazyImage` of a Zarr store, a store
path, regions, a model, normalisations, an :class:`~.infer.UpscaleConfig`) and hold no state, so that the
same blocks can run as tasks elsewhere (reopen a TIFF input there by path).

zarr, ome-zarr and dask are imported when first needed (the ``zarr`` extra).
"""

import logging
import os
import shutil
import tempfile
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from . import infer, unfinished
from .batch import output_settings
from .device import resolve_device
from .errors import InputError, OutputError
from .images import Normalization
from .io import PixelSize, new_dir_mode, numbered_paths
from .layers import upscaled_geometry
from .lazy import PROVENANCE_KEY, LazyImage, lazy_normalizations, libraries
from .models import LoadedModel
from .progress import StopFlag, drive
from .regions import Region

__all__ = [
    "BLOCK",
    "BlockStep",
    "OmeZarrResult",
    "block_regions",
    "block_steps",
    "create_store",
    "downsample_block",
    "finish_store",
    "leave_unfinished",
    "level_shapes",
    "open_store",
    "pyramid_shapes",
    "store_index",
    "temporary_store",
    "upscale_block",
    "upscale_to_ome_zarr",
]

log = logging.getLogger(__name__)

BLOCK = 256
"""Side of a block in input pixels: its x4 result is one chunk of level 0 (1024 x 1024 pixels)."""
PYRAMID_SIDE = 1024
"""Levels are added (each half the size of the one before) until the last fits in this many pixels a side."""
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
_NGFF_UNITS = {
    "space": {
        "um": "micrometer", "µm": "micrometer", "micron": "micrometer", "microns": "micrometer",
        "nm": "nanometer", "mm": "millimeter", "cm": "centimeter", "m": "meter",
    },
    "time": {"s": "second", "sec": "second", "ms": "millisecond", "us": "microsecond", "µs": "microsecond",
             "min": "minute", "h": "hour"},
}  # fmt: skip
"""Short unit names, by axis type, and the OME-NGFF names they stand for."""


def pyramid_shapes(height: int, width: int, *, levels: "int | None" = None) -> list[tuple[int, int]]:
    """The (height, width) of each pyramid level: level 0, then halves (rounded up).

    ``levels`` fixes their number; by default levels are added until one fits :data:`PYRAMID_SIDE`.
    """
    shapes = [(height, width)]
    while (len(shapes) < levels) if levels is not None else max(shapes[-1]) > PYRAMID_SIDE:
        h, w = shapes[-1]
        shapes.append((-(-h // 2), -(-w // 2)))
    return shapes


def level_shapes(image: LazyImage, *, scale: int, levels: "int | None" = None) -> list[tuple[int, ...]]:
    """The shape of each level of the store of ``image`` upscaled ``scale`` times (see :func:`create_store`),
    along the store's axes."""
    axes = image.store_axes()
    sizes = dict(zip(image.axes, image.layout.output_shape(scale), strict=True))
    return [
        tuple(h if a == "y" else w if a == "x" else sizes[a] for a in axes)
        for h, w in pyramid_shapes(sizes["y"], sizes["x"], levels=levels)
    ]


def create_store(
    path: "str | os.PathLike[str]",
    image: LazyImage,
    *,
    scale: int,
    block: int = BLOCK,
    levels: "int | None" = None,
    name: "str | None" = None,
) -> list[tuple[int, ...]]:
    """Create the empty OME-Zarr image of ``image`` upscaled ``scale`` times, with its pyramid levels.

    Level 0 holds the input's dtype in chunks of ``block * scale`` pixels a side (one block's result) and
    one plane, along axes in OME-NGFF order (t, c, z, y, x); level ``k`` is level 0 halved ``k`` times, in
    chunks of the same size. ``multiscales`` gives each level's pixel size (the input's / ``scale``, times
    ``2**k``) and the translation that puts its pixel centres where the input's pixels are; the leading z
    and t axes keep the input's spacing and origin (:meth:`.lazy.LazyImage.geometry`) at every level. The
    axes' units are written where OME-NGFF names them (a space unit along z, y and x, a time unit along t).

    Returns
    -------
    list of tuple of int
        The shape of each level (:func:`level_shapes`).
    """
    zarr, _ = libraries()
    from ome_zarr.writer import write_multiscales_metadata

    axes = image.store_axes()
    size = image.pixel_size or PixelSize(1.0, 1.0)
    (_, _, sy, sx), (_, _, ty, tx) = upscaled_geometry(
        (1.0, 1.0, size.y, size.x), (0.0, 0.0, *image.origin), scale
    )
    lead = {a: (image.geometry(a).scale, image.geometry(a).translation) for a in axes if a not in "yx"}
    root = zarr.open_group(str(path), mode="w")
    shapes, datasets = level_shapes(image, scale=scale, levels=levels), []
    for level, shape in enumerate(shapes):
        chunks = tuple(block * scale if a in "yx" else 1 for a in axes)
        root.create_array(str(level), shape=shape, chunks=chunks, dtype=image.data.dtype, fill_value=0,
                          dimension_names=axes)  # fmt: skip
        factor = 2**level
        placed = lead | {
            "y": (sy * factor, ty + sy * (factor - 1) / 2),
            "x": (sx * factor, tx + sx * (factor - 1) / 2),
        }
        transforms = [
            {"type": "scale", "scale": [placed[a][0] for a in axes]},
            {"type": "translation", "translation": [placed[a][1] for a in axes]},
        ]
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    units = {a: _ngff_unit(a, size.unit if a in "yx" else image.geometry(a).unit) for a in axes}
    described = [{"name": a, "type": _AXIS_TYPES[a]} | ({"unit": units[a]} if units[a] else {}) for a in axes]
    write_multiscales_metadata(root, datasets, axes=described, name=name)
    return shapes


def _ngff_unit(axis: str, unit: str) -> "str | None":
    """The OME-NGFF name of ``unit`` along ``axis`` (``um`` along y: ``micrometer``), or None where the
    specification names no such unit for the axis's type (none for a channel axis)."""
    from ome_zarr.axes import KNOWN_SPATIAL_UNITS, KNOWN_TEMPORAL_UNITS

    kind = _AXIS_TYPES[axis]
    known = {"space": KNOWN_SPATIAL_UNITS, "time": KNOWN_TEMPORAL_UNITS}.get(kind, ())
    name = _NGFF_UNITS.get(kind, {}).get(unit, unit)
    return name if name in known else None


def store_index(image: LazyImage, plane: tuple[int, ...], ys: slice, xs: slice) -> tuple[Any, ...]:
    """Where a plane's window lies in the store's arrays (every channel of an RGB image)."""
    lead = dict(zip(image.axes, plane, strict=False))
    return tuple(lead[a] if a in lead else ys if a == "y" else xs if a == "x" else slice(None)
                 for a in image.store_axes())  # fmt: skip


def upscale_block(
    image: LazyImage,
    store: "str | os.PathLike[str]",
    plane: tuple[int, ...],
    block: Region,
    model: "LoadedModel | nn.Module",
    norms: "tuple[Normalization, Normalization | None]",
    *,
    config: infer.UpscaleConfig,
    scale: "int | None" = None,
) -> dict[str, Any]:
    """Upscale one block of one plane and write its result into level 0 of ``store``.

    The block is read with the model's tile padding of context (none beyond the image border) and mapped by
    ``norms``, the whole image's (see :func:`.lazy.lazy_normalizations`), so its result is the same window
    of the whole image's result. A rerun writes the same values.

    Parameters
    ----------
    image : .lazy.LazyImage
    store : path
        An OME-Zarr image made by :func:`create_store` for ``image``.
    plane : tuple of int
        The plane's index along the leading axes (empty for a single plane).
    block : Region
        The block in input pixels; its result should fill whole chunks (``block`` a multiple of the
        chunk's input size, or reaching the border).
    model, config, scale
        As for :func:`~.infer.upscale` (``scale`` for a bare module).

    Returns
    -------
    dict
        The provenance of the block's result (see :class:`~.infer.UpscaleResult`).
    """
    zarr, _ = libraries()
    pad = infer.tile_pad_for(model, config.tile_pad, scale=scale)
    layout = image.layout
    context = block.grown(pad, infer.size_multiple_of(model), layout.height, layout.width)
    inner = Region(block.y0 - context.y0, block.y1 - context.y0, block.x0 - context.x0, block.x1 - context.x0)
    job = infer.upscale(
        image.read(plane, context),
        model,
        **config.arguments(),
        rgb=not layout.is_gray,
        scale=scale,
        region=inner,
        normalization=norms,
    )
    result = drive(job)
    factor = result.provenance["scale"]
    ys, xs = slice(block.y0 * factor, block.y1 * factor), slice(block.x0 * factor, block.x1 * factor)
    values = result.image if layout.is_gray else np.moveaxis(result.image, -1, 0)  # channels before y, x
    zarr.open_array(os.path.join(store, "0"), mode="r+")[store_index(image, plane, ys, xs)] = values
    return {k: v for k, v in result.provenance.items() if k != "region"}


def downsample_block(
    store: "str | os.PathLike[str]", level: int, index: tuple[Any, ...], block: Region
) -> None:
    """Write ``block`` of pyramid ``level`` (>= 1) of one plane: the 2x2 means of ``level - 1``.

    ``index`` selects the plane in the store's leading axes (``slice(None)`` for the channels). Integers
    are rounded; an odd last row or column is averaged with itself.
    """
    zarr, _ = libraries()
    source = zarr.open_array(os.path.join(store, str(level - 1)), mode="r")
    height, width = source.shape[-2:]
    part = source[
        (
            *index,
            slice(2 * block.y0, min(2 * block.y1, height)),
            slice(2 * block.x0, min(2 * block.x1, width)),
        )
    ]
    odd = [(0, 0)] * (part.ndim - 2) + [(0, part.shape[-2] % 2), (0, part.shape[-1] % 2)]
    if any(after for _, after in odd):
        part = np.pad(part, odd, mode="edge")
    exact = (
        np.float32 if part.dtype.itemsize <= 2 or part.dtype == np.float32 else np.float64
    )  # 4 values' sum
    work = part.reshape(*part.shape[:-2], part.shape[-2] // 2, 2, part.shape[-1] // 2, 2).astype(exact)
    work = work.sum(axis=(-3, -1))
    work *= 0.25
    if part.dtype.kind in "iu":
        np.rint(work, out=work)
    target = zarr.open_array(os.path.join(store, str(level)), mode="r+")
    target[(*index, slice(block.y0, block.y1), slice(block.x0, block.x1))] = work.astype(part.dtype)


def block_regions(height: int, width: int, side: int) -> list[Region]:
    """The blocks of ``side`` pixels (smaller at the last row and column) that tile a plane, row by row."""
    return [
        Region(y, min(y + side, height), x, min(x + side, width))
        for y in range(0, height, side)
        for x in range(0, width, side)
    ]


@dataclass(frozen=True)
class BlockStep:
    """One block of a store's job: upscaled into level 0 (``level == 0``), or averaged into a pyramid level.

    Attributes
    ----------
    number : int
        The plane's number, in the order of ``layout.plane_indices()``.
    plane : tuple of int
        The plane's index along the leading axes.
    level : int
    region : Region
        In input pixels for level 0, in the level's pixels above it.
    row, column : int
        The block's place in its level's grid.
    """

    number: int
    plane: tuple[int, ...]
    level: int
    region: Region
    row: int
    column: int

    @property
    def name(self) -> str:
        """The block's name in its store (that of its marker, see :func:`.unfinished.mark_done`)."""
        return f"{self.level}-{self.number}-{self.row}-{self.column}"

    def sources(self) -> list[str]:
        """The names of the blocks of the level below that this pyramid block averages, where they exist."""
        return [
            f"{self.level - 1}-{self.number}-{2 * self.row + dy}-{2 * self.column + dx}"
            for dy in (0, 1)
            for dx in (0, 1)
        ]


def block_steps(
    image: LazyImage, shapes: list[tuple[int, ...]], *, block: int, scale: int
) -> list[BlockStep]:
    """Every block of the job that fills the store of ``image`` (levels of ``shapes``), in the order one
    process does them: plane by plane, the upscaled blocks, then each pyramid level's (each made from blocks
    before it)."""
    layout = image.layout
    chunk = block * scale
    grids = [(block_regions(layout.height, layout.width, block), block)]
    grids += [(block_regions(*shape[-2:], chunk), chunk) for shape in shapes[1:]]
    return [
        BlockStep(number, plane, level, region, region.y0 // side, region.x0 // side)
        for number, plane in enumerate(layout.plane_indices())
        for level, (regions, side) in enumerate(grids)
        for region in regions
    ]


@dataclass(frozen=True)
class OmeZarrResult:
    """What :func:`upscale_to_ome_zarr` returns: where the store went, its levels' shapes, its provenance,
    and how many blocks were kept from an interrupted run's store (0 when none was resumed)."""

    path: Path
    shapes: list[tuple[int, ...]]
    provenance: dict[str, Any]
    reused: int = 0


def upscale_to_ome_zarr(
    image: LazyImage,
    model: "LoadedModel | nn.Module",
    target: "str | os.PathLike[str]",
    *,
    config: "infer.UpscaleConfig | None" = None,
    scale: "int | None" = None,
    norms: "tuple[Normalization, Normalization | None] | None" = None,
    block: int = BLOCK,
    levels: "int | None" = None,
    record: "dict[str, Any] | None" = None,
    stop: "StopFlag | None" = None,
    resume: bool = True,
) -> Generator[infer.TileEvent, None, "OmeZarrResult | None"]:
    """Upscale ``image`` into the OME-Zarr image ``target``, block by block, as a job generator.

    Checks the settings and computes the value mapping when called; the generator yields a
    :class:`~.infer.TileEvent` after each block (``done``/``total`` count the upscaled blocks, then the
    pyramid's) and returns an :class:`OmeZarrResult`, or None when stopped. The store is written into a
    hidden temporary folder beside ``target`` and renamed to ``target`` (or its first free ``-1``, ``-2``,
    ... variant) when complete.

    When ``record`` identifies the input (``input_sha256`` or ``input_identity``) and ``model`` is a
    LoadedModel, the job can be resumed: each finished block is marked in the temporary folder, an
    unfinished job (killed, stopped or failed) leaves the folder, and a job with the same input, weights and
    settings (:func:`.unfinished.start_record`) takes it over and computes only the blocks not marked; its
    first event then counts the kept ones as done. Otherwise a stopped or failed job removes its folder.

    Parameters
    ----------
    image : .lazy.LazyImage
    model : LoadedModel or nn.Module
    target : path
        ``<stem>_x4.ome.zarr``; its folder must exist.
    config : UpscaleConfig, optional
        Tile, tile padding, device, half precision and bit depth (see :func:`~.infer.upscale`).
    scale : int, optional
        A bare module's upscaling factor.
    norms : (Normalization, Normalization or None), optional
        The whole image's value mappings, if already computed (see :func:`.lazy.lazy_normalizations`).
    block : int
        Block side in input pixels (see :data:`BLOCK`): it bounds memory with ``config.tile``.
    levels : int, optional
        Number of pyramid levels (see :func:`pyramid_shapes`).
    record : dict, optional
        More provenance (the input's path and identity), stored with the settings in the store's
        ``microdisk_sr`` attribute; the identity makes the job resumable.
    stop : StopFlag, optional
        Checked before each block.
    resume : bool
        Take over an interrupted store of the same job (see above); False deletes it and starts a new one
        (which later runs can resume), as ``--redo`` does.
    """
    config = config or infer.UpscaleConfig()
    if not isinstance(block, int) or block < 1:
        raise InputError(f"block must be a whole number of pixels >= 1, not {block!r}")
    target = Path(target)
    if not target.parent.is_dir():
        raise OutputError(f"output folder {target.parent} does not exist")
    infer.tile_pad_for(model, config.tile_pad, scale=scale)  # the model and its scale are usable
    norms = (
        lazy_normalizations(image, intensity=infer.intensity_for(model, config.intensity))
        if norms is None
        else norms
    )
    return _job(image, model, target, config, scale, norms, block, levels, record or {}, stop, resume)


def _job(
    image: LazyImage,
    model: "LoadedModel | nn.Module",
    target: Path,
    config: infer.UpscaleConfig,
    scale: "int | None",
    norms: "tuple[Normalization, Normalization | None]",
    block: int,
    levels: "int | None",
    record: dict[str, Any],
    stop: "StopFlag | None",
    resume: bool,
) -> Generator[infer.TileEvent, None, "OmeZarrResult | None"]:
    factor = model.spec.scale if isinstance(model, LoadedModel) else int(scale)
    shapes = level_shapes(image, scale=factor, levels=levels)
    known = isinstance(model, LoadedModel)  # a bare module's weights are not identified
    settings = output_settings(model, config, resolve_device(config.device)) if known else {}
    start = unfinished.start_record(settings, record, norms, block=block, levels=len(shapes))
    claim = open_store(target, image, scale=factor, block=block, levels=levels, start=start, resume=resume)
    store, published = str(claim.path), False
    try:
        steps = block_steps(image, shapes, block=block, scale=factor)
        finished = unfinished.done_blocks(store)
        todo = [step for step in steps if step.name not in finished]
        total, done, planes = len(steps), len(steps) - len(todo), image.layout.planes
        upscaled = [step.name for step in steps if step.level == 0]
        kept = [name for name in upscaled if name in finished]
        precision = unfinished.read_mark(store, kept[-1])["precision"] if kept else None
        if done:
            plane = todo[0].number if todo else planes - 1
            yield infer.TileEvent(done, total, plane, planes, config.tile, precision)
        for step in todo:
            if stop is not None and stop.is_set():
                return None
            if step.level == 0:
                made_with = upscale_block(
                    image, store, step.plane, step.region, model, norms, config=config, scale=scale
                )
                precision = made_with["precision"]
            else:
                index = store_index(image, step.plane, slice(None), slice(None))[:-2]
                downsample_block(store, step.level, index, step.region)
                made_with = None
            unfinished.mark_done(store, step.name, made_with)
            done += 1
            yield infer.TileEvent(done, total, step.number, planes, config.tile, precision)
        made_with = unfinished.read_mark(store, upscaled[-1])
        provenance = made_with | {"block": block, "levels": len(shapes)} | record
        path = finish_store(claim.path, target, provenance)
        published = True
    finally:
        if not published:
            leave_unfinished(claim)
        claim.release()
    return OmeZarrResult(path, shapes, provenance, len(steps) - len(todo))


def open_store(
    target: Path,
    image: LazyImage,
    *,
    scale: int,
    block: int,
    levels: "int | None",
    start: "dict[str, Any] | None",
    resume: bool = True,
) -> unfinished.Claim:
    """The temporary store a job for ``target`` writes: an interrupted one of the same ``start`` record to
    resume (see :func:`.unfinished.claim_leftover`), else a new one, created and, when ``start`` is given,
    locked and recording it. Without ``resume`` the interrupted one is deleted and a new one made."""
    claim = None if start is None else unfinished.claim_leftover(target, start)
    if claim is not None and resume:
        return claim
    if claim is not None:
        shutil.rmtree(claim.path, ignore_errors=True)
        claim.release()
    tmp = temporary_store(target)
    try:
        create_store(str(tmp), image, scale=scale, block=block, levels=levels, name=target.name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if start is None:
        return unfinished.Claim(tmp, None)
    claim = unfinished.hold(tmp)
    if claim.lock is not None:
        zarr, _ = libraries()
        zarr.open_group(str(tmp), mode="r+").attrs[unfinished.START_KEY] = start
    return claim


def leave_unfinished(claim: unfinished.Claim) -> None:
    """After an unfinished job: keep a store a rerun can resume (it was locked), remove any other."""
    if claim.lock is None:
        shutil.rmtree(claim.path, ignore_errors=True)
    else:
        log.warning("the finished blocks stay in %s: the same command resumes them", claim.path)


def temporary_store(target: Path) -> Path:
    """A new hidden folder beside ``target`` to write its store into (see :func:`finish_store`)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, new_dir_mode())  # mkdtemp's 0o700 would hide results from colleagues
    return tmp


def finish_store(tmp: Path, target: Path, provenance: dict[str, Any]) -> Path:
    """Record ``provenance`` in the complete store ``tmp``, rename it to ``target`` or its first free
    numbered variant, and return that name; its markers and start record (see :mod:`.unfinished`) go once
    it is in place, so that a store cut off before is still resumed (with nothing left to compute)."""
    zarr, _ = libraries()
    zarr.open_group(str(tmp), mode="r+").attrs[PROVENANCE_KEY] = unfinished.json_ready(provenance)
    path = _publish(tmp, target)
    unfinished.clear_progress(path)
    return path


def _publish(tmp: Path, target: Path) -> Path:
    """Rename the finished store ``tmp`` to ``target`` or its first free numbered variant; return its name.

    Creating the empty folder claims the name (``mkdir`` fails on an existing one), then the store is
    renamed over it, so two processes never take the same name and nothing is ever overwritten.
    """
    for candidate in numbered_paths(target):
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        try:
            os.replace(tmp, candidate)
        except OSError as exc:
            candidate.rmdir()
            raise OutputError(f"cannot put the finished store {tmp} in place as {candidate}: {exc}") from exc
        return candidate
    raise OutputError(f"too many existing outputs named like {target}; clean the folder")
