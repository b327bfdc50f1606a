"""Images opened without being read: OME-Zarr (level 0, or every level), Zarr arrays and TIFFs as dask arrays.

A 30,000 x 30,000 mosaic is opened at once: :func:`open_lazy` gives a :class:`LazyImage` whose dask array
reads only the chunks a slice touches (an OME-NGFF image's level 0, a plain Zarr array, a TIFF by tile or
strip, or memory-mapped when it is stored uncompressed in one piece), with its axes put in the layout that
:mod:`.images` expects and its pixel size. :func:`lazy_normalizations` computes the whole image's value
mapping chunk by chunk, and only where it depends on the values. :func:`open_pyramid` opens every level of
an OME-Zarr image for a multiscale display. An OME-NGFF image's z and t spacing and origin (an ImageJ
hyperstack's spacing) come with it (:class:`AxisGeometry`), so that its x4 result and its layer lie where it
does along every axis.

A :class:`LazyImage` of a Zarr store pickles (its dask array reads the store by path); one of a TIFF holds
an open file: reopen it by path where it is needed. zarr, ome-zarr and dask (the ``zarr`` extra) are
imported when first needed.
"""

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .images import ImageLayout, Normalization, image_layout, maps_by_own_range, value_range
from .intensity import AUTO, RANGE, Intensity, lerp, percentiles_from_counts, value_counts
from .io import PixelSize, imagej_unit, read_tiff_pixel_size
from .regions import Region

__all__ = [
    "PROVENANCE_KEY",
    "AxisGeometry",
    "LazyImage",
    "Pyramid",
    "is_store",
    "lazy_image",
    "lazy_normalizations",
    "libraries",
    "open_lazy",
    "open_pyramid",
    "read_store_provenance",
    "store_identity",
]

PROVENANCE_KEY = "microdisk_sr"
"""The store attribute that holds what an output of ours was made from and with."""
AXIS_ORDER = {"t": 0, "c": 1, "z": 2, "y": 3, "x": 4}
"""OME-NGFF's order of axes."""
_TIFF_AXES = {"T": "t", "Z": "z", "C": "c", "S": "c", "Y": "y", "X": "x"}
_SHORT_UNITS = {"micrometer": "um", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm", "meter": "m"}
_MEMMAP_CHUNK = 1024
"""Chunk side of a memory-mapped TIFF's dask array."""


def libraries() -> tuple[Any, Any]:
    """zarr and dask.array, or an error that says how to install them."""
    try:
        import dask.array as da
        import zarr
    except ImportError as exc:
        raise InputError(
            f"OME-Zarr needs zarr, ome-zarr and dask ({exc.name} is missing): "
            "pip install 'napari-microdisk-sr[zarr]'"
        ) from exc
    return zarr, da


def is_store(path: "str | os.PathLike[str]") -> bool:
    """Whether ``path`` names a Zarr store (a folder ending in ``.zarr`` or ``.ome.zarr``): an image."""
    path = Path(path)
    return path.name.lower().endswith(".zarr") and path.is_dir()


@dataclass(frozen=True)
class AxisGeometry:
    """Where the planes along a leading axis (z or t) lie: plane ``i`` at ``translation + i * scale``.

    Attributes
    ----------
    scale, translation : float
        In ``unit``.
    unit : str
        As the input names it: OME-NGFF's names (``micrometer``, ``second``), or ImageJ's (``micron``,
        ``sec``); empty when unknown.
    """

    scale: float = 1.0
    translation: float = 0.0
    unit: str = ""


@dataclass(frozen=True, eq=False)
class LazyImage:
    """An image read only where it is sliced: a dask array laid out as :func:`.images.image_layout` says.

    Attributes
    ----------
    data : dask.array.Array
        ``(..., H, W)`` or ``(..., H, W, C)`` (RGB(A) last), any chunks.
    layout : ImageLayout
    axes : tuple of str
        OME-NGFF names of ``data``'s axes (``t``, ``c``, ``z``, ``y``, ``x``), e.g. ``("z", "y", "x")`` or
        ``("y", "x", "c")`` for RGB.
    pixel_size : PixelSize or None
    origin : (float, float)
        Where pixel (0, 0)'s centre lies along y and x, in the pixel size's unit.
    path : Path or None
        The file or store it was opened from.
    lead_geometry : dict of str to AxisGeometry
        The spacing and origin of the leading ``z`` and ``t`` axes that have one (see :meth:`geometry`).
    """

    data: Any
    layout: ImageLayout
    axes: tuple[str, ...]
    pixel_size: "PixelSize | None" = None
    origin: tuple[float, float] = (0.0, 0.0)
    path: "Path | None" = None
    lead_geometry: Mapping[str, AxisGeometry] = field(default_factory=dict)

    def read(self, plane: tuple[int, ...], region: Region) -> np.ndarray:
        """``region`` of one plane as a numpy array (only the chunks it touches are read)."""
        window = self.data[(*plane, slice(region.y0, region.y1), slice(region.x0, region.x1))]
        return np.asarray(window.compute(scheduler="synchronous"))

    def geometry(self, axis: str) -> AxisGeometry:
        """The spacing, origin and unit of ``axis`` among the leading ones: scale 1, translation 0 and no
        unit unless the input gives them (a channel axis never has any)."""
        return self.lead_geometry.get(axis, AxisGeometry())

    def store_axes(self) -> tuple[str, ...]:
        """The axes of an OME-NGFF array of this image: in the order t, c, z, y, x."""
        return tuple(sorted(self.axes, key=AXIS_ORDER.__getitem__))


def lazy_image(
    array: Any,
    *,
    rgb: "bool | None" = None,
    axes: "tuple[str, ...] | None" = None,
    pixel_size: "PixelSize | None" = None,
    origin: tuple[float, float] = (0.0, 0.0),
    path: "Path | None" = None,
    lead_geometry: "Mapping[str, AxisGeometry] | None" = None,
) -> LazyImage:
    """A :class:`LazyImage` of an array in :func:`.images.image_layout` order (numpy, dask or Zarr).

    ``axes`` names its axes; by default ``y``, ``x`` (and ``c`` last for RGB), after ``z`` and ``t`` for
    the leading axes of a stack. ``lead_geometry`` gives the spacing and origin of leading ``z`` and ``t``
    axes (by name; those not given have scale 1 and translation 0).
    """
    _, da = libraries()
    data = array if isinstance(array, da.Array) else da.from_array(array, name=False)
    if data.dtype.kind not in "uif":
        raise InputError(f"image dtype {data.dtype} is not supported; use an integer or float image")
    layout = image_layout(data.shape, rgb=rgb)
    if axes is None:
        axes = (*("t", "z")[2 - len(layout.leading) :], "y", "x", *(() if layout.is_gray else ("c",)))
    geometry = dict(lead_geometry or {})
    leading = set(axes[: len(layout.leading)]) & {"t", "z"}
    if not set(geometry) <= leading:
        raise InputError(
            f"spacing given for axes {sorted(set(geometry) - leading)}, which are not the image's leading "
            f"z or t axes ({sorted(leading) or 'none'})"
        )
    path = None if path is None else Path(path)
    return LazyImage(data, layout, tuple(axes), pixel_size, origin, path, geometry)


def open_lazy(path: "str | os.PathLike[str]", *, rgb: "bool | None" = None) -> LazyImage:
    """Open an image without reading it: an OME-Zarr image (level 0), a Zarr array, or a TIFF.

    A TIFF stored uncompressed in one piece is memory-mapped; others are read by tile or strip through
    tifffile's Zarr interface. A channel axis of 3 or 4 becomes RGB(A); one of 1 is dropped; others are
    planes of a stack.

    Raises
    ------
    InputError
        For a path that is neither, a Zarr group without OME-NGFF ``multiscales``, or an unsupported shape.
    """
    path = Path(path)
    if is_store(path):
        return _open_store(path, rgb)
    if path.suffix.lower() in (".tif", ".tiff") and path.is_file():
        return _open_tiff(path, rgb)
    raise InputError(f"{path} is not a Zarr store (.zarr, .ome.zarr) or a TIFF file; give one of those")


def _open_store(path: Path, rgb: "bool | None", level: int = 0) -> LazyImage:
    zarr, da = libraries()
    from ome_zarr.writer import get_metadata

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise InputError(f"cannot open {path} as a Zarr store: {exc}") from exc
    if isinstance(node, zarr.Array):
        return lazy_image(da.from_zarr(node), rgb=rgb, path=path)
    multiscales = get_metadata(node).get("multiscales")
    if not multiscales:
        raise InputError(
            f"{path} is a Zarr group without OME-NGFF multiscales metadata: give the path of its image array "
            "(e.g. its 0 folder) or an OME-Zarr image"
        )
    image = multiscales[0]
    dataset = image["datasets"][level]
    data = da.from_zarr(node[dataset["path"]])
    axes = [axis if isinstance(axis, str) else axis["name"] for axis in image.get("axes", ())]
    if len(axes) != data.ndim:
        axes = list(lazy_image(data, rgb=False).axes)
    units = {axis["name"]: axis.get("unit") for axis in image.get("axes", ()) if isinstance(axis, dict)}
    scale, shift = _placement(
        [*dataset.get("coordinateTransformations", ()), *image.get("coordinateTransformations", ())],
        data.ndim,
    )
    y, x = axes.index("y"), axes.index("x")
    unit = units.get("x") or ""
    pixel_size = PixelSize(scale[y], scale[x], _SHORT_UNITS.get(unit, unit))
    lead_geometry = {
        a: AxisGeometry(scale[i], shift[i], units.get(a) or "") for i, a in enumerate(axes) if a in ("t", "z")
    }
    return _arranged(
        data,
        axes,
        rgb,
        pixel_size=pixel_size,
        origin=(shift[y], shift[x]),
        path=path,
        lead_geometry=lead_geometry,
    )


def _placement(transforms: "list[dict[str, Any]]", ndim: int) -> tuple[list[float], list[float]]:
    """The scale and translation along each axis of OME-NGFF ``transforms``, composed in the order they
    apply (a dataset's, then its multiscales'): a scale multiplies the translation before it."""
    scale, shift = [1.0] * ndim, [0.0] * ndim
    for transform in transforms:
        if transform.get("type") == "scale":
            factors = [float(f) for f in transform["scale"]]
            scale = [a * f for a, f in zip(scale, factors, strict=True)]
            shift = [a * f for a, f in zip(shift, factors, strict=True)]
        elif transform.get("type") == "translation":
            shift = [a + float(b) for a, b in zip(shift, transform["translation"], strict=True)]
    return scale, shift


def _open_tiff(path: Path, rgb: "bool | None") -> LazyImage:
    zarr, da = libraries()
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            letters, contiguous = series.axes, series.dataoffset is not None and not series.is_multifile
            imagej = tif.imagej_metadata or {}
        if contiguous:
            data = da.from_array(
                tifffile.memmap(path, mode="r"),
                chunks=(*(-1,) * (len(letters) - 2), _MEMMAP_CHUNK, _MEMMAP_CHUNK),
                name=False,
            )
        else:
            data = da.from_zarr(zarr.open(tifffile.imread(path, aszarr=True), mode="r"))
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise InputError(f"cannot read TIFF {path}: {exc}") from exc
    names = [_TIFF_AXES.get(letter) for letter in letters]
    spare = iter(name for name in ("t", "z") if name not in names)
    try:
        axes = [name or next(spare) for name in names]
    except StopIteration:
        raise InputError(
            f"TIFF {path} has axes {letters}: at most T, Z, Y, X and channels are supported"
        ) from None
    pixel_size, lead_geometry = read_tiff_pixel_size(path), _imagej_geometry(imagej, letters)
    return _arranged(data, axes, rgb, pixel_size=pixel_size, path=path, lead_geometry=lead_geometry)


def _imagej_geometry(imagej: "dict[str, Any]", letters: str) -> dict[str, AxisGeometry]:
    """The z spacing (in its ``zunit``, else its ``unit``) and frame interval an ImageJ hyperstack records
    (its z origin is not read)."""
    geometry = {}
    if "Z" in letters and imagej.get("spacing"):
        unit = imagej_unit(imagej.get("zunit") or imagej.get("unit"))
        geometry["z"] = AxisGeometry(float(imagej["spacing"]), 0.0, unit)
    if "T" in letters and imagej.get("finterval"):
        geometry["t"] = AxisGeometry(
            float(imagej["finterval"]), 0.0, imagej_unit(imagej.get("tunit")) or "sec"
        )
    return geometry


def _arranged(
    data: Any,
    axes: "list[str]",
    rgb: "bool | None",
    *,
    pixel_size: "PixelSize | None",
    origin: tuple[float, float] = (0.0, 0.0),
    path: Path,
    lead_geometry: "Mapping[str, AxisGeometry] | None" = None,
) -> LazyImage:
    """``data`` with OME-NGFF ``axes`` put in layout order: t, c (not RGB), z, y, x, then RGB(A) channels."""
    if "c" in axes and data.shape[axes.index("c")] == 1:
        data = data[tuple(0 if name == "c" else slice(None) for name in axes)]
        axes = [name for name in axes if name != "c"]
    if len(set(axes)) != len(axes) or not {"y", "x"} <= set(axes) or not set(axes) <= set(AXIS_ORDER):
        raise InputError(f"{path} has axes {axes}: an image needs y and x, and at most t, c and z besides")
    channels = data.shape[axes.index("c")] if "c" in axes else 0
    is_rgb = channels in (3, 4) if rgb is None else rgb
    if is_rgb and channels not in (3, 4):
        raise InputError(f"{path} has {channels or 'no'} channels, not RGB(A): open it with rgb=False")
    order = sorted(axes, key=lambda name: (is_rgb and name == "c", AXIS_ORDER[name]))
    data = data.transpose([axes.index(name) for name in order])
    return lazy_image(
        data,
        rgb=is_rgb,
        axes=tuple(order),
        pixel_size=pixel_size,
        origin=origin,
        path=path,
        lead_geometry=lead_geometry,
    )


def lazy_normalizations(
    image: LazyImage, *, intensity: "Intensity | str | None" = None
) -> tuple[Normalization, "Normalization | None"]:
    """The colour and alpha normalisations of the whole image, equal to what
    :func:`.images.normalizations_for` gives for it in memory, reading the data chunk by chunk (with dask)
    and only where the mapping depends on it.

    ``intensity`` is the value mapping (see :class:`Intensity`; None: ``auto``). Its percentiles are
    exact order statistics: integers of up to 16 bits are counted in a histogram; other values in a
    histogram of :data:`_BINS` bins between their minimum and maximum, after which only the values of the
    bins that hold the wanted ranks are read again and sorted.

    Raises
    ------
    InputError
        For NaN or infinite values, or values beyond a bit depth.
    """
    mapping = AUTO if intensity is None else Intensity.parse(intensity)
    data = image.data
    color = data[..., :3] if image.layout.has_alpha else data
    alpha = data[..., 3] if image.layout.has_alpha else None
    mode = mapping.for_dtype(color.dtype)
    if mode.mode == "percentile":
        low, high = _lazy_percentiles(color, mode.percentiles)
        colour = Normalization(color.dtype, low, high, clip=False)
    else:
        colour = Normalization(color.dtype, *value_range(_extremes(color, mode), intensity=mode))
    return (
        colour,
        None
        if alpha is None
        else Normalization(alpha.dtype, *value_range(_extremes(alpha, RANGE), intensity=RANGE)),
    )


def _extremes(values: Any, mode: Intensity) -> np.ndarray:
    """The values' minimum and maximum (what :func:`.images.value_range` reads in ``range`` and ``bits``
    modes), computed only if it reads them."""
    _, da = libraries()
    if mode.mode == "range" and not maps_by_own_range(values.dtype):
        return np.zeros(1, values.dtype)  # mapped by the dtype's range: the values are not read
    if values.dtype.kind != "f":
        return np.array(da.compute(values.min(), values.max()), dtype=values.dtype)
    low, high, finite = da.compute(values.min(), values.max(), da.isfinite(values).all())
    if not finite:
        raise InputError("image has NaN/Inf values; replace them (e.g. np.nan_to_num) before upscaling")
    return np.array([low, high], dtype=values.dtype)


_BINS = 2**16
"""Bins of the first pass over values that are not small integers (see :func:`lazy_normalizations`)."""


def _lazy_percentiles(values: Any, percentiles: tuple[float, float]) -> tuple[float, float]:
    """:func:`.intensity.percentile_range` of a dask array, block by block."""
    import dask

    if values.dtype.kind in "iu" and values.dtype.itemsize <= 2:
        counts = sum(dask.compute(*[dask.delayed(value_counts)(block) for block in values.blocks.ravel()]))
        low, high = percentiles_from_counts(counts, int(np.iinfo(values.dtype).min), percentiles)
    else:
        minimum, maximum = (float(v) for v in _extremes(values, RANGE))
        low, high = _order_statistics(values, minimum, maximum, percentiles)
    if high <= low:  # almost constant: its minimum and maximum, as in memory
        _, da = libraries()
        return tuple(float(v) for v in da.compute(values.min(), values.max()))
    return low, high


def _bin_of(block: np.ndarray, minimum: float, maximum: float) -> np.ndarray:
    span = maximum - minimum
    if span <= 0:
        return np.zeros(block.shape, np.int64)
    index = ((block.astype(np.float64) - minimum) * (_BINS / span)).astype(np.int64)
    return np.clip(index, 0, _BINS - 1)


def _bin_counts(block: np.ndarray, minimum: float, maximum: float) -> np.ndarray:
    return np.bincount(_bin_of(block, minimum, maximum).ravel(), minlength=_BINS)


def _values_in(block: np.ndarray, minimum: float, maximum: float, bins: tuple[int, ...]) -> np.ndarray:
    return block[np.isin(_bin_of(block, minimum, maximum), bins)].astype(np.float64)


def _order_statistics(
    values: Any, minimum: float, maximum: float, percentiles: tuple[float, float]
) -> tuple[float, float]:
    """np.percentile's linear interpolation, from the order statistics it needs: their bins are found in a
    histogram, then only those bins' values are read again and sorted."""
    import dask

    blocks = values.blocks.ravel()
    counts = sum(dask.compute(*[dask.delayed(_bin_counts)(b, minimum, maximum) for b in blocks]))
    cumulative = np.cumsum(counts)
    last = int(cumulative[-1]) - 1
    ranks = [p / 100 * last for p in percentiles]
    wanted = sorted({k for rank in ranks for k in (int(np.floor(rank)), min(int(np.floor(rank)) + 1, last))})
    bins = tuple(int(b) for b in np.unique(np.searchsorted(cumulative, wanted, side="right")))
    parts = dask.compute(*[dask.delayed(_values_in)(b, minimum, maximum, bins) for b in blocks])
    chosen = np.sort(np.concatenate(parts))
    before = {b: int(cumulative[b - 1]) if b else 0 for b in bins}
    offset = {b: sum(int(counts[c]) for c in bins if c < b) for b in bins}  # of bin b in `chosen`

    def statistic(k: int) -> float:
        b = int(np.searchsorted(cumulative, k, side="right"))
        return float(chosen[offset[b] + k - before[b]])

    result = []
    for rank in ranks:
        below = int(np.floor(rank))
        lower, upper = statistic(below), statistic(min(below + 1, last))
        result.append(lerp(lower, upper, rank - below))
    return result[0], result[1]


def read_store_provenance(path: "str | os.PathLike[str]") -> "dict[str, Any] | None":
    """The provenance :func:`upscale_to_ome_zarr` stored in ``path``, or None (not a store of ours)."""
    try:
        zarr, _ = libraries()
        record = zarr.open_group(str(path), mode="r").attrs.get(PROVENANCE_KEY)
    except (InputError, OSError, ValueError, LookupError):
        return None
    return record if isinstance(record, dict) else None


def store_identity(path: "str | os.PathLike[str]") -> str:
    """A cheap identity of a Zarr store's content: the SHA-256 of its files' names, sizes and modification
    times (reading every chunk of a large image would take as long as upscaling it)."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(_files(root)):
        status = file.stat()
        digest.update(
            f"{file.relative_to(root).as_posix()}\0{status.st_size}\0{status.st_mtime_ns}\n".encode()
        )
    return digest.hexdigest()


def _files(folder: Path) -> Iterator[Path]:
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            yield from _files(Path(entry.path))
        elif entry.is_file():
            yield Path(entry.path)


@dataclass(frozen=True, eq=False)
class Pyramid:
    """An OME-Zarr image opened lazily for display: every level, in layout order, and its geometry.

    Attributes
    ----------
    levels : list of dask.array.Array
        Level 0 first, each laid out as :attr:`LazyImage.data` is.
    rgb : bool
    scale, translate : tuple of float
        Level 0's spacing and origin along the non-RGB axes, leading ones (z, t) included (napari's
        ``scale`` and ``translate``).
    provenance : dict or None
        What an output of ours was made with.
    """

    levels: list[Any]
    rgb: bool
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    provenance: "dict[str, Any] | None"


def open_pyramid(path: "str | os.PathLike[str]") -> Pyramid:
    """Open every level of an OME-Zarr image lazily (see :func:`open_lazy`), for a multiscale display.

    Raises
    ------
    InputError
        If ``path`` is not an OME-Zarr image.
    """
    zarr, _ = libraries()
    from ome_zarr.writer import get_metadata

    base = open_lazy(path)
    levels = [base.data]
    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Group):
        count = len(get_metadata(node)["multiscales"][0]["datasets"])
        levels += [_open_store(Path(path), None, level).data for level in range(1, count)]
    size = base.pixel_size or PixelSize(1.0, 1.0)
    lead = [base.geometry(axis) for axis in base.axes[: len(base.layout.leading)]]
    return Pyramid(
        levels=levels,
        rgb=not base.layout.is_gray,
        scale=(*(g.scale for g in lead), size.y, size.x),
        translate=(*(g.translation for g in lead), *base.origin),
        provenance=read_store_provenance(path),
    )
