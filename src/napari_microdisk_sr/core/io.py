"""Files: atomic writes, never-overwrite naming, image/CSV/JSON input and output.

Rules the whole product follows: an original is never overwritten; every output is written to a temporary
file in the destination folder and then put into place whole, so a crash leaves either the old file or the new
one, never half of one; an output that exists gets a ``-1``, ``-2``, ... suffix instead of being replaced. The
free name is taken by the same operation that puts the file into place (a hard link, which fails rather than
replace), so processes writing into one folder at once each keep their result under a name of its own.
"""

import contextlib
import csv
import dataclasses
import errno
import glob
import io as _io
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, MicrodiskSRError, OutputError

log = logging.getLogger(__name__)

OUTPUT_DIR_SUFFIX = "_microdisk_sr"
_TIFF_SUFFIXES = {".tif", ".tiff"}
_UNIT_BY_TIFF_CODE = {2: "inch", 3: "cm", 4: "mm", 5: "um"}  # 4 and 5: tifffile's, not in the TIFF standard
_CM_PER_UNIT = {
    "m": 100.0, "cm": 1.0, "mm": 0.1, "um": 1e-4, "µm": 1e-4, "micron": 1e-4, "microns": 1e-4, "nm": 1e-7
}  # fmt: skip
_TIFF_INCH, _TIFF_CENTIMETER, _TIFF_NONE = 2, 3, 1
_MAX_NUMBERED = 100_000
_OME_ZARR = ".ome.zarr"
_IMAGEJ_GRAY_DTYPES = {np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int16), np.dtype(np.float32)}
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}  # FAT, some network shares


@dataclass(frozen=True)
class PixelSize:
    """Physical size of one pixel along y and x."""

    y: float
    x: float
    unit: str = ""

    def scaled(self, factor: float) -> "PixelSize":
        """The pixel size of an image resampled by ``factor`` (x4 upscaling: ``scaled(1 / 4)``)."""
        return PixelSize(self.y * factor, self.x * factor, self.unit)


@dataclass(frozen=True)
class ImageFile:
    """An image read from disk with what is known about it."""

    data: np.ndarray
    path: Path
    pixel_size: "PixelSize | None" = None


def output_dir_for(source: "str | os.PathLike[str]") -> Path:
    """The sibling folder ``<stem>_microdisk_sr/`` where outputs made from ``source`` go by default."""
    source = Path(source)
    return source.parent / f"{image_stem(source)}{OUTPUT_DIR_SUFFIX}"


def image_stem(path: "str | os.PathLike[str]") -> str:
    """The name of an image file or Zarr store without its suffix (``.ome.zarr`` is one suffix)."""
    path = Path(path)
    return path.name[: -len(_OME_ZARR)] if path.name.lower().endswith(_OME_ZARR) else path.stem


def numbered_paths(path: "str | os.PathLike[str]") -> Iterator[Path]:
    """``path``, then ``<stem>-1<suffix>``, ``<stem>-2<suffix>``, ...: the names an output may take.

    ``.ome.zarr`` counts as one suffix: ``a_x4.ome.zarr``, ``a_x4-1.ome.zarr``, ...
    """
    path = Path(path)
    yield path
    stem, suffix = path.stem, path.suffix
    if path.name.lower().endswith(_OME_ZARR):
        stem, suffix = path.name[: -len(_OME_ZARR)], path.name[-len(_OME_ZARR) :]
    for n in range(1, _MAX_NUMBERED):
        yield path.with_name(f"{stem}-{n}{suffix}")


def unique_path(path: "str | os.PathLike[str]") -> Path:
    """``path`` if nothing is there, else the first free ``<stem>-1<suffix>``, ``<stem>-2<suffix>``, ...

    The name free now: a preview. A write decides its name itself (see :func:`atomic_write`), since another
    process may take this one first.
    """
    for candidate in numbered_paths(path):
        if not candidate.exists():
            return candidate
    raise OutputError(f"too many existing outputs named like {path}; clean the folder")


def make_new_dir(path: "str | os.PathLike[str]") -> Path:
    """Create the folder ``path``, or the first free ``-1``, ``-2``, ... variant, and return it.

    Creating it is what claims the name (``mkdir`` fails on an existing folder), so two processes never get
    the same one. Missing parent folders are created.

    Raises
    ------
    OutputError
        If the folder cannot be created, or every name is taken.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for candidate in numbered_paths(path):
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            return candidate
    except OSError as exc:
        raise OutputError(f"cannot create folder {path} ({exc.strerror or exc}); choose another") from exc
    raise OutputError(f"too many existing folders named like {path}; clean the folder")


def ensure_writable_dir(folder: "str | os.PathLike[str]") -> Path:
    """Create ``folder`` if needed and prove it is writable by creating and removing a file in it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(
            f"output folder {folder} is not writable ({exc.strerror or exc}); choose another"
        ) from exc
    return folder


def refuse_input_as_output(output: Path, inputs: Iterable["str | os.PathLike[str]"]) -> None:
    """Raise if ``output`` is the same file as one of ``inputs``."""
    out = Path(output).resolve()
    for source in inputs:
        if Path(source).resolve() == out:
            raise OutputError(f"output {output} is the input file itself; originals are never overwritten")


def atomic_write(
    path: "str | os.PathLike[str]",
    write: Callable[[Path], None],
    *,
    overwrite: bool = False,
    names: "Iterable[str | os.PathLike[str]] | None" = None,
) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then put it into place; return its name.

    Parameters
    ----------
    path : path
        Where the file goes.
    write : callable
        Writes the whole file to the path it is given.
    overwrite : bool
        False (the default): never replace a file. The file is hard-linked into place under the first of
        ``names`` that is free at that moment: the link fails instead of replacing, so a name taken by
        another process meanwhile is skipped, never overwritten, and the work is kept. True: rename over
        ``path``, for files the product owns, such as checkpoints.
    names : iterable of path, optional
        The names to try in order, without ``overwrite``; by default ``path`` alone. Outputs that take the
        next free ``-1``, ``-2``, ... name pass :func:`numbered_paths` of ``path``.

    Returns
    -------
    Path
        The name the file was written under.

    Raises
    ------
    OutputError
        If every name is taken. On any failure the temporary file is removed and no name is taken.
    """
    path = Path(path)
    prefix, suffix = _temporary_affixes(path)
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _new_file_mode())  # mkstemp's 0o600 would hide results from colleagues
        if overwrite:
            os.replace(tmp, path)
            return path
        return _link_first_free(tmp, [path] if names is None else names)
    finally:
        tmp.unlink(missing_ok=True)


def _link_first_free(tmp: Path, names: Iterable["str | os.PathLike[str]"]) -> Path:
    """Give ``tmp`` the first of ``names`` that nothing holds, taking the name and filling it in one step."""
    tried: list[Path] = []
    for name in map(Path, names):
        tried.append(name)
        try:
            _link(tmp, name)
        except FileExistsError:
            continue
        return name
    if len(tried) == 1:
        raise OutputError(f"{tried[0]} exists and is not overwritten")
    raise OutputError(f"too many existing outputs named like {tried[0]}; clean the folder")


def _link(tmp: Path, target: Path) -> None:
    """Hard-link ``tmp`` as ``target``; ``FileExistsError`` if ``target`` exists.

    Where the file system has no hard links, ``target`` is created exclusively first (which claims the name
    just as surely) and ``tmp`` renamed over that empty file.
    """
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.replace(tmp, target)


@contextlib.contextmanager
def locked_dir(folder: "str | os.PathLike[str]") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` while reading, changing and rewriting a file in it.

    Processes taking the lock work one after the other. Where the platform or file system gives no lock
    (Windows, some network shares), a warning is logged and the work goes on unlocked.
    """
    try:
        import fcntl
    except ImportError:
        log.warning("no folder locks on this platform: %s is changed without one", folder)
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            log.warning("cannot lock %s (%s): it is changed without a lock", folder, exc.strerror or exc)
        yield
    finally:
        os.close(fd)  # releases the lock


def _temporary_affixes(path: Path) -> tuple[str, str]:
    """The prefix and suffix of :func:`atomic_write`'s temporary files for ``path``: hidden, and named."""
    return f".{path.stem}.", f".tmp{path.suffix}"


def remove_stale_temporaries(path: "str | os.PathLike[str]") -> list[Path]:
    """Remove the temporary files that interrupted :func:`atomic_write` calls for ``path`` left behind.

    A process killed while writing (SIGKILL, a power cut) leaves its hidden temporary file beside ``path``.
    Call this only where no other process writes ``path`` (a run folder that this process owns).

    Returns
    -------
    list of Path
        The files removed.
    """
    path = Path(path)
    prefix, suffix = _temporary_affixes(path)
    stale = [p for p in path.parent.glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}") if p.is_file()]
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def new_dir_mode() -> int:
    """The mode ``mkdir()`` gives a new folder: 0o777 less the process's umask (``mkdtemp`` gives 0o700)."""
    mode = _new_file_mode()
    return mode | (mode & 0o444) >> 2


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the process's umask."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        status = ""
    for line in status.splitlines():
        if line.startswith("Umask:"):
            return 0o666 & ~int(line.split()[1], 8)
    mask = os.umask(0o022)  # no other way to read it here; set back at once
    os.umask(mask)
    return 0o666 & ~mask


def write_bytes(
    path: "str | os.PathLike[str]",
    payload: bytes,
    *,
    overwrite: bool = False,
    names: "Iterable[str | os.PathLike[str]] | None" = None,
) -> Path:
    """Write ``payload`` with :func:`atomic_write`; return the name written."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(payload), overwrite=overwrite, names=names)


def write_json(
    path: "str | os.PathLike[str]",
    obj: Any,
    *,
    overwrite: bool = False,
    names: "Iterable[str | os.PathLike[str]] | None" = None,
) -> Path:
    """Write ``obj`` as indented JSON with :func:`atomic_write`; return the name written."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    return write_bytes(path, text.encode(), overwrite=overwrite, names=names)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_csv(
    path: "str | os.PathLike[str]",
    rows: Sequence[Mapping[str, Any]],
    fieldnames: "Sequence[str] | None" = None,
    *,
    overwrite: bool = False,
    names: "Iterable[str | os.PathLike[str]] | None" = None,
) -> Path:
    """Write ``rows`` (dicts) as CSV (full float precision) with :func:`atomic_write`; return its name."""
    if fieldnames is None:
        fieldnames = list(dict.fromkeys(k for row in rows for k in row))
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in fieldnames})
    return write_bytes(path, buf.getvalue().encode(), overwrite=overwrite, names=names)


def read_csv(path: "str | os.PathLike[str]") -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def read_image(path: "str | os.PathLike[str]") -> ImageFile:
    """Read a TIFF (with its pixel size, if any) or a PNG/JPEG/BMP image, keeping its dtype.

    A last axis of size 1 (one channel) is dropped: ``(H, W, 1)`` is read as the gray image ``(H, W)``.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise InputError(f"image {path} does not exist")
    try:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            image = _read_tiff(path)
        else:
            import imageio.v3 as iio

            image = ImageFile(np.asarray(iio.imread(path)), path)
    except MicrodiskSRError:
        raise
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read image {path}: {reason}") from exc
    if image.data.ndim >= 3 and image.data.shape[-1] == 1:  # a single channel axis: a gray image
        image = dataclasses.replace(image, data=image.data[..., 0])
    return image


def _read_tiff(path: Path) -> ImageFile:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        data = tif.asarray()
        page = tif.pages.first
        pixel_size = _tiff_pixel_size(page, tif.imagej_metadata)
    return ImageFile(np.asarray(data), path, pixel_size)


def read_tiff_pixel_size(path: "str | os.PathLike[str]") -> "PixelSize | None":
    """The pixel size a TIFF records (see :func:`read_image`), read without its pixels."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return _tiff_pixel_size(tif.pages.first, tif.imagej_metadata)


def read_tiff_description(path: "str | os.PathLike[str]") -> "dict[str, Any] | None":
    """The JSON description :func:`write_tiff` wrote into a TIFF (its provenance), or None if it holds none.

    Reads the first page's description, or ImageJ's Info property for hyperstacks; a file that is not a
    readable TIFF, or whose text is not a JSON object, gives None.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            imagej = tif.imagej_metadata or {}
            text = imagej.get("Info") if "Info" in imagej else tif.pages.first.description
    except (OSError, ValueError, tifffile.TiffFileError):
        return None
    try:
        data = json.loads(text or "")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def imagej_unit(text: Any) -> str:
    """A unit as ImageJ wrote it in a TIFF description, its ``\\uXXXX`` escapes decoded (Fiji writes
    micrometres as ``\\u00B5m``); "" for none."""
    return re.sub(r"\\u([0-9a-fA-F]{4})", lambda match: chr(int(match.group(1), 16)), str(text or ""))


def _tiff_pixel_size(page: Any, imagej: "dict | None") -> "PixelSize | None":
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    xres, yres = (_rational(tags[name].value) for name in ("XResolution", "YResolution"))
    if not xres or not yres or (xres == 1 and yres == 1):
        return None
    unit = ""
    if imagej and imagej.get("unit"):
        unit = imagej_unit(imagej["unit"])
    elif "ResolutionUnit" in tags:
        unit = _UNIT_BY_TIFF_CODE.get(int(tags["ResolutionUnit"].value), "")
    if (
        unit == "cm" and max(1.0 / yres, 1.0 / xres) < 0.01
    ):  # microscope pixels: in micrometres, as ImageJ does
        return PixelSize(_round_sig(1e4 / yres), _round_sig(1e4 / xres), "um")
    return PixelSize(1.0 / yres, 1.0 / xres, unit)


def _tiff_resolution(pixel_size: PixelSize) -> dict[str, Any]:
    """TIFF resolution tags for ``pixel_size``: metric units in pixels per centimetre (the TIFF standard's
    unit, which ImageJ/Fiji and other readers understand), inches as such, other units without a unit."""
    per_cm = _CM_PER_UNIT.get(pixel_size.unit)
    if per_cm is not None:
        return {
            "resolution": (1.0 / (pixel_size.x * per_cm), 1.0 / (pixel_size.y * per_cm)),
            "resolutionunit": _TIFF_CENTIMETER,
        }
    unit = _TIFF_INCH if pixel_size.unit == "inch" else _TIFF_NONE
    return {"resolution": (1.0 / pixel_size.x, 1.0 / pixel_size.y), "resolutionunit": unit}


def _round_sig(value: float, digits: int = 12) -> float:
    """``value`` to ``digits`` significant digits: undoes the last-bit noise of a unit conversion."""
    return float(f"{value:.{digits}g}")


def _rational(value: Any) -> float:
    if isinstance(value, tuple):
        num, den = value
        return num / den if den else 0.0
    return float(value)


def write_tiff(
    path: "str | os.PathLike[str]",
    data: np.ndarray,
    *,
    pixel_size: "PixelSize | None" = None,
    description: "Mapping[str, Any] | None" = None,
    names: "Iterable[str | os.PathLike[str]] | None" = None,
) -> Path:
    """Write ``data`` as a TIFF with :func:`atomic_write`, never overwriting; return the name written.

    RGB(A) when the last axis has 3 or 4 values. A stack keeps its shape: gray ``(Z, H, W)`` and
    ``(T, Z, H, W)`` of uint8, uint16, int16 or float32, and uint8 RGB ``(Z, H, W, 3)``, are written as ImageJ
    hyperstacks (axes ``ZYX``, ``TZYX``, ``ZYXS``; ``description`` goes into ImageJ's Info property), which
    Fiji opens with their axes; other stacks carry tifffile's shape record. Both read back with their shape.
    """
    import tifffile

    rgb = data.ndim >= 3 and data.shape[-1] in (3, 4)
    text = None if description is None else json.dumps(description, default=_json_default)
    kwargs: dict[str, Any] = {"photometric": "rgb" if rgb else "minisblack"}
    if data.ndim >= 3 and data.shape[-1] == 4:
        kwargs["extrasamples"] = ["unassalpha"]
    if pixel_size is not None:
        kwargs.update(_tiff_resolution(pixel_size))
    axes = _imagej_axes(data, rgb=rgb)
    if axes is not None:
        kwargs.update(imagej=True, metadata={"axes": axes} | ({} if text is None else {"Info": text}))
    elif text is not None:
        kwargs["description"] = text
        if data.ndim == (3 if rgb else 2):  # one plane: its shape needs no record
            kwargs["metadata"] = None
    return atomic_write(path, lambda tmp: tifffile.imwrite(tmp, data, **kwargs), names=names)


def _imagej_axes(data: np.ndarray, *, rgb: bool) -> "str | None":
    """The ImageJ hyperstack axes of a stack that ImageJ can hold; None for a single plane or other stacks."""
    if rgb:
        return "ZYXS" if data.ndim == 4 and data.shape[-1] == 3 and data.dtype == np.uint8 else None
    if data.dtype not in _IMAGEJ_GRAY_DTYPES:
        return None
    return {3: "ZYX", 4: "TZYX"}.get(data.ndim)
