"""Running a core job generator in a napari thread worker, the same way in every widget.

The core's jobs are generators that yield events and return a result. Here they run in a
``napari.qt.threading`` worker; an exception inside the job (CUDA out-of-memory is a ``RuntimeError``) is
caught in the worker thread and delivered as a :class:`JobFailed` event, because an exception escaping a
generator worker can leave the GUI waiting in some superqt versions. Every outcome reaches the widget on the
main thread through exactly one of ``on_finished`` / ``on_failed``, after which the runner is idle again.

A job outlives neither its widget nor its window. Closing the widget's dock asks the job to stop at its next
step. Closing the viewer does the same through napari's task list (which also asks the user first when the
window is closed by hand), and waits a while for jobs that have something to keep, so that a fine-tuning
run writes its checkpoint and model before the application quits. Events that arrive after the widget is
gone are dropped.
"""

import logging
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import torch
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QWidget

from ..core.errors import MicrodiskSRError
from ..core.progress import StopFlag

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobFailed:
    """The last event of a job that raised: a one-line message that says what to do."""

    message: str


def describe_failure(exc: BaseException) -> str:
    """A one-line, actionable message for an exception raised by a job."""
    if isinstance(exc, MicrodiskSRError):
        return str(exc)
    cause = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return f"{cause} - use a smaller tile or batch, or the CPU"
    return f"{cause} (see the log for details)"


def _guarded(job: Generator[Any, None, Any], done: threading.Event) -> Generator[Any, None, Any]:
    try:
        return (yield from job)
    except Exception as exc:
        log.exception("job failed")
        yield JobFailed(describe_failure(exc))
        return None
    finally:
        done.set()


class _JobWorker(GeneratorWorker):
    """A generator worker whose ``quit`` asks the job to stop at its next step instead of dropping it.

    napari calls ``quit`` for the tasks still running when its window closes; a job dropped at an event would
    lose what it was about to keep (a fine-tuning run its model).
    """

    quit_gracefully: "Callable[[], None] | None" = None

    def quit(self) -> None:
        if self.quit_gracefully is None:
            super().quit()
        else:
            self.quit_gracefully()


class _RemovalWatch(QObject):
    """Calls ``on_removed`` when ``widget`` loses its parent (napari takes a closed dock's widget out)."""

    def __init__(self, widget: QWidget, on_removed: Callable[[], None]) -> None:
        super().__init__(widget)
        self._on_removed = on_removed
        widget.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ParentChange and watched.parent() is None:
            self._on_removed()
        return False


class JobRunner:
    """Runs one job at a time for a widget and routes its events to callbacks on the main thread.

    Parameters
    ----------
    owner : QWidget
        The widget whose jobs these are: closing it stops them, and its callbacks are not called once it is
        deleted.
    name : str
        What the user calls the widget, for the message shown when it is closed during a job.
    wait_on_close_s : float
        How long closing the viewer waits for a job to stop (0: not at all; for jobs with nothing to keep).
    """

    def __init__(self, owner: QWidget, *, name: str, wait_on_close_s: float = 0.0) -> None:
        self._worker: Any = None
        self._stop: StopFlag | None = None
        self._done: threading.Event | None = None
        self._failed = False
        self._owner_alive = True
        self._closed = False
        self._name = name
        self._wait_on_close_s = wait_on_close_s
        owner.destroyed.connect(self._owner_destroyed)
        self._removal_watch = _RemovalWatch(owner, self._owner_removed)

    @property
    def running(self) -> bool:
        return self._worker is not None

    @property
    def closed(self) -> bool:
        """Whether the widget was closed (taken out of its dock, or deleted)."""
        return self._closed

    @property
    def worker(self) -> Any:
        """The napari worker of the job in progress (``None`` when idle)."""
        return self._worker

    def start(
        self,
        make_job: Callable[[StopFlag], Generator[Any, None, Any]],
        *,
        on_event: Callable[[Any], None],
        on_finished: Callable[[Any], None],
        on_failed: Callable[[str], None],
    ) -> bool:
        """Start ``make_job(stop_flag)`` in a worker; ``False`` (and a warning) if a job is running."""
        if self.running:
            show_warning("a job is already running: wait for it or stop it first")
            return False
        self._stop, self._done = StopFlag(), threading.Event()
        self._failed = False

        def yielded(event: Any) -> None:
            if not self._owner_alive:
                return
            if isinstance(event, JobFailed):
                self._failed = True
                show_error(event.message)
                on_failed(event.message)
            else:
                on_event(event)

        def returned(result: Any) -> None:
            if self._owner_alive and not self._failed:
                on_finished(result)

        def errored(exc: BaseException) -> None:
            message = describe_failure(exc)
            show_error(message)
            if self._owner_alive:
                on_failed(message)

        stop, done = self._stop, self._done
        worker = create_worker(_guarded, make_job(stop), done, _start_thread=False, _worker_class=_JobWorker)

        def quit_gracefully() -> None:
            """napari's cancel when the viewer closes (it cancels every task it ever listed, finished ones
            too): stop this job, and wait a while for what it keeps; a finished job returns at once."""
            stop.set()
            if self._wait_on_close_s > 0 and not done.wait(self._wait_on_close_s):
                log.warning(
                    "%s: the job did not stop within %g s of closing", self._name, self._wait_on_close_s
                )

        worker.quit_gracefully = quit_gracefully
        worker.yielded.connect(yielded)
        worker.returned.connect(returned)
        worker.errored.connect(errored)
        worker.finished.connect(self._clear)
        self._worker = worker
        worker.start()
        return True

    def stop(self) -> None:
        """Ask the job to stop at its next step (it keeps what it must, e.g. a checkpoint)."""
        if self._stop is not None:
            self._stop.set()

    def _owner_removed(self) -> None:
        self._closed = True
        if self.running:
            self.stop()
            show_info(f"{self._name} was closed: its job stops at its next step")

    def _owner_destroyed(self) -> None:
        self._owner_alive, self._closed = False, True
        self.stop()

    def _clear(self) -> None:
        self._worker = None
        self._stop = None
        self._done = None
