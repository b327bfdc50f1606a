"""Unfinished OME-Zarr stores that a rerun resumes: what a store is being made with, its finished blocks,
and who writes it.

A job writes its store into a hidden temporary folder beside the target (see :mod:`.ome_zarr`). When it
starts, it records there what it is making (:func:`start_record`: the input's identity, the weights, every
setting that changes the pixels, the value mapping) and holds an ``flock`` on the folder while it runs.
Each block, once its chunk is written, leaves a small marker file (:func:`mark_done`), written atomically,
so that several processes can mark their blocks side by side and a block cut off by a kill has none.

A job killed outright (SIGKILL, a power cut, a batch system's time limit) leaves the folder and its
markers, and its lock goes with the process. A rerun with the same record takes such a folder
(:func:`claim_leftover`), keeps the marked blocks and computes the others. A folder whose lock is held is
being written by a live job and is never taken; one of other settings is left alone.
"""

import glob
import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .batch import OUTPUT_SETTINGS
from .images import Normalization
from .lazy import libraries

__all__ = [
    "START_KEY",
    "Claim",
    "claim_leftover",
    "clear_progress",
    "done_blocks",
    "hold",
    "json_ready",
    "mark_done",
    "read_mark",
    "start_record",
]

log = logging.getLogger(__name__)

START_KEY = "microdisk_sr_start"
"""The store attribute recording what an unfinished store is being made with (see :func:`start_record`)."""
_DONE = ".microdisk_sr_done"
"""The folder, inside a temporary store, of its finished blocks' markers."""


def start_record(
    settings: Mapping[str, Any],
    record: Mapping[str, Any],
    norms: "tuple[Normalization, Normalization | None]",
    *,
    block: int,
    levels: int,
) -> "dict[str, Any] | None":
    """What a store is made with, as its job starts: what a rerun must match to resume it.

    Parameters
    ----------
    settings : mapping
        The run's :data:`.batch.OUTPUT_SETTINGS` (see :func:`.batch.output_settings`).
    record : mapping
        The input's provenance: ``input_path`` and ``input_sha256`` or ``input_identity``.
    norms : (Normalization, Normalization or None)
        The whole image's value mappings.
    block, levels : int
        The block side and the number of pyramid levels.

    Returns
    -------
    dict or None
        JSON-ready; None when the weights or the input are not identified (a bare module, a layer held in
        memory): such a store cannot be recognised, so it is never resumed.
    """
    if settings.get("model_sha256") is None:
        return None
    if record.get("input_sha256") is None and record.get("input_identity") is None:
        return None
    mappings = [None if norm is None else [str(norm.dtype), norm.low, norm.high, norm.clip] for norm in norms]
    chosen = {key: settings[key] for key in OUTPUT_SETTINGS if key != "region"}
    return json_ready(chosen | dict(record) | {"block": block, "levels": levels, "normalizations": mappings})


def json_ready(value: Any) -> Any:
    """``value`` with numpy scalars, tuples and paths made JSON types (for a store's attributes)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


@dataclass
class Claim:
    """A temporary store this process writes, with the lock that says so (None where locks are missing).

    Attributes
    ----------
    path : Path
    lock : int or None
        The open descriptor holding the folder's ``flock``.
    reused : bool
        Whether the store was left by an earlier run (:func:`claim_leftover`).
    """

    path: Path
    lock: "int | None"
    reused: bool = False

    def release(self) -> None:
        """Let go of the lock (a job does it when it ends, however)."""
        if self.lock is not None:
            os.close(self.lock)
            self.lock = None


def hold(path: Path) -> Claim:
    """Lock the new temporary store ``path`` for this process (see :func:`claim_leftover`)."""
    lock = _lock(path)
    if lock is None:
        log.warning("cannot lock %s: a rerun after a kill will not resume it", path)
    return Claim(path, lock)


def claim_leftover(target: Path, start: Mapping[str, Any]) -> "Claim | None":
    """Take an unfinished store of ``target`` recorded with ``start`` whose job is gone, or None.

    The hidden temporary stores beside ``target`` are tried in name order. One of another record (other
    input, weights or settings) is left alone, with a warning naming it (delete it when no run writes it); one
    whose lock is held is being written by a live job. The lock taken is kept by the returned claim, so no
    other process takes the same store.
    """
    pattern = os.path.join(glob.escape(str(target.parent)), f".{glob.escape(target.name)}.*.tmp")
    for found in sorted(glob.glob(pattern)):
        path = Path(found)
        recorded = _recorded_start(path)
        if recorded != start:
            log.warning(
                "%s is an unfinished store %s: it is not reused; delete it when no run is writing it",
                path,
                "that records no run (cut off as it began)"
                if recorded is None
                else "of another run (other input, model or settings)",
            )
            continue
        lock = _lock(path)
        if lock is None:
            log.info("%s is being written by another run: not taken", path)
            continue
        if not _still_at(lock, path):  # finished and renamed between the look and the lock
            os.close(lock)
            continue
        return Claim(path, lock, reused=True)
    return None


def _recorded_start(path: Path) -> "dict[str, Any] | None":
    zarr, _ = libraries()
    try:
        recorded = zarr.open_group(str(path), mode="r").attrs.get(START_KEY)
    except Exception:  # a store cut off as it was created: its metadata may be anything
        return None
    return recorded if isinstance(recorded, dict) else None


def _lock(path: Path) -> "int | None":
    """An open descriptor of the folder ``path`` holding its exclusive ``flock``, or None when it is held
    elsewhere, gone, or cannot be locked here (no ``fcntl``, a share without locks)."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        return None
    return descriptor


def _still_at(descriptor: int, path: Path) -> bool:
    """Whether the folder open as ``descriptor`` is still the one at ``path``."""
    try:
        return os.stat(path).st_ino == os.fstat(descriptor).st_ino
    except OSError:
        return False


def mark_done(store: "str | os.PathLike[str]", name: str, record: "Mapping[str, Any] | None" = None) -> None:
    """Record that block ``name`` of ``store`` is written, with ``record`` (its provenance), atomically.

    Call it after the block's chunk is written: the marker is written under a name of its own and renamed
    into place, so it is either whole or absent.
    """
    folder = Path(store, _DONE)
    folder.mkdir(exist_ok=True)
    draft = folder / f".{name}.{uuid.uuid4().hex}"
    draft.write_text(json.dumps(json_ready(dict(record or {}))))
    os.replace(draft, folder / name)


def done_blocks(store: "str | os.PathLike[str]") -> set[str]:
    """The names of the blocks of ``store`` marked written (see :func:`mark_done`)."""
    folder = Path(store, _DONE)
    if not folder.is_dir():
        return set()
    return {entry.name for entry in os.scandir(folder) if not entry.name.startswith(".")}


def read_mark(store: "str | os.PathLike[str]", name: str) -> dict[str, Any]:
    """What :func:`mark_done` recorded with block ``name`` of ``store``."""
    return json.loads(Path(store, _DONE, name).read_text())


def clear_progress(store: "str | os.PathLike[str]") -> None:
    """Remove the markers and the start record of the complete ``store``, once it is in place."""
    zarr, _ = libraries()
    shutil.rmtree(Path(store, _DONE), ignore_errors=True)
    attributes = zarr.open_group(str(store), mode="r+").attrs
    if START_KEY in attributes:
        del attributes[START_KEY]
