"""What a fine-tuning job reports: progress events while it runs, and the result it returns.

A job yields :class:`TrainEvent` objects and returns a :class:`FineTuneResult` whose :class:`Outcome` says how
the run ended. A run that fails raises :class:`~..errors.TrainingError` instead, whose message says what went
wrong and which checkpoint was kept (the one way every job of the package reports a failure).
"""

import logging
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from ..device import describe_device
from ..errors import MicrodiskSRError
from .checkpoint import CHECKPOINT_FILE

log = logging.getLogger(__name__)

__all__ = ["EventKind", "FineTuneResult", "Outcome", "TrainEvent", "describe_failure"]


class EventKind(Enum):
    """What a :class:`TrainEvent` reports."""

    STARTED = "started"
    """The job has loaded everything and starts (or resumes) training; ``message`` describes the run."""
    BASELINE = "baseline"
    """The pretrained model scored on the validation set (``val_l1``, ``val_psnr``), before any step."""
    STEP = "step"
    """Training steps done: ``loss`` is the mean L1 since the previous STEP event (at most two per second)."""
    EPOCH = "epoch"
    """An epoch ended: ``loss`` is its mean training L1, with the validation scores if there is a set."""
    CHECKPOINT = "checkpoint"
    """``checkpoint.pth`` was written (``message`` says where)."""
    STOPPED = "stopped"
    """Training ends before its last epoch: asked to stop, time budget spent, or early stopping."""
    FINISHED = "finished"
    """The last event of a run: the outputs are written (``message`` says where)."""


class Outcome(str, Enum):
    """How a run that did not fail ended (a failed run raises :class:`~..errors.TrainingError`)."""

    FINISHED = "finished"
    STOPPED = "stopped"
    EARLY_STOPPED = "early_stopped"
    TIME_BUDGET = "time_budget"


@dataclass(frozen=True)
class TrainEvent:
    """Progress of a fine-tuning job.

    Attributes
    ----------
    kind : EventKind
    epoch, epochs : int
        The epoch under way (or just ended), counted from 1 (0 before the first step), and the run's epochs.
    step, steps : int
        Training steps done so far in the run (resumed runs included) and in the whole run.
    loss : float or None
        Training L1 (see :class:`EventKind`).
    lr : float or None
        Current learning rate (of the body, with layer-wise rates).
    eta_s : float or None
        Estimated seconds left, from the speed of this call.
    val_l1, val_psnr : float or None
        Validation L1 and mean PSNR (dB) of the weights that would be saved (the EMA when enabled).
    message : str
        A one-line description for people.
    """

    kind: EventKind
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: "float | None" = None
    lr: "float | None" = None
    eta_s: "float | None" = None
    val_l1: "float | None" = None
    val_psnr: "float | None" = None
    message: str = ""


@dataclass(frozen=True)
class FineTuneResult:
    """What a fine-tuning job returns.

    Attributes
    ----------
    outcome : Outcome
    run_dir : Path
    model_path : Path
        The saved model (``model.pth``).
    checkpoint_path : Path or None
        The last good checkpoint, from which ``resume=True`` continues; None if none was written.
    epochs_done : int
        Complete epochs trained.
    best_epoch : int or None
        Epoch with the lowest validation L1 (0: the pretrained weights); None without validation.
    history : tuple of dict
        The rows of ``history.csv``.
    saved_epoch : int or None
        The epoch whose weights were saved (the best one with early stopping, else the last one when the run
        ended at an epoch's end); None for weights of no complete epoch.
    message : str
        One line: why the run ended and where the model went.
    """

    outcome: Outcome
    run_dir: Path
    model_path: Path
    checkpoint_path: "Path | None"
    epochs_done: int
    best_epoch: "int | None"
    history: tuple[dict[str, Any], ...]
    message: str
    saved_epoch: "int | None" = None

    def verdict(self) -> "str | None":
        """Whether fine-tuning helped, in one line: the validation PSNR of the pretrained model (epoch 0)
        against that of the weights saved; None without validation.

        Examples: ``"validation PSNR 22.80 -> 23.50 dB (+0.70 dB), pretrained -> fine-tuned (epoch 7)"``;
        a loss says ``"no better than the pretrained model"``.
        """
        scores = {row["epoch"]: row["val_psnr"] for row in self.history if row.get("val_psnr") is not None}
        if 0 not in scores or self.saved_epoch not in scores or self.saved_epoch == 0:
            return None
        before, after = float(scores[0]), float(scores[self.saved_epoch])
        gain = after - before
        text = (
            f"validation PSNR {before:.2f} -> {after:.2f} dB ({gain:+.2f} dB), pretrained -> fine-tuned "
            f"(epoch {self.saved_epoch})"
        )
        return text if gain > 0 else f"{text}: no better than the pretrained model"


def describe_failure(
    exc: Exception, *, run_dir: Path, saved: str, device: torch.device, batch: int, patch: int
) -> str:
    """The one-line report of a failed run, logged with its traceback when it is unexpected.

    Parameters
    ----------
    exc : Exception
        What ended the run.
    run_dir : Path
    saved : str
        The position of the last good checkpoint in ``run_dir``, "" if none was written.
    device : torch.device
    batch, patch : int
        The run's batch size and patch size, which an out-of-memory error suggests lowering.
    """
    if isinstance(exc, MicrodiskSRError):
        log.error("fine-tuning failed: %s", exc)
        what = str(exc)
    elif isinstance(exc, torch.OutOfMemoryError):
        log.error("fine-tuning ran out of memory", exc_info=exc)
        what = (
            f"out of memory on {describe_device(device)}; lower the batch size (now {batch}) "
            f"or the patch size (now {patch})"
        )
    elif isinstance(exc, OSError):
        log.error("fine-tuning could not write its outputs", exc_info=exc)
        what = f"could not write to {run_dir}: {exc.strerror or exc}"
    else:
        log.exception("fine-tuning failed", exc_info=exc)
        what = f"training failed: {type(exc).__name__}: {exc}"
    kept = (
        f"the last good checkpoint ({saved}) is kept in {run_dir / CHECKPOINT_FILE}; resume from it"
        if saved
        else "no checkpoint was written"
    )
    return f"{what}; {kept}"
