"""The fine-tuning loop: :func:`open_run` loads a run, :class:`Run` trains it (driven by :mod:`.job`).

The loop reads top-down in :meth:`Run.train`: score the pretrained model (the baseline), then epoch after
epoch train the steps, validate, step the schedule, save the checkpoint, until the last epoch, early stopping,
a stop request or the time budget. The stop flag is checked before every step; an interrupted run saves a
checkpoint at the step it reached, and so does a job closed or dropped by its consumer. With several processes
(:mod:`.ddp`), each trains on its part of every batch, they agree on when to stop, and rank 0 alone writes.
"""

import contextlib
import logging
import math
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..device import describe_device
from ..errors import TrainingError
from ..io import write_json
from ..models import LoadedModel, load_model
from ..pairs import PairSampler
from ..progress import StopFlag
from .artifacts import MODEL_FILE, history_row, model_info, write_history, write_outputs
from .checkpoint import (
    CHECKPOINT_FILE,
    Progress,
    check_resumable,
    check_same_crops,
    check_same_processes,
    crops_fingerprint,
    read_checkpoint,
    restore,
    seed_everything,
    write_checkpoint,
)
from .config import CONFIG_FILE, FineTuneConfig
from .data import CropRecord, make_pairs
from .ddp import Ranks, describe_processes, process_batch
from .events import EventKind, FineTuneResult, Outcome, TrainEvent
from .trainer import Trainer, cpu_copy

log = logging.getLogger(__name__)

__all__ = ["Run", "open_run"]

_REPORT_INTERVAL_S = 0.5  # least time between two STEP events (each one waits for the device)
_PREFETCH_BATCHES = 2
"""Batches made ahead by a background thread when training on a GPU, which the host would otherwise leave idle
while making the next batch (see benchmarks/README.md). On the CPU the thread would only take cores from the
training."""


def open_run(
    images: list[np.ndarray],
    lr_images: "list[np.ndarray] | None",
    source: dict[str, Any],
    config: FineTuneConfig,
    run_dir: Path,
    ranks: Ranks,
    *,
    resume: bool,
) -> "Run":
    """Load the model and the data, and restore the checkpoint when resuming."""
    started = time.monotonic()
    parent = load_model(config.model, device="cpu")
    checkpoint = read_checkpoint(run_dir / CHECKPOINT_FILE) if resume else None
    crops_sha256 = crops_fingerprint(images, lr_images)
    if checkpoint is not None:
        check_resumable(checkpoint, config, parent, run_dir)
        check_same_crops(checkpoint, crops_sha256, len(images), run_dir)
        check_same_processes(checkpoint, ranks.size, run_dir)
    pairs = make_pairs(images, lr_images, config, parent.spec)
    batch = checkpoint["batch_size"] if checkpoint else process_batch(config, ranks)
    parent_weights = cpu_copy(parent.module.state_dict())
    trainer = Trainer(parent.module, config, ranks)
    progress, best_weights = Progress(), None
    if checkpoint is not None:
        best_weights = restore(checkpoint, trainer=trainer, progress=progress)
    else:
        seed_everything(config.seed)
    if ranks.main:
        write_json(run_dir / CONFIG_FILE, config.to_json(), overwrite=True)
    return Run(
        config=config,
        run_dir=run_dir,
        ranks=ranks,
        device=ranks.device,
        parent=parent,
        parent_weights=parent_weights,
        crops=CropRecord(source, tuple(pairs.train_idx), tuple(pairs.val_idx), crops_sha256),
        sampler=pairs.sampler,
        val=pairs.val,
        batch=batch,
        trainer=trainer,
        progress=progress,
        best_weights=best_weights,
        saved="" if checkpoint is None else progress.position(),
        started=started,
    )


@dataclass
class Run:
    """One fine-tuning run: its inputs, trainer, progress and outputs."""

    config: FineTuneConfig
    run_dir: Path
    ranks: Ranks  # the processes training together: this one alone, or those of a torchrun launch
    device: torch.device
    parent: LoadedModel
    parent_weights: dict[str, torch.Tensor]  # CPU copy, for weight_change.csv
    crops: CropRecord
    sampler: PairSampler
    val: "tuple[torch.Tensor, torch.Tensor] | None"  # the fixed validation pairs
    batch: int  # per process
    trainer: Trainer
    progress: Progress
    best_weights: "dict[str, torch.Tensor] | None"  # CPU copy of the best epoch's weights (early stopping)
    saved: str  # position of the last checkpoint written or read, "" if none
    started: float  # time.monotonic() when this call began (time budget)
    session_start: float = field(default_factory=time.monotonic)
    session_steps: int = 0  # steps trained by this call (speed, ETA)

    @property
    def global_batch(self) -> int:
        """The pairs of a step, over all the processes."""
        return self.batch * self.ranks.size

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.config.pairs_per_epoch // self.global_batch)

    # -- the loop -----------------------------------------------------------------------------------------

    def train(self, stop: "StopFlag | None") -> Generator[TrainEvent, None, tuple[Outcome, str]]:
        """Train to the end of the run or until interrupted; returns how it ended and why."""
        config, p = self.config, self.progress
        if self.val is not None and not p.history:
            yield self._baseline()
        while True:
            if p.epoch >= config.epochs:
                return Outcome.FINISHED, f"trained {p.epoch} epoch(s)"
            if config.early_stop is not None and p.bad_epochs >= config.early_stop:
                return Outcome.EARLY_STOPPED, (
                    f"early stopping: no better validation L1 for {p.bad_epochs} epoch(s); "
                    f"keeping epoch {p.best_epoch}"
                )
            interruption = self._interruption(stop)
            if interruption is not None:
                return (yield from self._interrupt(*interruption))
            epoch_start = time.monotonic() - p.epoch_seconds
            total, interruption = yield from self._train_steps(stop)
            if interruption is not None:
                return (yield from self._interrupt(*interruption))
            seconds = time.monotonic() - epoch_start
            train_l1 = self._checked_loss(total) / p.step_in_epoch
            val_l1, val_psnr = self._validate()
            lr = self.trainer.lr
            self.trainer.scheduler.step()
            self._end_epoch(train_l1, val_l1, val_psnr, lr, seconds)
            checkpoint_event = self._save_checkpoint()
            if self.ranks.main:
                write_history(self.run_dir, p.history)
            yield self._epoch_event(train_l1, val_l1, val_psnr, lr)
            yield checkpoint_event

    def _train_steps(
        self, stop: "StopFlag | None"
    ) -> Generator[TrainEvent, None, "tuple[torch.Tensor, tuple[Outcome, str] | None]"]:
        """Train the rest of the epoch under way; returns its loss sum (on the device) and the interruption
        that ended it early, if any."""
        p, device = self.progress, self.trainer.device
        epoch_start = time.monotonic() - p.epoch_seconds
        total = torch.tensor(p.epoch_loss, device=device)
        reported_loss, reported_steps, reported_at = p.epoch_loss, p.step_in_epoch, 0.0
        prefetch = 0 if device.type == "cpu" else _PREFETCH_BATCHES
        part = (self.ranks.rank, self.ranks.size)  # each process takes its part of every batch
        batches = self.sampler.batches(
            p.epoch,
            self.global_batch,
            device=device,
            first_batch=p.step_in_epoch,
            prefetch=prefetch,
            part=part,
        )
        with contextlib.closing(batches):  # on an interruption or an error too: stops the prefetch thread
            try:
                for lq, gt in batches:
                    interruption = self._interruption(stop)
                    if interruption is not None:
                        p.epoch_loss, p.epoch_seconds = (
                            self._checked_loss(total),
                            time.monotonic() - epoch_start,
                        )
                        return total, interruption  # the batches close before the checkpoint is written
                    pairs = min(self.global_batch, len(self.sampler) - p.step_in_epoch * self.global_batch)
                    total += self.trainer.step(lq, gt, pairs=pairs)
                    p.step_in_epoch += 1
                    self.session_steps += 1
                    now = time.monotonic()
                    if now - reported_at >= _REPORT_INTERVAL_S or p.step_in_epoch == self.steps_per_epoch:
                        loss = self._checked_loss(total)
                        window = (loss - reported_loss) / (p.step_in_epoch - reported_steps)
                        reported_loss, reported_steps, reported_at = loss, p.step_in_epoch, now
                        yield self.event(EventKind.STEP, loss=window)
            except GeneratorExit:  # abandoned at an event: the epoch so far goes into the checkpoint
                try:
                    p.epoch_loss, p.epoch_seconds = total.item(), time.monotonic() - epoch_start
                except Exception:  # a broken device: the close goes on, keep_position logs the rest
                    log.exception("the abandoned epoch's loss could not be read")
                raise
        return total, None

    def _baseline(self) -> TrainEvent:
        """Score the pretrained model on the validation pairs: epoch 0 of the history."""
        start = time.monotonic()
        val_l1, val_psnr = self.trainer.validate(*self.val, self.batch)
        if not math.isfinite(val_l1):
            raise TrainingError(
                f"the pretrained model {self.parent.name} gives non-finite outputs on the crops"
            )
        p = self.progress
        p.best_epoch, p.best_val_l1 = 0, val_l1
        if self.config.early_stop is not None:
            self.best_weights = self.trainer.weights()
        p.history.append(history_row(0, None, val_l1, val_psnr, None, time.monotonic() - start))
        return self.event(
            EventKind.BASELINE,
            val_l1=val_l1,
            val_psnr=val_psnr,
            message=f"pretrained: validation L1 {val_l1:.4f}, PSNR {val_psnr:.2f} dB",
        )

    def _validate(self) -> "tuple[float | None, float | None]":
        if self.val is None:
            return None, None
        val_l1, val_psnr = self.trainer.validate(*self.val, self.batch)
        if not math.isfinite(val_l1):
            raise self._diverged(f"the validation L1 became {val_l1}")
        return val_l1, val_psnr

    def _end_epoch(
        self, train_l1: float, val_l1: "float | None", val_psnr: "float | None", lr: float, seconds: float
    ) -> None:
        """Record the epoch: the history, and the best epoch for early stopping."""
        p = self.progress
        improved = p.end_epoch(history_row(p.epoch + 1, train_l1, val_l1, val_psnr, lr, seconds), val_l1)
        if improved and self.config.early_stop is not None:
            self.best_weights = self.trainer.weights()

    # -- interruptions and failures -----------------------------------------------------------------------

    def _interruption(self, stop: "StopFlag | None") -> "tuple[Outcome, str] | None":
        """Why to stop before the next step, if at all; the processes of a run agree (the first reason of
        any of them)."""
        budget = self.config.max_minutes
        spent = budget is not None and time.monotonic() - self.started >= 60.0 * budget
        why = self.ranks.most(2 if stop is not None and stop.is_set() else 1 if spent else 0)
        if why == 2:
            return Outcome.STOPPED, "stopped on request"
        if why == 1:
            return Outcome.TIME_BUDGET, f"time budget of {budget:g} min spent"
        return None

    def _interrupt(self, outcome: Outcome, reason: str) -> Generator[TrainEvent, None, tuple[Outcome, str]]:
        position = self.progress.position()
        if self.saved != position:
            yield self._save_checkpoint()
        return outcome, f"{reason} at {position}"

    def _checked_loss(self, total: torch.Tensor) -> float:
        """The epoch's loss sum so far, checked finite (this waits for the device)."""
        value = total.item()
        if not math.isfinite(value):
            raise self._diverged(f"the training loss became {value}")
        return value

    def _diverged(self, what: str) -> TrainingError:
        return TrainingError(
            f"training diverged at {self.progress.position()}: {what}; lower the learning rate "
            f"(now {self.trainer.lr:g}) or check the crops"
        )

    # -- reporting and saving -----------------------------------------------------------------------------

    @property
    def global_step(self) -> int:
        return self.progress.epoch * self.steps_per_epoch + self.progress.step_in_epoch

    def event(self, kind: EventKind, **fields: Any) -> TrainEvent:
        p = self.progress
        values: dict[str, Any] = {"lr": self.trainer.lr, "eta_s": self._eta()} | fields
        return TrainEvent(
            kind=kind,
            epoch=p.epoch + (1 if p.step_in_epoch else 0),
            epochs=self.config.epochs,
            step=self.global_step,
            steps=self.config.epochs * self.steps_per_epoch,
            **values,
        )

    def _epoch_event(
        self, train_l1: float, val_l1: "float | None", val_psnr: "float | None", lr: float
    ) -> TrainEvent:
        scores = "" if val_l1 is None else f", validation L1 {val_l1:.4f}, PSNR {val_psnr:.2f} dB"
        return self.event(
            EventKind.EPOCH,
            loss=train_l1,
            lr=lr,
            val_l1=val_l1,
            val_psnr=val_psnr,
            message=f"epoch {self.progress.epoch}/{self.config.epochs}: training L1 {train_l1:.4f}{scores}",
        )

    def _eta(self) -> "float | None":
        if not self.session_steps:
            return None
        left = max(0, self.config.epochs * self.steps_per_epoch - self.global_step)
        return (time.monotonic() - self.session_start) / self.session_steps * left

    def describe(self) -> str:
        p, spec = self.progress, self.parent.spec
        where = f"resuming at {p.position()}" if p.epoch or p.step_in_epoch else "starting"
        return (
            f"{where}: fine-tuning {self.parent.name} ({spec.arch} x{spec.scale}) on "
            f"{len(self.crops.train)} crop(s), {len(self.crops.validation)} kept for validation; "
            f"{self.config.epochs} epochs of {self.steps_per_epoch} steps (batch {self.batch}) on "
            f"{describe_device(self.device)}{describe_processes(self.ranks, self.batch)}"
        )

    def _save_checkpoint(self) -> TrainEvent:
        """Write the checkpoint atomically: a failure leaves the previous one in place."""
        if not self.trainer.weights_finite():
            raise self._diverged("some weights are no longer finite")
        path = self.run_dir / CHECKPOINT_FILE
        if self.ranks.main:
            write_checkpoint(
                path,
                config=self.config,
                parent=self.parent,
                crops=self.crops,
                batch_size=self.batch,
                processes=self.ranks.size,
                progress=self.progress,
                trainer=self.trainer,
                best_weights=self.best_weights,
            )
        self.saved = self.progress.position()
        return self.event(EventKind.CHECKPOINT, message=f"checkpoint ({self.saved}) saved to {path}")

    def keep_position(self) -> None:
        """Save a checkpoint at the position reached unless one is there already (the run was abandoned).

        Never raises: it runs while the generator closes, where an exception would replace the close.
        """
        if self.saved == self.progress.position():
            return
        try:
            self._save_checkpoint()
        except Exception:
            log.exception("the abandoned run's checkpoint could not be saved")
            return
        log.info("fine-tuning abandoned at %s: checkpoint saved in %s", self.saved, self.run_dir)

    def _saved_epoch(self) -> "int | None":
        """The epoch whose weights are saved; None for weights of no complete epoch (or the parent's)."""
        p = self.progress
        if self.config.early_stop is not None:
            return p.best_epoch
        return p.epoch if p.epoch and not p.step_in_epoch else None

    def finish(self, outcome: Outcome, reason: str) -> FineTuneResult:
        """Write the model, its sidecar, the history and the weight changes; return the result."""
        p = self.progress
        weights = self.best_weights if self.config.early_stop is not None else self.trainer.weights()
        info = model_info(
            name=self.run_dir.name,
            outcome=outcome,
            config=self.config,
            progress=p,
            batch_size=self.batch,
            processes=self.ranks.size,
            frozen=self.trainer.frozen,
            parent=self.parent,
            crops=self.crops,
            device=self.device,
            precision=self.trainer.amp_dtype,
        )
        model_path = self.run_dir / MODEL_FILE
        if self.ranks.main:
            spec, parent, module = self.parent.spec, self.parent_weights, self.trainer.module
            model_path = write_outputs(self.run_dir, weights, spec, info, p.history, parent, module)
        self.ranks.wait()  # every process returns once the outputs are written
        kept = f" (weights of epoch {p.best_epoch})" if self.config.early_stop is not None else ""
        return FineTuneResult(
            outcome=outcome,
            run_dir=self.run_dir,
            model_path=model_path,
            checkpoint_path=self.run_dir / CHECKPOINT_FILE if self.saved else None,
            epochs_done=p.epoch,
            best_epoch=p.best_epoch,
            history=tuple(p.history),
            message=f"{reason}; model{kept} saved to {model_path}",
            saved_epoch=self._saved_epoch(),
        )
