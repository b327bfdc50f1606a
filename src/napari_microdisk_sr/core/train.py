"""Fine-tuning a super-resolution network on microdisk crops: the study's recipe, cancellable and resumable.

The defaults of :class:`FineTuneConfig` are the study's recipe: the pretrained Real-ESRGAN x4plus loaded
strictly; (LR, HR) pairs of 128 px HR patches cut from the crops, flipped and rotated, their LR side made by
bicubic down-sampling (:mod:`.pairs`); L1 loss; Adam (lr 1e-4, betas 0.9 / 0.999); the learning rate halved
every 16 epochs; 50 epochs of 500 pairs, in batches of 4 (2 on the CPU). Options: the realistic microscope
degradation, a validation set split by disk (the pretrained model's score is recorded first, as the
baseline), early stopping, the study's layer-wise learning rates, frozen leading blocks, an exponential
moving average (EMA) of the weights, mixed precision on CUDA and a time budget.

:func:`fine_tune` checks its arguments and returns the job, a generator that yields :class:`TrainEvent`
objects and returns a :class:`FineTuneResult`; the command line, the widget and the tests drive the same job.
The job checks its stop flag before every step. Everything that goes wrong once training has started (a
non-finite loss, running out of memory, a full disk) ends it with an :attr:`EventKind.ERROR` event and a
``"failed"`` result, never an exception, and leaves the last good checkpoint in place.

A run folder holds:

``config.json``
    The :class:`FineTuneConfig` of the run (see :func:`read_run_config`).
``checkpoint.pth``
    Everything needed to continue the run exactly (weights, optimiser, scheduler, EMA, gradient scaler,
    progress inside the epoch, random states, history), rewritten atomically after every epoch and when the
    run stops. It holds only tensors and plain Python values, so ``torch.load(weights_only=True)`` reads it.
``history.csv``
    One row per epoch: ``epoch, train_l1, val_l1, val_psnr, lr, seconds``; epoch 0 is the pretrained model
    on the validation set.
``model.pth`` and ``model.json``
    The fine-tuned weights as ``{"params_ema": state_dict}`` with basicsr's key names (Real-ESRGAN's own
    convention, so its tools load the file unchanged) and, beside them, the architecture, the configuration,
    the history and the provenance (parent weights' SHA-256, crops, seed, versions, device).
``weight_change.csv``
    The mean, largest and smallest absolute change of the weights of each layer group (first convolution,
    body, upsampler) from the parent weights.
"""

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import platform
import random
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import StepLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .. import __version__
from .archs import RRDBNet, SRVGGNetCompact
from .crops import CropSet
from .device import DEVICE_CHOICES, cpu_has_native_bf16, describe_device, is_device_name, resolve_device
from .errors import InputError, MicrodiskSRError, TrainingError
from .images import check_bit_depth, check_finite
from .io import atomic_write, ensure_writable_dir, write_csv, write_json
from .models import DEFAULT_MODEL, LoadedModel, ModelSpec, load_model, save_model
from .pairs import (
    PairConfig,
    PairSampler,
    check_degradation,
    check_small_crops,
    split_by_disk,
    validation_pairs,
)
from .progress import StopFlag

log = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "DEFAULT_PATIENCE",
    "HISTORY_FILE",
    "LAYER_GROUPS",
    "MODEL_FILE",
    "RESUMABLE_CHANGES",
    "STUDY_LAYER_LRS",
    "WEIGHT_CHANGE_FILE",
    "EventKind",
    "FineTuneConfig",
    "FineTuneResult",
    "RunState",
    "TrainEvent",
    "fine_tune",
    "freeze_first_blocks",
    "layer_groups",
    "read_run_config",
]

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pth"
HISTORY_FILE = "history.csv"
MODEL_FILE = "model.pth"
WEIGHT_CHANGE_FILE = "weight_change.csv"
_RUN_MARKERS = (CHECKPOINT_FILE, MODEL_FILE)  # a folder holding either holds a run
HISTORY_FIELDS = ("epoch", "train_l1", "val_l1", "val_psnr", "lr", "seconds")
WEIGHT_CHANGE_FIELDS = ("group", "parameters", "mean_abs_change", "max_abs_change", "min_abs_change")

LAYER_GROUPS = ("first", "body", "upsampler")
"""Layer groups of layer-wise learning rates and of ``weight_change.csv``: the first convolution, the body,
and the upsampler with the last convolution."""
STUDY_LAYER_LRS = (1e-5, 1e-4, 1e-3)
"""The study's layer-wise learning rates, in the order of :data:`LAYER_GROUPS`."""
DEFAULT_PATIENCE = 5
"""Epochs without a better validation L1 before early stopping, when it is asked for without a number."""

_CHECKPOINT_FORMAT = "napari-microdisk-sr fine-tuning checkpoint"
_CHECKPOINT_VERSION = 1
RESUMABLE_CHANGES = ("epochs", "max_minutes", "device")
"""The settings a resumed run may change; the others stay the run's own."""
_REPORT_INTERVAL_S = 0.5  # least time between two STEP events (each one waits for the device)
_GPU_BATCH, _CPU_BATCH = 4, 2
_PREFETCH_BATCHES = 2
"""Batches made ahead by a background thread when training on a GPU, which the host would otherwise leave idle
while making the next batch (0.15 ms per bicubic pair, 0.5 ms per realistic one on this project's CPU). On the
CPU the thread would only take cores from the training."""
_PSNR_MSE_FLOOR = 1e-10  # a perfect patch scores 100 dB rather than infinity


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def autocast_dtype(device: torch.device, amp: "bool | None") -> "torch.dtype | None":
    """The autocast dtype that training uses on ``device`` for the ``amp`` setting; None: float32.

    ``amp=None`` (automatic) means bfloat16 on CPUs with native bfloat16 and float32 elsewhere; ``amp=True``
    means bfloat16 on CUDA where supported (else float16, with a loss scaler) and on the CPU.
    """
    if device.type == "cuda":
        if not amp:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and (amp or (amp is None and cpu_has_native_bf16())):
        return torch.bfloat16
    return None


@dataclass(frozen=True)
class FineTuneConfig:
    """Settings of a fine-tuning run; the defaults are the study's recipe.

    Attributes
    ----------
    model : str
        Registry name (see :data:`~.models.REGISTRY`) or weights file of the network to fine-tune, loaded
        strictly (every key, every shape).
    epochs : int
        Epochs to train.
    lr : float
        Adam's learning rate (of every layer unless ``layer_lrs`` is given).
    betas : (float, float)
        Adam's moment decays.
    lr_step, lr_gamma : int, float
        The learning rate is multiplied by ``lr_gamma`` every ``lr_step`` epochs (``StepLR``).
    batch_size : int or None
        Pairs per step; None picks 4 on a GPU and 2 on the CPU.
    patch : int
        Side of the square HR patches, a multiple of the model's scale.
    pairs_per_epoch : int
        Training pairs per epoch (pairs are drawn afresh every epoch).
    augment : bool
        Random flips and quarter turns of each pair.
    degradation : {"bicubic", "realistic"}
        How LR patches are made from HR ones (see :func:`~.pairs.degrade`).
    small_crops : {"pad", "refuse"}
        Mirror-pad crops smaller than the patch, or refuse them.
    val_fraction : float
        Share of the crops (whole disks, not patches) kept apart for validation, in ``[0, 1)``; 0 disables
        validation.
    early_stop : int or None
        Patience: stop once the validation L1 has not improved for this many epochs, and save the weights of
        the best epoch (the pretrained weights count as epoch 0). None disables early stopping.
    layer_lrs : (float, float, float) or None
        Learning rates of the first convolution, the body and the upsampler with the last convolution
        (:data:`LAYER_GROUPS`); :data:`STUDY_LAYER_LRS` are the study's. None uses ``lr`` everywhere.
    freeze_blocks : int
        Freeze the first convolution and the first N RRDB blocks (SRVGGNetCompact: its first N convolutions
        with their activations), so that neither their weights nor their gradients are computed.
    ema : bool
        Keep an exponential moving average of the weights, validate it and save it instead of the weights.
    ema_decay : float
        Decay of the moving average per step, in ``[0, 1)``.
    amp : bool or None
        Mixed precision. None (the default) chooses per device: bfloat16 autocast on a CPU with native
        bfloat16 instructions (AVX512-BF16 or AMX: 1.8x faster x4plus steps on such a CPU, held-out PSNR
        unchanged to 0.1 dB), float32 elsewhere. True: bfloat16 autocast on CUDA where the GPU supports it,
        else float16 with loss scaling, and bfloat16 on any CPU. False: float32 everywhere. On CUDA it is
        off by default because at these batch sizes an eager training step is bound by kernel launches, not
        arithmetic, and autocast's casts cost more than they save (H200, samples/s, float32 (TF32
        convolutions) vs bfloat16: x4plus 39 vs 37 at batch 4, 167 vs 111 at batch 16, 306 vs 307 at batch
        32; the compact model 759 vs 300 at batch 4, 3735 vs 4193 at batch 64).
    device : str
        ``"auto"`` (CUDA, then Apple MPS, then the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    seed : int
        Seed of the pairs, of the train/validation split and of torch, numpy and Python's random numbers.
    max_minutes : float or None
        Time budget of one call: training ends cleanly after the step during which it runs out, and saves.
    bit_depth : int or None
        Significant bits of unsigned integer crops, e.g. 12 for a 12-bit camera writing uint16 files (see
        :func:`.images.value_range`); None maps integers by their dtype's full range. Give the same to
        :func:`.infer.upscale` and :func:`.metrics.evaluate` for images of that camera.
    """

    model: str = DEFAULT_MODEL
    epochs: int = 50
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    lr_step: int = 16
    lr_gamma: float = 0.5
    batch_size: "int | None" = None
    patch: int = 128
    pairs_per_epoch: int = 500
    augment: bool = True
    degradation: str = "bicubic"
    small_crops: str = "pad"
    val_fraction: float = 0.1
    early_stop: "int | None" = None
    layer_lrs: "tuple[float, float, float] | None" = None
    freeze_blocks: int = 0
    ema: bool = False
    ema_decay: float = 0.999
    amp: "bool | None" = None
    device: str = "auto"
    seed: int = 0
    max_minutes: "float | None" = None
    bit_depth: "int | None" = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise InputError(f"model must be a registry name or a weights file, got {self.model!r}")
        for name, least in (("epochs", 1), ("lr_step", 1), ("patch", 1), ("pairs_per_epoch", 1)):
            value = getattr(self, name)
            if not _is_int(value) or value < least:
                raise InputError(f"{name} must be a whole number of at least {least}, got {value!r}")
        if not _is_number(self.lr) or not math.isfinite(self.lr) or self.lr <= 0:
            raise InputError(f"lr must be a positive number (the study's is 1e-4), got {self.lr!r}")
        if len(self.betas) != 2 or not all(_is_number(b) and 0 <= b < 1 for b in self.betas):
            raise InputError(
                f"betas must be two numbers in [0, 1) (Adam's are 0.9, 0.999), got {self.betas!r}"
            )
        if not _is_number(self.lr_gamma) or not 0 < self.lr_gamma <= 1:
            raise InputError(f"lr_gamma must be in (0, 1] (1 keeps the learning rate), got {self.lr_gamma!r}")
        if self.batch_size is not None and (not _is_int(self.batch_size) or self.batch_size < 1):
            raise InputError(
                f"batch_size must be a whole number of at least 1, or None (auto), got {self.batch_size!r}"
            )
        if self.batch_size is not None and self.batch_size > self.pairs_per_epoch:
            raise InputError(
                f"batch_size {self.batch_size} is larger than the {self.pairs_per_epoch} pairs of an epoch; "
                "lower the batch size or raise pairs_per_epoch"
            )
        check_degradation(self.degradation)
        check_small_crops(self.small_crops)
        if not _is_number(self.val_fraction) or not 0 <= self.val_fraction < 1:
            raise InputError(
                f"val_fraction must be in [0, 1) (0 disables validation), got {self.val_fraction!r}"
            )
        if self.early_stop is not None:
            if not _is_int(self.early_stop) or self.early_stop < 1:
                raise InputError(
                    f"early_stop must be a patience of at least 1 epoch, or None, got {self.early_stop!r}"
                )
            if self.val_fraction == 0:
                raise InputError(
                    "early stopping needs a validation set: set val_fraction > 0 or early_stop=None"
                )
        if self.layer_lrs is not None and (
            len(self.layer_lrs) != len(LAYER_GROUPS)
            or not all(_is_number(v) and math.isfinite(v) and v > 0 for v in self.layer_lrs)
        ):
            raise InputError(
                f"layer_lrs must be three positive learning rates (first conv, body, upsampler), e.g. "
                f"{STUDY_LAYER_LRS}, or None; got {self.layer_lrs!r}"
            )
        if not _is_int(self.freeze_blocks) or self.freeze_blocks < 0:
            raise InputError(f"freeze_blocks must be a whole number >= 0, got {self.freeze_blocks!r}")
        for name in ("augment", "ema"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.amp is not None and not isinstance(self.amp, bool):
            raise InputError(f"amp must be True, False or None (automatic), got {self.amp!r}")
        if not _is_number(self.ema_decay) or not 0 <= self.ema_decay < 1:
            raise InputError(f"ema_decay must be in [0, 1) (typically 0.999), got {self.ema_decay!r}")
        if not isinstance(self.device, str) or not is_device_name(self.device):
            raise InputError(
                f"unknown device {self.device!r}; choose one of {', '.join(DEVICE_CHOICES)} or cuda:N"
            )
        if not _is_int(self.seed) or self.seed < 0:
            raise InputError(f"seed must be a whole number >= 0, got {self.seed!r}")
        if self.max_minutes is not None and (
            not _is_number(self.max_minutes) or not math.isfinite(self.max_minutes) or self.max_minutes <= 0
        ):
            raise InputError(
                f"max_minutes must be a positive number of minutes, or None, got {self.max_minutes!r}"
            )
        if self.bit_depth is not None:
            check_bit_depth(self.bit_depth)

    def to_json(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FineTuneConfig":
        """Rebuild a configuration written by :meth:`to_json`, validating it.

        Raises
        ------
        InputError
            If ``data`` has unknown fields or invalid values.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(
                f"unknown fine-tuning setting(s) {', '.join(unknown)}; was it written by a newer version?"
            )
        values = dict(data)
        for name in ("betas", "layer_lrs"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        return cls(**values)


def read_run_config(run_dir: "str | Path") -> FineTuneConfig:
    """The configuration of the run in ``run_dir`` (its ``config.json``), to resume it with a few changes.

    Raises
    ------
    InputError
        If the folder holds no readable run configuration.
    """
    path = Path(run_dir) / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError(
            f"{run_dir} holds no fine-tuning run ({CONFIG_FILE} is missing); start a new run"
        ) from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a fine-tuning configuration")
    return FineTuneConfig.from_json(data)


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
    """The last event of a run that did not fail: the outputs are written (``message`` says where)."""
    ERROR = "error"
    """The last event of a failed run: ``message`` says what went wrong and what was kept."""


class RunState(str, Enum):
    """How a run ended."""

    FINISHED = "finished"
    STOPPED = "stopped"
    EARLY_STOPPED = "early_stopped"
    TIME_BUDGET = "time_budget"
    FAILED = "failed"


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
    """The outcome of a fine-tuning job.

    Attributes
    ----------
    state : RunState
    run_dir : Path
    model_path : Path or None
        The saved model (``model.pth``); None when the run failed.
    checkpoint_path : Path or None
        The last good checkpoint, from which ``resume=True`` continues; None if none was written.
    epochs_done : int
        Complete epochs trained.
    best_epoch : int or None
        Epoch with the lowest validation L1 (0: the pretrained weights); None without validation.
    history : tuple of dict
        The rows of ``history.csv``.
    message : str
        One line: why the run ended and where the model went, or what failed.
    """

    state: RunState
    run_dir: Path
    model_path: "Path | None"
    checkpoint_path: "Path | None"
    epochs_done: int
    best_epoch: "int | None"
    history: tuple[dict[str, Any], ...]
    message: str


def layer_groups(module: nn.Module) -> dict[str, str]:
    """The layer group (one of :data:`LAYER_GROUPS`) of every entry of ``module.state_dict()``.

    RRDBNet: ``conv_first`` is "first"; ``conv_up1``, ``conv_up2``, ``conv_hr`` and ``conv_last`` are
    "upsampler"; the RRDB blocks and ``conv_body`` are "body". SRVGGNetCompact: its first convolution
    ``body.0`` is "first", its last convolution (before the pixel shuffle) "upsampler", the rest "body".

    Raises
    ------
    TrainingError
        For a network of another architecture.
    """
    if isinstance(module, RRDBNet):
        prefixes = {
            "first": ("conv_first.",),
            "upsampler": ("conv_up1.", "conv_up2.", "conv_hr.", "conv_last."),
        }
    elif isinstance(module, SRVGGNetCompact):
        prefixes = {"first": ("body.0.",), "upsampler": (f"body.{len(module.body) - 1}.",)}
    else:
        raise TrainingError(f"cannot fine-tune a {type(module).__name__}: only RRDBNet and SRVGGNetCompact")

    def group(name: str) -> str:
        return next((g for g, starts in prefixes.items() if name.startswith(starts)), "body")

    return {name: group(name) for name in module.state_dict()}


def freeze_first_blocks(module: nn.Module, n: int) -> list[str]:
    """Freeze the input end of ``module``: its first convolution and first ``n`` blocks.

    RRDBNet: ``conv_first`` and ``body.0`` to ``body.{n-1}``. SRVGGNetCompact: its first ``n`` convolutions
    and their activations. Frozen parameters get ``requires_grad=False``; since nothing before them trains,
    autograd records nothing up to the first trainable layer, so backward neither reaches nor stores them.

    Parameters
    ----------
    module : RRDBNet or SRVGGNetCompact
    n : int
        Blocks to freeze; 0 freezes nothing.

    Returns
    -------
    list of str
        Names of the frozen parameters.

    Raises
    ------
    InputError
        If ``n`` leaves nothing but the output layers to train (more blocks than the network has).
    """
    if n == 0:
        return []
    if isinstance(module, RRDBNet):
        limit, what = len(module.body), "RRDB blocks"
        frozen: list[nn.Module] = [module.conv_first, *module.body[:n]]
    elif isinstance(module, SRVGGNetCompact):
        limit, what = (len(module.body) - 1) // 2, "convolutions before its last one"
        frozen = list(module.body[: 2 * n])
    else:
        raise TrainingError(f"cannot fine-tune a {type(module).__name__}: only RRDBNet and SRVGGNetCompact")
    if n > limit:
        raise InputError(f"freeze_blocks {n} is more than the model's {limit} {what}; freeze at most {limit}")
    ids = {id(p) for layer in frozen for p in layer.parameters()}
    names = [name for name, p in module.named_parameters() if id(p) in ids]
    for layer in frozen:
        layer.requires_grad_(False)
    return names


def _cpu_copy(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU float copies of a state dict's tensors (as saved files hold them)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


class _Trainer:
    """The network with its optimiser, schedule, loss scaler and EMA: one step, validation, and their state.

    Parameters
    ----------
    module : nn.Module
        The network, modified in place (frozen layers, device, channels-last memory format: faster on
        CUDA (H200, x4plus at batch 4: 37 vs 30 samples/s) and a few percent faster on the CPU).
    config : FineTuneConfig
    device : torch.device
    """

    def __init__(self, module: nn.Module, config: FineTuneConfig, device: torch.device) -> None:
        self.device = device
        self.frozen = freeze_first_blocks(module, config.freeze_blocks)
        self.module = module.to(device=device, memory_format=torch.channels_last).train()
        self.optimizer = torch.optim.Adam(
            self._param_groups(config), lr=config.lr, betas=config.betas, fused=True
        )
        self.scheduler = StepLR(self.optimizer, step_size=config.lr_step, gamma=config.lr_gamma)
        self.amp_dtype = autocast_dtype(device, config.amp)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.ema = (
            AveragedModel(self.module, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
            if config.ema
            else None
        )

    def _param_groups(self, config: FineTuneConfig) -> list[dict[str, Any]]:
        trainable = [(name, p) for name, p in self.module.named_parameters() if p.requires_grad]
        if config.layer_lrs is None:
            return [{"params": [p for _, p in trainable], "lr": config.lr, "name": "all"}]
        groups = layer_groups(self.module)
        out = []
        for group, lr in zip(LAYER_GROUPS, config.layer_lrs, strict=True):
            params = [p for name, p in trainable if groups[name] == group]
            if params:
                out.append({"params": params, "lr": lr, "name": group})
        return out

    @property
    def net(self) -> nn.Module:
        """The network that is validated and saved: the EMA when enabled."""
        return self.module if self.ema is None else self.ema.module

    @property
    def lr(self) -> float:
        """The current learning rate of the body (of the only group without layer-wise rates)."""
        groups = self.optimizer.param_groups
        return float(next((g["lr"] for g in groups if g["name"] == "body"), groups[0]["lr"]))

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def step(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """One optimisation step on a batch; returns the batch's L1 loss, detached, on the device.

        Parameters
        ----------
        lr : (B, C, h, w) float32 Tensor
        hr : (B, C, h * scale, w * scale) float32 Tensor
        """
        lr = lr.to(self.device).contiguous(memory_format=torch.channels_last)
        hr = hr.to(self.device)
        with self._autocast():
            sr = self.module(lr)
        loss = F.l1_loss(sr.float(), hr)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.module)
        return loss.detach()

    @torch.no_grad()
    def validate(self, lr: torch.Tensor, hr: torch.Tensor, batch_size: int) -> tuple[float, float]:
        """Mean L1 and mean per-patch PSNR (dB, output clipped to [0, 1]) of :attr:`net` on fixed pairs.

        Parameters
        ----------
        lr : (N, C, h, w) float32 Tensor
        hr : (N, C, h * scale, w * scale) float32 Tensor
        batch_size : int
        """
        net = self.net.eval()
        l1 = torch.zeros((), device=self.device)
        psnr = torch.zeros((), device=self.device)
        for start in range(0, len(lr), batch_size):
            end = start + batch_size
            lr_batch = lr[start:end].to(self.device).contiguous(memory_format=torch.channels_last)
            hr_batch = hr[start:end].to(self.device)
            with self._autocast():
                sr = net(lr_batch).float()
            l1 += (sr - hr_batch).abs().sum()
            mse = (sr.clamp(0.0, 1.0) - hr_batch).square().mean(dim=(1, 2, 3)).clamp_min(_PSNR_MSE_FLOOR)
            psnr += (-10.0 * torch.log10(mse)).sum()
        net.train()
        return l1.item() / hr.numel(), psnr.item() / len(hr)

    def weights(self) -> dict[str, torch.Tensor]:
        """CPU copies of the weights that get saved (the EMA when enabled)."""
        return _cpu_copy(self.net.state_dict())

    def weights_finite(self) -> bool:
        """Whether every trained weight is finite (one device synchronisation)."""
        return bool(torch.stack([p.isfinite().all() for p in self.module.parameters()]).all())

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


# The global generators of torch, numpy and Python are seeded and checkpointed so that a resumed run continues
# exactly even if code outside this module (a transform, a library) draws from them; the pairs have their own.


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    """The global random states as tensors and plain values (safe for ``weights_only`` loading)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached_gaussian": cached,
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(  # noqa: NPY002
        (np_state["kind"], keys, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"])
    )
    py_state = state["python"]
    random.setstate((py_state["version"], tuple(py_state["internal"]), py_state["gauss_next"]))


@dataclass
class _Progress:
    """Where a run stands; saved in the checkpoint."""

    epoch: int = 0  # complete epochs
    step_in_epoch: int = 0  # steps done in the epoch under way
    epoch_loss: float = 0.0  # sum of the step losses of the epoch under way
    epoch_seconds: float = 0.0  # time spent in the epoch under way by earlier calls
    best_epoch: "int | None" = None
    best_val_l1: "float | None" = None
    bad_epochs: int = 0  # epochs since the best one
    history: list[dict[str, Any]] = field(default_factory=list)


def _crop_images(
    crops: "CropSet | Sequence[np.ndarray]", what: str
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """The crops as a list of arrays, and how to name them in the provenance."""
    if isinstance(crops, CropSet):
        images = list(crops.images)
        record: dict[str, Any] = {
            "folder": str(crops.folder),
            "files": [row.get("file", "") for row in crops.rows],
        }
    elif isinstance(crops, np.ndarray) or not isinstance(crops, Sequence):
        raise InputError(f"{what} must be a CropSet or a list of images, got {type(crops).__name__}")
    else:
        images = list(crops)
        record = {"arrays": [list(np.shape(image)) for image in images]}
    if not images:
        raise InputError(f"no {what} to train on; select and crop at least one disk")
    names = record.get("files") or [f"{what} {i}" for i in range(len(images))]
    for name, image in zip(names, images, strict=True):  # by name here: the pairs count after the split
        check_finite(image, name)
    return images, record


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
    :class:`FineTuneResult`. Failures during training become an ``ERROR`` event and a ``"failed"`` result.
    A job closed before its end (``close()``, or dropped by its consumer) saves a checkpoint at the step it
    reached, so that ``resume`` continues from there.

    Parameters
    ----------
    crops : CropSet or sequence of (H, W), (H, W, 3) or (H, W, 4) ndarray
        High-resolution crops, one disk each (integer or float; see :mod:`.pairs` for the value mapping).
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
        If ``run_dir`` holds a run and ``resume`` is false, or holds none to resume.
    """
    if not isinstance(config, FineTuneConfig):
        raise InputError(f"config must be a FineTuneConfig, got {type(config).__name__}")
    images, crop_record = _crop_images(crops, "crops")
    lr_images = None if lr_crops is None else _crop_images(lr_crops, "LR crops")[0]
    if lr_images is not None and len(lr_images) != len(images):
        raise InputError(f"{len(images)} crop(s) but {len(lr_images)} LR crop(s): give one LR crop per crop")
    run_dir = Path(run_dir)
    held = [name for name in _RUN_MARKERS if (run_dir / name).exists()]
    if resume and not (run_dir / CHECKPOINT_FILE).is_file():
        raise TrainingError(f"nothing to resume in {run_dir}: it holds no {CHECKPOINT_FILE}; start a new run")
    if not resume and held:
        raise TrainingError(
            f"{run_dir} already holds a fine-tuning run ({', '.join(held)}); resume it or choose another "
            "folder"
        )
    ensure_writable_dir(run_dir)
    return _job(
        functools.partial(_open_run, images, lr_images, crop_record, config, run_dir, resume=resume), stop
    )


def _job(
    open_run: Callable[[], "_Run"], stop: "StopFlag | None"
) -> Generator[TrainEvent, None, FineTuneResult]:
    """Open the run (in the worker that drives this generator), train it, and report it as events."""
    run = open_run()
    yield run.event(EventKind.STARTED, message=run.describe())
    try:
        state, reason = yield from run.train(stop)
        if state is not RunState.FINISHED:
            yield run.event(EventKind.STOPPED, message=reason)
        result = run.finish(state, reason)
    except GeneratorExit:  # abandoned by its consumer (closed, or dropped mid-run): keep the steps trained
        run.keep_position()
        raise
    except Exception as exc:  # the run is over: report it as data, never leave a GUI worker hanging
        message = run.failure(exc)
        yield run.event(EventKind.ERROR, message=message)
        return run.result(RunState.FAILED, message, model_path=None)
    yield run.event(EventKind.FINISHED, message=result.message)
    return result


def _open_run(
    images: list[np.ndarray],
    lr_images: "list[np.ndarray] | None",
    crop_record: dict[str, Any],
    config: FineTuneConfig,
    run_dir: Path,
    *,
    resume: bool,
) -> "_Run":
    """Load the model and the data, and restore the checkpoint when resuming."""
    started = time.monotonic()
    device = resolve_device(config.device)
    parent = load_model(config.model, device="cpu")
    checkpoint = _read_checkpoint(run_dir / CHECKPOINT_FILE) if resume else None
    crops_sha256 = _crops_fingerprint(images, lr_images)
    if checkpoint is not None:
        _check_resumable(checkpoint, config, parent, run_dir)
        _check_same_crops(checkpoint, crops_sha256, len(images), run_dir)
    pair_config = PairConfig(
        patch=config.patch,
        scale=parent.spec.scale,
        degradation=config.degradation,
        pairs_per_epoch=config.pairs_per_epoch,
        augment=config.augment,
        seed=config.seed,
        small_crops=config.small_crops,
        channels=parent.spec.in_channels,
        bit_depth=config.bit_depth,
    )
    train_idx, val_idx = split_by_disk(len(images), config.val_fraction, config.seed)
    if config.early_stop is not None and not val_idx:
        raise InputError(
            f"early stopping needs a validation set but {len(images)} crop(s) leave none; "
            "add crops or disable early stopping"
        )

    def subset(items: "list[np.ndarray] | None", idx: list[int]) -> "list[np.ndarray] | None":
        return None if items is None else [items[i] for i in idx]

    sampler = PairSampler(subset(images, train_idx), pair_config, lr_images=subset(lr_images, train_idx))
    val = None
    if val_idx:
        val = validation_pairs(subset(images, val_idx), pair_config, lr_images=subset(lr_images, val_idx))
    batch = checkpoint["batch_size"] if checkpoint else config.batch_size or _auto_batch(device, config)
    parent_weights = _cpu_copy(parent.module.state_dict())
    trainer = _Trainer(parent.module, config, device)
    progress, best_weights = _Progress(), None
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint["trainer"])
        progress, best_weights = _Progress(**checkpoint["progress"]), checkpoint["best_weights"]
        _set_rng_state(checkpoint["rng"])
    else:
        _seed_everything(config.seed)
    write_json(run_dir / CONFIG_FILE, config.to_json(), overwrite=True)
    return _Run(
        config=config,
        run_dir=run_dir,
        device=device,
        parent=parent,
        parent_weights=parent_weights,
        crop_record=crop_record | {"train": train_idx, "validation": val_idx, "sha256": crops_sha256},
        sampler=sampler,
        val=val,
        batch=batch,
        trainer=trainer,
        progress=progress,
        best_weights=best_weights,
        saved="" if checkpoint is None else _describe_position(progress),
        started=started,
    )


@dataclass
class _Run:
    """One fine-tuning run: its inputs, trainer, progress and outputs."""

    config: FineTuneConfig
    run_dir: Path
    device: torch.device
    parent: LoadedModel
    parent_weights: dict[str, torch.Tensor]  # CPU copy, for weight_change.csv
    crop_record: dict[str, Any]  # provenance of the crops and of the split
    sampler: PairSampler
    val: "tuple[torch.Tensor, torch.Tensor] | None"  # the fixed validation pairs
    batch: int
    trainer: _Trainer
    progress: _Progress
    best_weights: "dict[str, torch.Tensor] | None"  # CPU copy of the best epoch's weights (early stopping)
    saved: str  # position of the last checkpoint written or read, "" if none
    started: float  # time.monotonic() when this call began (time budget)
    session_start: float = field(default_factory=time.monotonic)
    session_steps: int = 0  # steps trained by this call (speed, ETA)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.config.pairs_per_epoch // self.batch)

    # -- reporting ----------------------------------------------------------------------------------------

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

    def _eta(self) -> "float | None":
        if not self.session_steps:
            return None
        left = max(0, self.config.epochs * self.steps_per_epoch - self.global_step)
        return (time.monotonic() - self.session_start) / self.session_steps * left

    def describe(self) -> str:
        p, spec = self.progress, self.parent.spec
        where = f"resuming at {_describe_position(p)}" if p.epoch or p.step_in_epoch else "starting"
        n_val = len(self.crop_record["validation"])
        return (
            f"{where}: fine-tuning {self.parent.name} ({spec.arch} x{spec.scale}) on "
            f"{len(self.crop_record['train'])} crop(s), {n_val} kept for validation; "
            f"{self.config.epochs} epochs of {self.steps_per_epoch} steps (batch {self.batch}) on "
            f"{describe_device(self.device)}"
        )

    # -- training -----------------------------------------------------------------------------------------

    def train(self, stop: "StopFlag | None") -> Generator[TrainEvent, None, tuple[RunState, str]]:
        """Train to the end of the run or until interrupted; returns how it ended and why."""
        config, p = self.config, self.progress
        if self.val is not None and not p.history:
            yield self._baseline()
        while True:
            if p.epoch >= config.epochs:
                return RunState.FINISHED, f"trained {p.epoch} epoch(s)"
            if config.early_stop is not None and p.bad_epochs >= config.early_stop:
                return RunState.EARLY_STOPPED, (
                    f"early stopping: no better validation L1 for {p.bad_epochs} epoch(s); "
                    f"keeping epoch {p.best_epoch}"
                )
            interruption = self._interruption(stop)
            if interruption is not None:
                return (yield from self._interrupt(*interruption))
            outcome = yield from self._epoch(stop)
            if outcome is not None:
                return outcome

    def _baseline(self) -> TrainEvent:
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
        p.history.append(_history_row(0, None, val_l1, val_psnr, None, time.monotonic() - start))
        return self.event(
            EventKind.BASELINE,
            val_l1=val_l1,
            val_psnr=val_psnr,
            message=f"pretrained: validation L1 {val_l1:.4f}, PSNR {val_psnr:.2f} dB",
        )

    def _interruption(self, stop: "StopFlag | None") -> "tuple[RunState, str] | None":
        if stop is not None and stop.is_set():
            return RunState.STOPPED, "stopped on request"
        budget = self.config.max_minutes
        if budget is not None and time.monotonic() - self.started >= 60.0 * budget:
            return RunState.TIME_BUDGET, f"time budget of {budget:g} min spent"
        return None

    def _interrupt(self, state: RunState, reason: str) -> Generator[TrainEvent, None, tuple[RunState, str]]:
        position = _describe_position(self.progress)
        if self.saved != position:
            yield self._save_checkpoint()
        return state, f"{reason} at {position}"

    def _epoch(self, stop: "StopFlag | None") -> Generator[TrainEvent, None, "tuple[RunState, str] | None"]:
        """Train the rest of the epoch under way; returns how the run ended if it was interrupted."""
        p, device = self.progress, self.trainer.device
        epoch_start = time.monotonic() - p.epoch_seconds
        total = torch.tensor(p.epoch_loss, device=device)
        reported_loss, reported_steps, reported_at = p.epoch_loss, p.step_in_epoch, 0.0
        prefetch = 0 if device.type == "cpu" else _PREFETCH_BATCHES
        batches = self.sampler.batches(
            p.epoch, self.batch, device=device, first_batch=p.step_in_epoch, prefetch=prefetch
        )
        with contextlib.closing(batches):  # on an interruption or an error too: stops the prefetch thread
            try:
                for lr, hr in batches:
                    interruption = self._interruption(stop)
                    if interruption is not None:
                        p.epoch_loss, p.epoch_seconds = (
                            self._checked_loss(total),
                            time.monotonic() - epoch_start,
                        )
                        batches.close()  # now, not after the checkpoint below is written
                        return (yield from self._interrupt(*interruption))
                    total += self.trainer.step(lr, hr)
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
        yield from self._end_epoch(total, time.monotonic() - epoch_start)
        return None

    def _checked_loss(self, total: torch.Tensor) -> float:
        """The epoch's loss sum so far, checked finite (this waits for the device)."""
        value = total.item()
        if not math.isfinite(value):
            raise self._diverged(f"the training loss became {value}")
        return value

    def _diverged(self, what: str) -> TrainingError:
        return TrainingError(
            f"training diverged at {_describe_position(self.progress)}: {what}; lower the learning rate "
            f"(now {self.trainer.lr:g}) or check the crops"
        )

    def _end_epoch(self, total: torch.Tensor, seconds: float) -> Generator[TrainEvent, None, None]:
        config, p = self.config, self.progress
        train_l1 = self._checked_loss(total) / p.step_in_epoch
        val_l1 = val_psnr = None
        if self.val is not None:
            val_l1, val_psnr = self.trainer.validate(*self.val, self.batch)
            if not math.isfinite(val_l1):
                raise self._diverged(f"the validation L1 became {val_l1}")
        lr = self.trainer.lr
        self.trainer.scheduler.step()
        p.epoch += 1
        p.step_in_epoch, p.epoch_loss, p.epoch_seconds = 0, 0.0, 0.0
        p.history.append(_history_row(p.epoch, train_l1, val_l1, val_psnr, lr, seconds))
        if val_l1 is not None:
            if p.best_val_l1 is None or val_l1 < p.best_val_l1:
                p.best_epoch, p.best_val_l1, p.bad_epochs = p.epoch, val_l1, 0
                if config.early_stop is not None:
                    self.best_weights = self.trainer.weights()
            else:
                p.bad_epochs += 1
        checkpoint_event = self._save_checkpoint()
        _write_history(self.run_dir, p.history)
        scores = "" if val_l1 is None else f", validation L1 {val_l1:.4f}, PSNR {val_psnr:.2f} dB"
        yield self.event(
            EventKind.EPOCH,
            loss=train_l1,
            lr=lr,
            val_l1=val_l1,
            val_psnr=val_psnr,
            message=f"epoch {p.epoch}/{config.epochs}: training L1 {train_l1:.4f}{scores}",
        )
        yield checkpoint_event

    # -- saving -------------------------------------------------------------------------------------------

    def _save_checkpoint(self) -> TrainEvent:
        """Write the checkpoint atomically: a failure leaves the previous one in place."""
        if not self.trainer.weights_finite():
            raise self._diverged("some weights are no longer finite")
        payload = {
            "format": _CHECKPOINT_FORMAT,
            "version": _CHECKPOINT_VERSION,
            "config": self.config.to_json(),
            "spec": self.parent.spec.to_json(),
            "parent_sha256": self.parent.sha256,
            "crops_sha256": self.crop_record["sha256"],
            "crops": len(self.crop_record["train"]) + len(self.crop_record["validation"]),
            "batch_size": self.batch,
            "progress": dataclasses.asdict(self.progress),
            "trainer": self.trainer.state_dict(),
            "best_weights": self.best_weights,
            "rng": _rng_state(),
        }
        path = self.run_dir / CHECKPOINT_FILE
        atomic_write(path, lambda tmp: torch.save(payload, tmp), overwrite=True)
        self.saved = _describe_position(self.progress)
        return self.event(EventKind.CHECKPOINT, message=f"checkpoint ({self.saved}) saved to {path}")

    def keep_position(self) -> None:
        """Save a checkpoint at the position reached unless one is there already (the run was abandoned).

        Never raises: it runs while the generator closes, where an exception would replace the close.
        """
        if self.saved == _describe_position(self.progress):
            return
        try:
            self._save_checkpoint()
        except Exception:
            log.exception("the abandoned run's checkpoint could not be saved")
            return
        log.info("fine-tuning abandoned at %s: checkpoint saved in %s", self.saved, self.run_dir)

    def finish(self, state: RunState, reason: str) -> FineTuneResult:
        """Write the model, its sidecar, the history and the weight changes; return the result."""
        p = self.progress
        weights = self.best_weights if self.config.early_stop is not None else self.trainer.weights()
        model_path = save_model(
            weights, self.parent.spec, self.run_dir / MODEL_FILE, info=self._model_info(state), overwrite=True
        )
        _write_history(self.run_dir, p.history)
        write_csv(
            self.run_dir / WEIGHT_CHANGE_FILE,
            _weight_change(self.parent_weights, weights, layer_groups(self.trainer.module)),
            WEIGHT_CHANGE_FIELDS,
            overwrite=True,
        )
        kept = f" (weights of epoch {p.best_epoch})" if self.config.early_stop is not None else ""
        return self.result(state, f"{reason}; model{kept} saved to {model_path}", model_path=model_path)

    def result(self, state: RunState, message: str, *, model_path: "Path | None") -> FineTuneResult:
        checkpoint = self.run_dir / CHECKPOINT_FILE
        return FineTuneResult(
            state=state,
            run_dir=self.run_dir,
            model_path=model_path,
            checkpoint_path=checkpoint if self.saved else None,
            epochs_done=self.progress.epoch,
            best_epoch=self.progress.best_epoch,
            history=tuple(self.progress.history),
            message=message,
        )

    def failure(self, exc: Exception) -> str:
        """The one-line report of a failed run, logged with its traceback when it is unexpected."""
        if isinstance(exc, MicrodiskSRError):
            log.error("fine-tuning failed: %s", exc)
            what = str(exc)
        elif isinstance(exc, torch.OutOfMemoryError):
            log.error("fine-tuning ran out of memory", exc_info=exc)
            what = (
                f"out of memory on {describe_device(self.device)}; lower the batch size (now {self.batch}) "
                f"or the patch size (now {self.config.patch})"
            )
        elif isinstance(exc, OSError):
            log.error("fine-tuning could not write its outputs", exc_info=exc)
            what = f"could not write to {self.run_dir}: {exc.strerror or exc}"
        else:
            log.exception("fine-tuning failed", exc_info=exc)
            what = f"training failed: {type(exc).__name__}: {exc}"
        path = self.run_dir / CHECKPOINT_FILE
        kept = (
            f"the last good checkpoint ({self.saved}) is kept in {path}; resume from it"
            if self.saved
            else "no checkpoint was written"
        )
        return f"{what}; {kept}"

    def _model_info(self, state: RunState) -> dict[str, Any]:
        p = self.progress
        return {
            "name": self.run_dir.name,
            "fine_tuning": {
                "state": state.value,
                "epochs_done": p.epoch,
                "best_epoch": p.best_epoch,
                "best_val_l1": p.best_val_l1,
                "saved_weights": (
                    f"epoch {p.best_epoch} (best validation L1)"
                    if self.config.early_stop is not None
                    else f"last ({_describe_position(p)})"
                )
                + (", exponential moving average" if self.config.ema else ""),
                "config": self.config.to_json(),
                "batch_size": self.batch,
                "frozen_parameters": self.trainer.frozen,
                "history": p.history,
            },
            "provenance": {
                "parent": {
                    "name": self.parent.name,
                    "source": self.parent.source,
                    "sha256": self.parent.sha256,
                },
                "crops": self.crop_record,
                "seed": self.config.seed,
                "device": describe_device(self.device),
                "precision": "float32" if self.trainer.amp_dtype is None else str(self.trainer.amp_dtype),
                "versions": {
                    "napari-microdisk-sr": __version__,
                    "torch": torch.__version__,
                    "numpy": np.__version__,
                    "python": platform.python_version(),
                },
                "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        }


def _auto_batch(device: torch.device, config: FineTuneConfig) -> int:
    return min(_CPU_BATCH if device.type == "cpu" else _GPU_BATCH, config.pairs_per_epoch)


def _describe_position(progress: _Progress) -> str:
    if progress.step_in_epoch:
        return f"epoch {progress.epoch + 1}, step {progress.step_in_epoch}"
    return f"the end of epoch {progress.epoch}" if progress.epoch else "the start"


def _history_row(
    epoch: int,
    train_l1: "float | None",
    val_l1: "float | None",
    val_psnr: "float | None",
    lr: "float | None",
    seconds: float,
) -> dict[str, Any]:
    return dict(zip(HISTORY_FIELDS, (epoch, train_l1, val_l1, val_psnr, lr, seconds), strict=True))


def _write_history(run_dir: Path, history: Sequence[Mapping[str, Any]]) -> None:
    write_csv(run_dir / HISTORY_FILE, history, HISTORY_FIELDS, overwrite=True)


def _weight_change(
    parent: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor], groups: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Mean, largest and smallest absolute change of the weights of each layer group."""
    rows = []
    for group in LAYER_GROUPS:
        names = [name for name in weights if groups[name] == group]
        if not names:
            continue
        change = torch.cat([(weights[n].float() - parent[n].float()).abs().flatten() for n in names])
        rows.append(
            {
                "group": group,
                "parameters": change.numel(),
                "mean_abs_change": change.mean().item(),
                "max_abs_change": change.max().item(),
                "min_abs_change": change.min().item(),
            }
        )
    return rows


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise TrainingError(f"cannot read the checkpoint {path}: {exc}; start a new run folder") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != _CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not a fine-tuning checkpoint of this program; start a new run folder")
    if checkpoint.get("version") != _CHECKPOINT_VERSION:
        raise TrainingError(f"{path} was written by another version (format {checkpoint.get('version')})")
    return checkpoint


def _check_resumable(
    checkpoint: Mapping[str, Any], config: FineTuneConfig, parent: LoadedModel, run_dir: Path
) -> None:
    """Refuse to resume a run with another network, other parent weights or another recipe."""
    run_spec = ModelSpec.from_json(checkpoint["spec"])
    if run_spec != parent.spec:
        raise TrainingError(
            f"the run in {run_dir} fine-tunes {_describe_spec(run_spec)} but {config.model} is "
            f"{_describe_spec(parent.spec)}; resume with the run's model or start a new run folder"
        )
    if checkpoint["parent_sha256"] != parent.sha256:
        raise TrainingError(
            f"the weights of {config.model} (SHA-256 {parent.sha256[:12]}...) are not the ones the run in "
            f"{run_dir} started from ({checkpoint['parent_sha256'][:12]}...); resume with those weights"
        )
    saved = FineTuneConfig.from_json(checkpoint["config"])
    changed = [
        f"{name} {getattr(saved, name)!r} -> {getattr(config, name)!r}"
        for name in (f.name for f in dataclasses.fields(FineTuneConfig))
        if name not in (*RESUMABLE_CHANGES, "model") and getattr(saved, name) != getattr(config, name)
    ]
    if changed:
        raise TrainingError(
            f"cannot resume the run in {run_dir} with other settings ({'; '.join(changed)}); only "
            f"{', '.join(RESUMABLE_CHANGES)} may change: keep the others or start a new run folder"
        )
    if config.epochs < checkpoint["progress"]["epoch"]:
        raise InputError(
            f"the run already trained {checkpoint['progress']['epoch']} epochs; ask for at least as many "
            f"(epochs={config.epochs})"
        )


def _crops_fingerprint(images: list[np.ndarray], lr_images: "list[np.ndarray] | None") -> str:
    """SHA-256 of the crops (and LR crops) in order: their dtypes, shapes and pixels."""
    digest = hashlib.sha256()
    for image in [*images, *(lr_images or [])]:
        array = np.ascontiguousarray(image)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.data)
    return digest.hexdigest()


def _check_same_crops(checkpoint: Mapping[str, Any], crops_sha256: str, count: int, run_dir: Path) -> None:
    """Refuse to resume on other crops: the split into training and validation would not be the run's."""
    saved = checkpoint.get("crops_sha256")  # absent from checkpoints of earlier versions
    if saved is not None and saved != crops_sha256:
        raise TrainingError(
            f"the run in {run_dir} was trained on other crops ({checkpoint.get('crops', '?')} crop(s), "
            f"SHA-256 {saved[:12]}...; these {count}: {crops_sha256[:12]}...); resume with the run's crops "
            "or start a new run folder"
        )


def _describe_spec(spec: ModelSpec) -> str:
    return f"{spec} (x{spec.scale})"
