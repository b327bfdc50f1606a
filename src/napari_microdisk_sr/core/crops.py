"""Crops of single microdisks: cut them out of an image, write them as a crop set, read a crop set back.

A crop set is a folder of TIFF crops, each in the dtype of the image it was cut from, and ``crops.csv``
with one row per crop: ``file, source, y0, x0, y1, x1, cy, cx, r`` (the box in the source image's pixels,
and the disk's centre and radius there, empty for a box drawn by hand).

A *paired* crop set also holds, for each crop, the registered low-resolution acquisition of the same disk
(``<stem>_disk001_lr.tif``, ...; see :mod:`.register`), exactly ``1 / PAIR_SCALE`` of its crop's size, in a
last column ``lr_file``: fine-tuning then learns from the real LR instead of a simulated one.

Writing never overwrites: a folder that already holds a crop set is appended to, its new crops numbered
after the existing ones (``<stem>_disk001.tif``, ``<stem>_disk002.tif``, ...) and their rows added to
``crops.csv``. The crops are written before ``crops.csv`` (each file atomically), so an interrupted write
leaves at worst crops that the set does not list, and their numbers are skipped by the next write.
"""

import dataclasses
import logging
import math
import numbers
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import io
from .detect import Disk, disk_box, reaches_border
from .errors import InputError, OutputError

log = logging.getLogger(__name__)

CSV_NAME = "crops.csv"
COLUMNS = ("file", "source", "y0", "x0", "y1", "x1", "cy", "cx", "r")
PAIRED_COLUMNS = (*COLUMNS, "lr_file")
"""The columns of a paired crop set's ``crops.csv``."""
PAIR_SCALE = 4
"""How many times larger a paired set's crop is than its LR crop, along each side."""
_BOX_COLUMNS = COLUMNS[2:6]
_DISK_COLUMNS = COLUMNS[6:]
_IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
_NAME_TRIES = 100_000  # free crop numbers tried after the last one

Box = tuple[int, int, int, int]
"""Rows ``y0:y1`` and columns ``x0:x1`` of an image."""


@dataclass(frozen=True, eq=False)
class Crop:
    """One microdisk cut out of an image.

    Attributes
    ----------
    image : (h, w) or (h, w, C) ndarray
        The crop, a copy in the source image's dtype.
    box : (y0, x0, y1, x1) tuple of int
        Where it was cut from, in the source image's pixels.
    disk : Disk or None
        The disk it holds, in the source image's pixels; None for a box given by hand.
    source : str or None
        What the source image was (a file path or a layer name), for the record.
    lr_image : (h / 4, w / 4) or (h / 4, w / 4, C) ndarray or None
        In a paired crop, the registered LR image's crop of ``box / PAIR_SCALE``.
    """

    image: np.ndarray
    box: Box
    disk: "Disk | None" = None
    source: "str | None" = None
    lr_image: "np.ndarray | None" = None


@dataclass(frozen=True, eq=False)
class CropSet:
    """A crop set read back from its folder.

    Attributes
    ----------
    images : list of ndarray
        The crops, in the order of ``rows``.
    rows : list of dict
        Per crop: ``file`` and ``source`` (str), the box ``y0, x0, y1, x1`` (int) and the disk ``cy, cx, r``
        (float); a value that was not recorded is None. A paired set's rows also name the ``lr_file``.
    folder : Path
    lr_images : list of ndarray or None
        A paired set's LR crops, in the order of ``images``; None for a set of crops alone.
    """

    images: list[np.ndarray]
    rows: list[dict[str, Any]]
    folder: Path
    lr_images: "list[np.ndarray] | None" = None

    @property
    def paired(self) -> bool:
        return self.lr_images is not None

    def __len__(self) -> int:
        return len(self.images)


def crop_disks(
    image: np.ndarray,
    disks_or_boxes: "Sequence[Disk | Sequence[float]]",
    *,
    margin: float = 0.25,
    skip_border: bool = True,
    source: "str | None" = None,
) -> list[Crop]:
    """Cut a square crop around each disk, or cut the boxes given.

    Parameters
    ----------
    image : (H, W) or (H, W, C) ndarray
        The image to crop, gray or with channels last.
    disks_or_boxes : sequence of Disk or (y0, x0, y1, x1)
        Disks (cropped with :func:`~.detect.disk_box`) and boxes (rows ``y0:y1``, columns ``x0:x1``, for
        example edited by hand; numbers are rounded to whole pixels and the box clipped to the image).
    margin : float
        Extra border around each disk, as a fraction of its radius.
    skip_border : bool
        Leave out the disks that cross the image's border (a box is always cut).
    source : str, optional
        What ``image`` is, recorded in each crop.

    Returns
    -------
    list of Crop
        In the order given, less the skipped disks.

    Raises
    ------
    InputError
        For an image that is not 2D (with channels), a negative margin, or a box that is not four numbers,
        is empty or lies outside the image.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
        raise InputError(f"crops are cut from a 2D image (channels last), not one of shape {image.shape}")
    crops = []
    for item in disks_or_boxes:
        if isinstance(item, Disk):
            if skip_border and reaches_border(item.cy, item.cx, item.r, image.shape):
                continue
            box, disk = disk_box(item, image.shape, margin=margin), item
        else:
            box, disk = _clipped_box(item, image.shape), None
        y0, x0, y1, x1 = box
        crops.append(Crop(image[y0:y1, x0:x1].copy(), box, disk, source))
    log.info("%d crops of %d disks or boxes", len(crops), len(disks_or_boxes))
    return crops


def _clipped_box(box: Sequence[float], shape: Sequence[int]) -> Box:
    if isinstance(box, (str, bytes)) or np.ndim(box) != 1 or len(box) != 4:
        raise InputError(f"a box is (y0, x0, y1, x1) in pixels, not {box!r}")
    if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in box):
        raise InputError(f"a box needs four finite numbers, not {box!r}")
    y0, x0, y1, x1 = (round(float(v)) for v in box)
    h, w = shape[:2]
    clipped = (max(0, y0), max(0, x0), min(h, y1), min(w, x1))
    if clipped[0] >= clipped[2] or clipped[1] >= clipped[3]:
        raise InputError(f"box {tuple(box)} is empty or outside the {h}x{w} image")
    return clipped


def crop_pairs(
    hr: np.ndarray,
    lr: np.ndarray,
    disks_or_boxes: "Sequence[Disk | Sequence[float]]",
    *,
    margin: float = 0.25,
    skip_border: bool = True,
    source: "str | None" = None,
) -> list[Crop]:
    """Cut each disk (found on ``hr``) out of a registered pair, aligned: the HR box on multiples of 4.

    Parameters
    ----------
    hr : (H, W) or (H, W, C) ndarray
        The high-resolution image, on exactly the x4 grid of ``lr`` (as ``microdisk-sr register`` writes it).
    lr : (H / 4, W / 4) or (H / 4, W / 4, C) ndarray
        Its registered low-resolution image, in the same dtype and channels.
    disks_or_boxes, margin, skip_border, source
        As for :func:`crop_disks`, in ``hr``'s pixels.

    Returns
    -------
    list of Crop
        Each with its box grown outwards to multiples of ``PAIR_SCALE`` (within the image) and
        ``lr_image``, ``lr``'s crop of the box divided by ``PAIR_SCALE``.

    Raises
    ------
    InputError
        For images that are not such a pair, or as :func:`crop_disks`.
    """
    hr, lr = np.asarray(hr), np.asarray(lr)
    s = PAIR_SCALE
    if hr.shape != (lr.shape[0] * s, lr.shape[1] * s, *lr.shape[2:]) or hr.dtype != lr.dtype:
        raise InputError(
            f"HR {hr.shape} {hr.dtype} and LR {lr.shape} {lr.dtype} are not a registered pair: the HR must "
            f"be exactly {s}x the LR in height and width, with the same channels and dtype (see microdisk-sr "
            "register)"
        )
    crops = []
    for crop in crop_disks(hr, disks_or_boxes, margin=margin, skip_border=skip_border, source=source):
        y0, x0, y1, x1 = crop.box
        y0, x0 = s * (y0 // s), s * (x0 // s)
        y1, x1 = min(hr.shape[0], s * -(-y1 // s)), min(hr.shape[1], s * -(-x1 // s))
        box = (y0, x0, y1, x1)
        lr_image = lr[y0 // s : y1 // s, x0 // s : x1 // s].copy()
        crops.append(dataclasses.replace(crop, image=hr[y0:y1, x0:x1].copy(), box=box, lr_image=lr_image))
    return crops


def write_crop_set(crops: Sequence[Crop], out_dir: "str | os.PathLike[str]", *, stem: str) -> list[Path]:
    """Write crops as ``<stem>_disk001.tif``, ... and list them in ``crops.csv``, appending to a set there.

    A crop the set already holds (the same source, box and pixels: the same image cropped again) is not
    added twice: a duplicate would train on one copy and validate on the other. Paired crops (with an
    ``lr_image``) make or extend a paired set, each LR crop written as ``<stem>_disk001_lr.tif``, ...; a set
    is either paired or not.

    Parameters
    ----------
    crops : sequence of Crop
        At least one.
    out_dir : path
        The crop set's folder; created if needed. If it holds a crop set, the new crops are added to it.
    stem : str
        Start of the file names, usually the source image's name; letters, digits and ``._-+`` only.

    Returns
    -------
    list of Path
        The crop files written, in order (without the crops the set already held).

    Raises
    ------
    InputError
        For no crops or an unusable stem.
    OutputError
        If the folder cannot be written, its ``crops.csv`` is not a crop set's, or one set would mix paired
        crops and crops alone.
    """
    if not crops:
        raise InputError("no crops to write")
    paired = crops[0].lr_image is not None
    if any((crop.lr_image is not None) != paired for crop in crops):
        raise InputError("a crop set is paired or not: give LR crops for all the crops or for none")
    if not re.fullmatch(r"[\w.+-]+", stem) or stem.startswith("."):
        raise InputError(f"stem {stem!r} is not a usable file name; use letters, digits and ._-+")
    folder = io.ensure_writable_dir(out_dir)
    with io.locked_dir(folder):  # another process adding crops here waits, so that no row is lost
        rows, written = _add_crops(folder, crops, stem)
    if len(written) < len(crops):
        log.warning(
            "%d of %d crops were in %s already: not added again",
            len(crops) - len(written),
            len(crops),
            folder,
        )
    log.info("wrote %d crops to %s (%d in the set)", len(written), folder, len(rows))
    return written


def _add_crops(folder: Path, crops: Sequence[Crop], stem: str) -> tuple[list[dict[str, Any]], list[Path]]:
    """Write the new crops into ``folder`` and rewrite its ``crops.csv``; return all rows and the new files.

    Each crop file takes the next free number when it is written, so a file that appeared meanwhile (a
    writer that does not take the folder's lock) is never overwritten.
    """
    csv_path = folder / CSV_NAME
    try:
        rows = _read_rows(csv_path) if csv_path.exists() else []
    except InputError as exc:
        raise OutputError(f"cannot add crops to {folder}: {exc}; choose another folder") from exc
    paired = crops[0].lr_image is not None
    if rows and ("lr_file" in rows[0]) != paired:
        kinds = (
            ("paired crops", "a crop set without LR crops")
            if paired
            else ("crops alone", "a paired crop set")
        )
        raise OutputError(f"cannot add {kinds[0]} to {kinds[1]} in {folder}; choose another folder")
    number = _last_number(folder, rows, stem)
    held = {
        (row["source"], tuple(row[c] for c in _BOX_COLUMNS)): row["file"] for row in rows if row["source"]
    }
    written = []
    for crop in crops:
        copy = held.get((crop.source, tuple(crop.box))) if crop.source else None
        if copy is not None and _holds(folder / copy, crop.image):
            continue
        names = (folder / _crop_name(stem, n) for n in range(number + 1, number + _NAME_TRIES))
        path = io.write_tiff(
            folder / _crop_name(stem, number + 1), crop.image, description=_description(crop), names=names
        )
        number = _number_of(path.name, stem)
        row = _row(path.name, crop)
        if paired:
            row["lr_file"] = f"{path.stem}_lr.tif"
            io.write_tiff(
                folder / row["lr_file"], crop.lr_image, description=_description(crop) | {"lr": True}
            )
        rows.append(row)
        written.append(path)
        if crop.source:  # a copy of it later in ``crops`` (a box pasted twice) is a duplicate too
            held[crop.source, tuple(crop.box)] = path.name
    if written:
        io.write_csv(csv_path, rows, PAIRED_COLUMNS if paired else COLUMNS, overwrite=True)
    return rows, written


def _crop_name(stem: str, number: int) -> str:
    return f"{stem}_disk{number:03d}.tif"


def _holds(path: Path, image: np.ndarray) -> bool:
    """Whether the crop file ``path`` exists and holds exactly ``image``."""
    try:
        held = io.read_image(path).data
    except InputError:
        return False
    return held.dtype == image.dtype and np.array_equal(held, image)


def _last_number(folder: Path, rows: list[dict[str, Any]], stem: str) -> int:
    """The highest crop number of ``stem`` among the listed crops and the files in the folder (0 if none)."""
    names = [row["file"] for row in rows] + [path.name for path in folder.iterdir()]
    return max((n for n in (_number_of(name, stem) for name in names) if n is not None), default=0)


def _number_of(name: str, stem: str) -> "int | None":
    """The crop number in the file name ``name`` of a crop of ``stem``; None for other names."""
    match = re.fullmatch(rf"{re.escape(stem)}_disk(\d+)\.tif", name)
    return None if match is None else int(match.group(1))


def _row(name: str, crop: Crop) -> dict[str, Any]:
    disk = crop.disk
    measures = ("", "", "") if disk is None else (round(disk.cy, 3), round(disk.cx, 3), round(disk.r, 3))
    return (
        {"file": name, "source": crop.source or ""}
        | dict(zip(_BOX_COLUMNS, crop.box, strict=True))
        | dict(zip(_DISK_COLUMNS, measures, strict=True))
    )


def _description(crop: Crop) -> dict[str, Any]:
    """What a crop's TIFF records about it."""
    description: dict[str, Any] = {"source": crop.source, "box": list(crop.box)}
    if crop.disk is not None:
        description["disk"] = {"cy": crop.disk.cy, "cx": crop.disk.cx, "r": crop.disk.r}
    return description


def read_crop_set(folder: "str | os.PathLike[str]") -> CropSet:
    """Read the crops of a folder: those listed in its ``crops.csv``, else all its TIFF/PNG images.

    Parameters
    ----------
    folder : path
        Written by :func:`write_crop_set` (``microdisk-sr crop``, the crop widget), or simply a folder of
        crops made elsewhere (then sorted by name, without boxes or disks). A paired set's LR crops are read
        too.

    Returns
    -------
    CropSet

    Raises
    ------
    InputError
        If the folder does not exist or holds no crops, its ``crops.csv`` is not a crop set's, or a crop it
        lists is missing or unreadable, or an LR crop is not exactly ``1 / PAIR_SCALE`` of its crop.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"crop folder {folder} does not exist")
    csv_path = folder / CSV_NAME
    if csv_path.exists():
        rows = _read_rows(csv_path)
    else:
        files = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        rows = [dict.fromkeys(COLUMNS) | {"file": name, "source": ""} for name in files]
    if not rows:
        raise InputError(
            f"{folder} holds no crops; make some with 'microdisk-sr crop' or the crop widget, "
            "or choose a folder of TIFF/PNG crops"
        )
    images = [_read_listed(folder, row["file"]) for row in rows]
    if "lr_file" not in rows[0]:
        return CropSet(images, rows, folder)
    lr_images = [_read_listed(folder, row["lr_file"]) for row in rows]
    for row, image, lr_image in zip(rows, images, lr_images, strict=True):
        h, w = lr_image.shape[:2]
        if image.shape != (h * PAIR_SCALE, w * PAIR_SCALE, *lr_image.shape[2:]):
            raise InputError(
                f"LR crop {row['lr_file']} {lr_image.shape} is not 1/{PAIR_SCALE} of crop {row['file']} "
                f"{image.shape} in {folder}"
            )
    return CropSet(images, rows, folder, lr_images)


def _read_listed(folder: Path, name: str) -> np.ndarray:
    path = folder / name
    if not path.is_file():
        raise InputError(f"crop {name} listed in {folder / CSV_NAME} is missing")
    return io.read_image(path).data


def crop_boxes(folder: "str | os.PathLike[str]") -> "list[Box | None]":
    """The boxes of a crop set's crops in their source images, in order; None where none was recorded.

    Raises
    ------
    InputError
        If the folder has no ``crops.csv`` of a crop set.
    """
    csv_path = Path(folder) / CSV_NAME
    if not csv_path.is_file():
        raise InputError(f"{folder} has no {CSV_NAME}; it is not a crop set")
    boxes = []
    for row in _read_rows(csv_path):
        box = tuple(row[column] for column in _BOX_COLUMNS)
        boxes.append(None if None in box else box)
    return boxes


def _read_rows(csv_path: Path) -> list[dict[str, Any]]:
    """The rows of a ``crops.csv``, typed (empty values as None)."""
    try:
        raw = io.read_csv(csv_path)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {csv_path}: {exc}") from exc
    rows = []
    for number, row in enumerate(raw, start=2):
        paired = "lr_file" in row
        if None in row or set(row) != set(PAIRED_COLUMNS if paired else COLUMNS) or not row["file"]:
            raise InputError(
                f"{csv_path} is not a crop set's list (columns {', '.join(COLUMNS)}[, lr_file]; "
                f"line {number})"
            )
        if paired and not row["lr_file"]:
            raise InputError(f"{csv_path} line {number} names no lr_file: every crop of a paired set has one")
        try:
            typed = {column: int(row[column]) if row[column] else None for column in _BOX_COLUMNS}
            typed |= {column: float(row[column]) if row[column] else None for column in _DISK_COLUMNS}
        except ValueError:
            raise InputError(f"{csv_path} line {number} holds a value that is not a number") from None
        lr_file = {"lr_file": row["lr_file"]} if paired else {}
        rows.append({"file": row["file"], "source": row["source"]} | typed | lr_file)
    return rows
