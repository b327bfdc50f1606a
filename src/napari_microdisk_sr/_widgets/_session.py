"""What the four widgets of one viewer share: the crop sets made and the fine-tuning runs finished."""

import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from psygnal import Signal


@dataclass(frozen=True, eq=False)
class CropSetRef:
    """A set of microdisk crops made in this session (the images, and the folder they were written to).

    ``boxes`` are where the crops were cut from, ``(y0, x0, y1, x1)`` in the pixels of ``source_layer``'s
    data; empty when unknown.
    """

    name: str
    images: tuple[np.ndarray, ...]
    folder: "Path | None" = None
    source_layer: str = ""
    boxes: tuple[tuple[int, int, int, int], ...] = ()


@dataclass(frozen=True)
class RunRef:
    """A finished (or stopped) fine-tuning run whose model can be used by the other widgets."""

    name: str
    model_path: Path
    run_dir: Path


class Session:
    """Crop sets and runs of one viewer; widgets listen to the signals to refresh their choices."""

    crop_sets_changed = Signal()
    runs_changed = Signal()

    def __init__(self) -> None:
        self.crop_sets: list[CropSetRef] = []
        self.runs: list[RunRef] = []

    def add_crop_set(self, crop_set: CropSetRef) -> None:
        self.crop_sets.append(crop_set)
        self.crop_sets_changed.emit()

    def add_run(self, run: RunRef) -> None:
        self.runs = [r for r in self.runs if r.model_path != run.model_path] + [run]
        self.runs_changed.emit()


_SESSIONS: "weakref.WeakKeyDictionary[object, Session]" = weakref.WeakKeyDictionary()


def session_for(viewer: object) -> Session:
    """The session of ``viewer`` (created on first use, dropped with the viewer).

    napari hands each widget its own proxy of the viewer; the session belongs to the viewer behind them.
    """
    viewer = getattr(viewer, "__wrapped__", viewer)
    if viewer not in _SESSIONS:
        _SESSIONS[viewer] = Session()
    return _SESSIONS[viewer]
