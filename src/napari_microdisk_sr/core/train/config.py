"""The settings of a fine-tuning run: :class:`FineTuneConfig`, reading a run's own, what a resume may change.

One frozen dataclass, validated in ``__post_init__``, shared by the widget, the command line, the tests and
the run folder's ``config.json``.
"""

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..archs import LAYER_GROUPS
from ..calibrate import DegradationProfile, profile_for
from ..degradation import DEGRADATIONS
from ..device import DEVICE_CHOICES, is_device_name
from ..errors import InputError
from ..intensity import AUTO, Intensity, recorded_intensity
from ..models import DEFAULT_MODEL
from ..pair_config import check_small_crops

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_PATIENCE",
    "RESUMABLE_CHANGES",
    "STUDY_LAYER_LRS",
    "FineTuneConfig",
    "read_run_config",
    "resume_conflicts",
]

CONFIG_FILE = "config.json"
STUDY_LAYER_LRS = (1e-5, 1e-4, 1e-3)
"""The study's layer-wise learning rates, in the order of :data:`~..archs.LAYER_GROUPS`."""
DEFAULT_PATIENCE = 5
"""Epochs without a better validation L1 before early stopping, when it is asked for without a number."""
RESUMABLE_CHANGES = ("epochs", "max_minutes", "device")
"""The settings a resumed run may change; the others stay the run's own."""


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@dataclass(frozen=True)
class FineTuneConfig:
    """Settings of a fine-tuning run; the defaults are the study's recipe, with realistic degradation.

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
    degradation : str
        How LR patches are made from HR ones (:func:`~..degradation.degrade`): "realistic" (the default: blur
        and Poisson-Gaussian noise drawn from a wide family), the study's plain "bicubic" down-sampling, which
        leaves a model unprepared for a camera's noise, or the path of a degradation profile (.json) written
        by ``microdisk-sr calibrate`` (your microscope's blur, camera and noise, see :mod:`..calibrate`).
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
        (:data:`~..archs.LAYER_GROUPS`); :data:`STUDY_LAYER_LRS` are the study's. None uses ``lr`` everywhere.
    freeze_blocks : int
        Freeze the first convolution and the first N RRDB blocks (SRVGGNetCompact: its first N convolutions
        with their activations), so that neither their weights nor their gradients are computed.
    ema : bool
        Keep an exponential moving average of the weights, validate it and save it instead of the weights.
    ema_decay : float
        Decay of the moving average per step, in ``[0, 1)``.
    amp : bool or None
        Mixed precision. None (the default) chooses per device: bfloat16 autocast on a CPU with native
        bfloat16 instructions (AVX512-BF16 or AMX), float32 elsewhere. True: bfloat16 autocast on CUDA where
        the GPU supports it, else float16 with loss scaling, and bfloat16 on any CPU. False: float32
        everywhere. On CUDA it is off by default: eager steps at these batch sizes are bound by kernel
        launches, and autocast's casts cost more than they save (the figures are in benchmarks/README.md).
    device : str
        ``"auto"`` (CUDA, then Apple MPS, then the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    seed : int
        Seed of the pairs, of the train/validation split and of torch, numpy and Python's random numbers.
    max_minutes : float or None
        Time budget of one call: training ends cleanly after the step during which it runs out, and saves.
    intensity : Intensity
        How the crops' values map to the network's ``[0, 1]``, the same for the HR and the LR crop of a pair
        (see :class:`Intensity`; its text form is accepted too): by default ``auto``, which with a degradation
        profile is the mapping the profile was fitted with (another one is refused). The fine-tuned
        model's sidecar records it, and :func:`..infer.upscale` uses it for that model unless told
        otherwise; give the same to :func:`..metrics.evaluate`.
    profile : DegradationProfile or None
        The content of the profile file ``degradation`` names, read from it when not given (None for a
        generic degradation). The run's ``config.json`` and checkpoint record it, so that a resumed run trains
        with its own profile, and one started anew from a changed file is refused.
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
    degradation: str = "realistic"
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
    intensity: Intensity = AUTO
    profile: "DegradationProfile | None" = None

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
        self._check_profile()
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
        object.__setattr__(self, "intensity", Intensity.parse(self.intensity))
        self._match_profile_intensity()

    def _match_profile_intensity(self) -> None:
        """Map the crops as the profile's fit mapped its images: ``auto`` takes the profile's mapping; another
        mapping is refused."""
        fitted = None if self.profile is None else self.profile.intensity
        if fitted is None or str(self.intensity) == fitted:
            return
        if self.intensity == AUTO:
            object.__setattr__(self, "intensity", Intensity.parse(fitted))
            return
        raise InputError(
            f"the degradation profile {self.degradation} was fitted on values mapped by intensity={fitted}, "
            f"but the crops would be mapped by intensity={self.intensity}: its gain, offset and noise mean "
            f"nothing in other units; fine-tune with intensity={fitted} (auto takes it), or calibrate again "
            f"with intensity={self.intensity}"
        )

    def _check_profile(self) -> None:
        """Read the profile the degradation names, unless it is given (a run's own, from its config.json)."""
        if self.profile is None:
            object.__setattr__(self, "profile", profile_for(self.degradation))
        elif not isinstance(self.profile, DegradationProfile):
            raise InputError(
                f"profile must be a DegradationProfile or None, got {type(self.profile).__name__}"
            )
        elif self.degradation in DEGRADATIONS:
            raise InputError(
                f"a degradation profile was given but the degradation is {self.degradation!r}; "
                "give the profile's file as the degradation"
            )

    def to_json(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dict (tuples become lists, the profile its own JSON)."""
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        data["profile"] = None if self.profile is None else self.profile.to_json()
        data["intensity"] = str(self.intensity)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FineTuneConfig":
        """Rebuild a configuration written by :meth:`to_json`, validating it. A configuration written
        before the ``intensity`` setting gives its ``bit_depth`` instead (see
        :func:`..images.recorded_intensity`).

        Raises
        ------
        InputError
            If ``data`` has unknown fields or invalid values.
        """
        values = dict(data)
        if "bit_depth" in values and "intensity" not in values:
            values["intensity"] = recorded_intensity({"bit_depth": values.pop("bit_depth")})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise InputError(
                f"unknown fine-tuning setting(s) {', '.join(unknown)}; was it written by a newer version?"
            )
        for name in ("betas", "layer_lrs"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        if values.get("profile") is not None:
            values["profile"] = DegradationProfile.from_json(values["profile"])
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


def resume_conflicts(saved: FineTuneConfig, new: FineTuneConfig) -> list[str]:
    """The settings of ``new`` that differ from the run's ``saved`` ones and that a resume does not take.

    Only :data:`RESUMABLE_CHANGES` may change when a run resumes. ``model`` is listed when its name differs;
    :func:`~.loop.fine_tune` checks the weights themselves (their network and SHA-256), so that a run
    resumes with the same file given by another path.

    Returns
    -------
    list of str
        Field names, in the order of :class:`FineTuneConfig`.
    """
    return [
        f.name
        for f in dataclasses.fields(FineTuneConfig)
        if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(new, f.name)
    ]
