"""Helpers for the core's long jobs, which are generators that yield events and return a result."""

import threading
from collections.abc import Callable, Generator
from typing import Any, TypeVar

E = TypeVar("E")
R = TypeVar("R")


class StopFlag:
    """A thread-safe flag a caller sets to ask a running job to stop at its next step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def __bool__(self) -> bool:
        return self._event.is_set()


def drive(job: Generator[Any, None, R], on_event: "Callable[[Any], None] | None" = None) -> R:
    """Run a job generator to its end, passing each event to ``on_event``; return the job's result."""
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)


def relay(job: Generator[E, None, R], on_event: Callable[[E], None]) -> Generator[E, None, R]:
    """Pass a job's events on, showing each to ``on_event`` first; return the job's result.

    For a job run inside another (``result = yield from relay(job, seen.append)``) whose events the outer
    job also needs. Closing the relay closes the job.
    """
    try:
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                return stop.value
            on_event(event)
            yield event
    finally:
        job.close()
