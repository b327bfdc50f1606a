"""Batch runs over folders of images: which inputs, which share of them, and which are already done.

A plate scan is a folder of fields; a cluster array job or several machines on one file system split it with
``--shard I/N`` and no coordinator, and a rerun after an interruption skips every input whose output is there
with a matching provenance (the same input pixels, model weights and settings), so only what is missing or
changed is computed again. Outputs are written atomically, so an interrupted run leaves no half-written file
to be mistaken for a result.
"""

import glob
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import InputError
from .io import numbered_paths, read_tiff_description
from .lazy import is_store, read_store_provenance

__all__ = ["IMAGE_SUFFIXES", "OUTPUT_SETTINGS", "done_output", "expand_inputs", "parse_shard", "shard"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
"""The files of a folder that are taken as images."""
_GLOB_CHARS = "*?["
OUTPUT_SETTINGS = ("model_sha256", "scale", "tile", "tile_pad", "half", "bit_depth", "region")
"""What an output must have been made with to count as done, besides its input's SHA-256: the weights and
every setting that changes its pixels (the device does not, beyond float rounding)."""


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
