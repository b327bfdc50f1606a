"""Batch runs over folders of images: which inputs, which share of them, and which are already done.

A plate scan is a folder of fields; a cluster array job or several machines on one file system split it with
``--shard I/N`` and no coordinator, and a rerun after an interruption skips every input whose output is there
with a matching provenance (the same input pixels, model weights and settings), so only what is missing or
changed is computed again. Outputs are written atomically, so an interrupted run leaves no half-written file
to be mistaken for a result.

One input of a run is a :class:`FileJob`, and :func:`upscale_file` does it (read, upscale, write with its
provenance), the same function in one process and on each worker of a cluster (:mod:`.distributed`): that
is what makes their outputs the same bits.
"""

import glob
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import infer, io
from .consistency import BackDegradation, lr_consistency
from .device import half_dtype
from .errors import InputError
from .images import image_layout, normalizations_for, validate_image
from .intensity import AUTO, Intensity
from .io import numbered_paths, read_tiff_description
from .lazy import is_store, read_store_provenance
from .models import LoadedModel
from .progress import drive
from .regions import Region

__all__ = [
    "IMAGE_SUFFIXES",
    "OUTPUT_SETTINGS",
    "FileDone",
    "FileJob",
    "check_input",
    "done_output",
    "expand_inputs",
    "is_done",
    "output_settings",
    "parse_shard",
    "shard",
    "upscale_file",
]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
"""The files of a folder that are taken as images."""
_GLOB_CHARS = "*?["
OUTPUT_SETTINGS = ("model_sha256", "scale", "tile", "tile_pad", "half", "intensity", "region")
"""What an output must have been made with to count as done, besides its input's SHA-256: the weights and
every setting that changes its pixels (the device does not, beyond float rounding)."""


def output_settings(
    model: LoadedModel, config: "infer.UpscaleConfig", device: torch.device, region: "Region | None" = None
) -> dict[str, Any]:
    """The :data:`OUTPUT_SETTINGS` of outputs made by ``model`` with ``config`` on ``device``: what they
    record and what a rerun compares (half precision only where ``device`` computes it; the value mapping
    resolved, the model's own when ``config`` gives none)."""
    return {
        "model_sha256": model.sha256,
        "scale": model.spec.scale,
        "tile": config.tile,
        "tile_pad": infer.tile_pad_for(model, config.tile_pad),
        "half": config.half and half_dtype(device) is not None,
        "intensity": str(infer.intensity_for(model, config.intensity)),
        "region": None if region is None else [region.y0, region.y1, region.x0, region.x1],
    }


def expand_inputs(items: Iterable["str | os.PathLike[str]"]) -> list[Path]:
    """The image files named by ``items``: files, folders (their image files, not recursive) and glob
    patterns, sorted and without repeats. A Zarr store (a folder ending in ``.zarr``) is an image.

    Raises
    ------
    InputError
        For a name that does not exist, or a folder or pattern that names no image file.
    """
    found: set[Path] = set()
    for item in items:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir() and not is_store(path):
            images = [p for p in path.iterdir() if _is_image(p)]
            if not images:
                raise InputError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)}) or .zarr stores")
        elif any(c in text for c in _GLOB_CHARS) and not path.exists():
            images = [Path(p) for p in glob.glob(text) if _is_image(Path(p))]
            if not images:
                raise InputError(f"no image file matches {text!r}")
        elif not path.exists():
            raise InputError(f"image {path} does not exist")
        else:
            images = [path]
        found.update(images)
    return sorted(found)


def _is_image(path: Path) -> bool:
    if path.name.startswith("."):
        return False
    return is_store(path) or (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` as ``(I, N)``, with ``1 <= I <= N``.

    Raises
    ------
    InputError
        For anything else.
    """
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise InputError(f"a shard is I/N (the I-th of N parts, from 1), e.g. 2/8; got {text!r}") from None
    if not 1 <= index <= count:
        raise InputError(f"shard {text}: I must be from 1 to N")
    return index, count


def shard(paths: list[Path], index: int, count: int) -> list[Path]:
    """The ``index``-th (from 1) of ``count`` deterministic slices of ``paths``: every ``count``-th one.

    Together the ``count`` slices hold every path exactly once, whatever the machine that computes them.
    """
    return paths[index - 1 :: count]


def done_output(target: Path, made_with: Mapping[str, Any]) -> "Path | None":
    """An existing output (``target`` or one of its numbered variants) made from the same input with the same
    weights and settings, or None.

    Parameters
    ----------
    target : Path
        The output's name (``<stem>_x4.tif``); reruns that found it taken wrote ``<stem>_x4-1.tif``, ...
    made_with : mapping
        ``input_sha256`` (or, for a Zarr store, ``input_identity``: see :func:`.lazy.store_identity`) and
        the :data:`OUTPUT_SETTINGS` of the run about to be made. An OME-Zarr output's are in its attributes.
    """
    keys = ("input_sha256", "input_identity", *OUTPUT_SETTINGS)
    wanted = {key: made_with.get(key) for key in keys}
    for candidate in numbered_paths(target):
        if not candidate.exists():
            return None  # numbered outputs are written in order: the first gap ends them
        provenance = (
            read_store_provenance(candidate) if candidate.is_dir() else read_tiff_description(candidate)
        )
        if provenance is not None and {key: provenance.get(key) for key in keys} == wanted:
            return candidate
    return None


@dataclass(frozen=True)
class FileJob:
    """One input of a batch run: what to read, where to write, and how to upscale it.

    Attributes
    ----------
    path : Path
        The input image file.
    target : Path
        The output's name, ``<stem>_x4.tif``; a numbered variant is written when it is taken.
    made_with : dict
        ``input_sha256`` and the :data:`OUTPUT_SETTINGS` of the run, what :func:`done_output` compares.
    config : infer.UpscaleConfig
    region : Region, optional
        Upscale only this window of each plane.
    consistency : BackDegradation, optional
        Also check the output for LR consistency, degrading it back this way.
    """

    path: Path
    target: Path
    made_with: Mapping[str, Any]
    config: infer.UpscaleConfig = field(default_factory=infer.UpscaleConfig)
    region: "Region | None" = None
    consistency: "BackDegradation | None" = None


@dataclass(frozen=True)
class FileDone:
    """What :func:`upscale_file` wrote for one input: names, shapes and time, never the pixels.

    Attributes
    ----------
    path, output : Path
        The input, and the output written (or found written, see ``seconds``).
    input_shape, output_shape : tuple of int, or None
        None for an output found written.
    seconds : float or None
        Reading, upscaling and writing; None when the output was found already written with the same
        provenance (by an earlier attempt of the same task on a cluster, or by another process).
    consistency_psnr : float or None
        The LR consistency in dB, when checked.
    consistency_map : Path or None
        ``<output stem>_consistency.tif``, when checked.
    """

    path: Path
    output: Path
    input_shape: "tuple[int, ...] | None" = None
    output_shape: "tuple[int, ...] | None" = None
    seconds: "float | None" = None
    consistency_psnr: "float | None" = None
    consistency_map: "Path | None" = None


def check_input(path: Path, intensity: "Intensity | None", region: "Region | None") -> None:
    """Refuse an input whose pixels the settings cannot upscale, naming the file.

    Raises
    ------
    InputError
        For an unreadable image, invalid pixels, a value mapping that does not apply, or a region outside.
    """
    image = io.read_image(path).data
    try:
        validate_image(image)
        layout = image_layout(image.shape)
        normalizations_for(image, layout, intensity=intensity or AUTO)
        if region is not None:
            region.check_inside(layout.height, layout.width)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc


def is_done(job: FileJob) -> "Path | None":
    """The output of ``job`` already written (:func:`done_output`) and, when the job checks consistency,
    checked with the same degradation; None when there is none."""
    if job.consistency is None:
        return done_output(job.target, job.made_with)
    check_with = job.consistency.describe()
    for candidate in numbered_paths(job.target):
        if not candidate.exists():
            return None
        if done_output(candidate, job.made_with) == candidate:
            record = read_tiff_description(candidate) or {}
            if record.get("lr_consistency_degradation") == check_with:
                return candidate
    return None


def upscale_file(
    job: FileJob, model: LoadedModel, *, on_event: "Callable[[infer.TileEvent], None] | None" = None
) -> FileDone:
    """Read ``job.path``, upscale it with ``model`` and write the output TIFF atomically with its provenance
    (and the consistency map when asked), never overwriting.

    Parameters
    ----------
    job : FileJob
    model : LoadedModel
    on_event : callable, optional
        Called with each :class:`.infer.TileEvent`.

    Returns
    -------
    FileDone
    """
    config = job.config
    source = io.read_image(job.path)
    started = time.perf_counter()
    upscaling = infer.upscale(
        source.data,
        model,
        **config.arguments(),
        region=job.region,
    )
    result = drive(upscaling, on_event)
    seconds = time.perf_counter() - started
    provenance = result.provenance | {
        "input_path": str(job.path.resolve()),
        "input_sha256": job.made_with["input_sha256"],
    }
    check = None
    if job.consistency is not None:
        check = lr_consistency(
            result.image,
            source.data,
            degradation=job.consistency,
            intensity=Intensity.parse(result.provenance["intensity"]),
        )
        provenance |= check.provenance()
    scale = model.spec.scale
    out = io.write_tiff(
        job.target,
        result.image,
        pixel_size=None if source.pixel_size is None else source.pixel_size.scaled(1 / scale),
        description=provenance,
        names=io.numbered_paths(job.target),
    )
    done = FileDone(job.path, out, source.data.shape, result.image.shape, seconds)
    if check is None:
        return done
    map_path = out.with_name(f"{out.stem}_consistency.tif")
    where = io.write_tiff(
        map_path,
        check.map,
        pixel_size=source.pixel_size,
        description={"sr": str(out), "values": "|degrade(SR) - LR| / data range"} | check.provenance(),
        names=io.numbered_paths(map_path),
    )
    return FileDone(job.path, out, done.input_shape, done.output_shape, seconds, check.psnr, where)
