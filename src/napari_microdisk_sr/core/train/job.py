"""The fine-tuning job: :func:`fine_tune` checks its arguments and returns a generator that runs the loop.

The generator joins the other processes of a ``torchrun`` launch if there are any (:mod:`.ddp`), opens the
run (:func:`.loop.open_run`), yields its events, and returns its result. A failure once training has started
raises :class:`~..errors.TrainingError` saying what was kept; a job closed or dropped by its consumer saves a
checkpoint at the step it reached.
"""

import contextlib
import functools
import traceback
from collections.abc import Callable, Generator, Sequence
from pathlib import Path

import numpy as np

from ..crops import CropSet
from ..errors import InputError, TrainingError
from ..progress import StopFlag
from .artifacts import open_run_dir
from .config import FineTuneConfig
from .data import gather_crops
from .ddp import Ranks, join, process_rank
from .events import EventKind, FineTuneResult, Outcome, TrainEvent, describe_failure
from .loop import Run, open_run

__all__ = ["fine_tune"]


def fine_tune(
    crops: "CropSet | Sequence[np.ndarray]",
    config: FineTuneConfig,
    run_dir: "str | Path",
    *,
    stop: "StopFlag | None" = None,
    resume: bool = False,
    lr_crops: "CropSet | Sequence[np.ndarray] | None" = None,
) -> Generator[TrainEvent, None, FineTuneResult]:
    """Fine-tune a model on high-resolution crops, as a job generator.

    The arguments are checked when ``fine_tune`` is called. The job raises, at its first step and before
    any event, what makes the run impossible (unreadable weights, crops the model cannot use, a resume that
    does not match the run); it then yields :class:`TrainEvent` objects and returns a
    :class:`FineTuneResult`. A failure during training (a non-finite loss, running out of memory, a full
    disk) raises :class:`~..errors.TrainingError` after its last event, saying what went wrong and which
    checkpoint was kept (the last good one stays in place). A job closed before its end (``close()``, or
    dropped by its consumer) saves a checkpoint at the step it reached, so that ``resume`` continues from
    there.

    Parameters
    ----------
    crops : CropSet or sequence of (H, W), (H, W, 3) or (H, W, 4) ndarray
        High-resolution crops, one disk each (integer or float; see :mod:`..pairs` for the value mapping).
    config : FineTuneConfig
    run_dir : path
        Folder of the run's outputs, created if needed. A folder that holds a run (a checkpoint or a model)
        is refused unless ``resume`` is true.
    stop : StopFlag, optional
        Checked before every step: when set, the job saves a checkpoint (mid-epoch if need be) and the model
        so far, and returns a ``"stopped"`` result.
    resume : bool
        Continue the run in ``run_dir`` from its checkpoint, exactly as if it had not stopped. Only
        ``epochs``, ``max_minutes`` and ``device`` may differ from the run's configuration.
    lr_crops : CropSet or sequence of ndarray, optional
        Registered low-resolution acquisitions of the crops (paired training, no synthetic degradation),
        each exactly ``1 / scale`` of its crop's size.

    Returns
    -------
    generator of TrainEvent, returning FineTuneResult

    Raises
    ------
    InputError
        For a config that is not a :class:`FineTuneConfig`, or no crops.
    OutputError
        If ``run_dir`` cannot be created or written to.
    TrainingError
        If ``run_dir`` holds a run and ``resume`` is false, or holds none to resume; from the job, if
        training fails.
    """
    if not isinstance(config, FineTuneConfig):
        raise InputError(f"config must be a FineTuneConfig, got {type(config).__name__}")
    images, source = gather_crops(crops, "crops")
    lr_images = None if lr_crops is None else gather_crops(lr_crops, "LR crops")[0]
    if lr_images is not None and len(lr_images) != len(images):
        raise InputError(f"{len(images)} crop(s) but {len(lr_images)} LR crop(s): give one LR crop per crop")
    run_dir = Path(run_dir)
    created = open_run_dir(run_dir, resume=resume, prepare=process_rank() == 0)
    opener = functools.partial(open_run, images, lr_images, source, config, run_dir, resume=resume)
    return _job(opener, config.device, run_dir if created else None, stop)


def _job(
    opener: Callable[[Ranks], Run], device: str, created: "Path | None", stop: "StopFlag | None"
) -> Generator[TrainEvent, None, FineTuneResult]:
    """Join the other processes of a torchrun launch if any, open the run (in the worker that drives this
    generator), train it, and report it as events.

    ``created`` is the run folder if ``fine_tune`` made it: a run refused while opening leaves nothing.
    """
    with contextlib.ExitStack() as joined:  # left at the end: the process group is taken down
        try:
            ranks = joined.enter_context(join(device))
            run = opener(ranks)
        except BaseException:
            if created is not None and not any(created.iterdir()):
                created.rmdir()
            raise
        yield run.event(EventKind.STARTED, message=run.describe())
        try:
            outcome, reason = yield from run.train(stop)
            if outcome is not Outcome.FINISHED:
                yield run.event(EventKind.STOPPED, message=reason)
            result = run.finish(outcome, reason)
        except GeneratorExit:  # abandoned by its consumer (closed, or dropped mid-run)
            run.keep_position()  # keeps the steps trained
            raise
        except Exception as exc:  # the run is over: one message that says what was kept
            message = describe_failure(
                exc,
                run_dir=run.run_dir,
                saved=run.saved,
                device=run.device,
                batch=run.batch,
                patch=run.config.patch,
            )
            if ranks.size > 1:  # each process says what it saw: the first failure, or its peer's loss
                message = f"process {ranks.rank} of {ranks.size}: {message}"
                traceback.clear_frames(exc.__traceback__)  # its frames hold the run, freed as below
                del run
            raise TrainingError(message) from exc
        finished = run.event(EventKind.FINISHED, message=result.message)
        del run  # no module may hold the process group when it is taken down (see .ddp.join)
        yield finished
        return result
