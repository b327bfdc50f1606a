"""Reusing a loaded model from one job to the next (:class:`ModelCache`), so that a network is loaded once."""

import os
import threading
from pathlib import Path
from typing import Any

from .models import REGISTRY, LoadedModel, load_model, sidecar_path

__all__ = ["ModelCache"]


class ModelCache:
    """The last model loaded on the CPU, reused while its weights (and their sidecar) are unchanged.

    Loading x4plus takes about half a second, and a model reused keeps its copy on the device
    (:func:`~.infer.upscale` caches it per :class:`LoadedModel`), so a user who upscales one layer after
    another loads and copies the network once. A changed, replaced or deleted file is loaded anew (its size
    and modification time are compared). Only the last model is kept, to hold one network in memory.
    Thread-safe: one load at a time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._model: LoadedModel | None = None

    def load(self, name_or_path: "str | os.PathLike[str]") -> LoadedModel:
        """:func:`load_model` on the CPU, or the model it gave last time, for the same unchanged weights."""
        key = _cache_key(name_or_path)
        with self._lock:
            if self._model is None or key is None or key != self._key:
                self._model = self._key = None  # the old network is freed before the new one loads
                self._model = load_model(name_or_path)
                self._key = key
            return self._model


def _cache_key(name_or_path: "str | os.PathLike[str]") -> "tuple[Any, ...] | None":
    """What identifies the weights behind ``name_or_path``; None for a file that cannot be read."""
    key = os.fspath(name_or_path)
    if key in REGISTRY:
        return ("registry", key)
    path = Path(key).resolve()
    try:
        stat = path.stat()
    except OSError:
        return None
    try:
        side = sidecar_path(path).stat()
        sidecar: tuple[int, int] | None = (side.st_mtime_ns, side.st_size)
    except OSError:
        sidecar = None
    return ("file", str(path), stat.st_mtime_ns, stat.st_size, stat.st_ino, sidecar)
