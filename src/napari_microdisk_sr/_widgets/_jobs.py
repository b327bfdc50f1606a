"""Running a core job generator in a napari thread worker, the same way in every widget.

The core's jobs are generators that yield events and return a result. Here they run in a
``napari.qt.threading`` worker; an exception inside the job (CUDA out-of-memory is a ``RuntimeError``) is
caught in the worker thread and delivered as a :class:`JobFailed` event, because an exception escaping a
generator worker can leave the GUI waiting in some superqt versions. Every outcome reaches the widget on the
main thread through exactly one of ``on_finished`` / ``on_failed``, after which the runner is idle again.
"""

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import torch
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_warning

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


def _guarded(job: Generator[Any, None, Any]) -> Generator[Any, None, Any]:
    try:
        return (yield from job)
    except Exception as exc:
        log.exception("job failed")
        yield JobFailed(describe_failure(exc))
        return None


class JobRunner:
    """Runs one job at a time for a widget and routes its events to callbacks on the main thread."""

    def __init__(self) -> None:
        self._worker: Any = None
        self._stop: StopFlag | None = None
        self._failed = False

    @property
    def running(self) -> bool:
        return self._worker is not None

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
        self._stop = StopFlag()
        self._failed = False

        def yielded(event: Any) -> None:
            if isinstance(event, JobFailed):
                self._failed = True
                show_error(event.message)
                on_failed(event.message)
            else:
                on_event(event)

        def returned(result: Any) -> None:
            if not self._failed:
                on_finished(result)

        def errored(exc: BaseException) -> None:
            message = describe_failure(exc)
            show_error(message)
            on_failed(message)

        worker = create_worker(_guarded, make_job(self._stop), _start_thread=False)
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

    def _clear(self) -> None:
        self._worker = None
        self._stop = None
