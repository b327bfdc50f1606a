"""Fine-tuning a super-resolution network on microdisk crops: the study's recipe, cancellable and resumable.

The defaults of :class:`FineTuneConfig` are the study's recipe but for one thing: the pretrained Real-ESRGAN
x4plus loaded strictly; (LR, HR) pairs of 128 px HR patches cut from the crops, flipped and rotated; L1 loss;
Adam (lr 1e-4, betas 0.9 / 0.999); the learning rate halved every 16 epochs; 50 epochs of 500 pairs, in
batches of 4 (2 on the CPU). The LR side of the pairs is made by the realistic microscope degradation (blur,
Poisson-Gaussian noise: :mod:`..pairs`), not by the study's plain bicubic down-sampling, which is still
available by name: a model trained on bicubic pairs does not learn a camera's noise and can end up worse
than bicubic interpolation on a real microscope. Options: a validation set split by disk (the pretrained
model's score is recorded first, as the baseline), early stopping, the study's layer-wise learning rates,
frozen leading blocks, an exponential moving average (EMA) of the weights, mixed precision and a time budget.

:func:`fine_tune` checks its arguments and returns the job, a generator that yields :class:`TrainEvent`
objects and returns a :class:`FineTuneResult`; the command line, the widget and the tests drive the same job.

The package's modules, each owning one part:

- :mod:`.config`: :class:`FineTuneConfig`, reading a run's configuration, what a resume may change;
- :mod:`.events`: the events a job yields and the result it returns;
- :mod:`.trainer`: the optimisation step, mixed precision, the EMA, validation;
- :mod:`.checkpoint`: what a checkpoint holds, writing and reading it, the resume checks, random states;
- :mod:`.artifacts`: the model file and its sidecar, the history, the weight change;
- :mod:`.ddp`: data-parallel training by the processes of a ``torchrun`` launch;
- :mod:`.loop`: the loop itself;
- :mod:`.job`: :func:`fine_tune`, the job that drives the loop and reports it.
The job checks its stop flag before every step. Everything that goes wrong once training has started (a
non-finite loss, running out of memory, a full disk) ends it with a :class:`~..errors.TrainingError` that
says what went wrong, and leaves the last good checkpoint in place.

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

from ..archs import LAYER_GROUPS, freeze_first_blocks, layer_groups
from .artifacts import HISTORY_FIELDS, HISTORY_FILE, MODEL_FILE, WEIGHT_CHANGE_FIELDS, WEIGHT_CHANGE_FILE
from .checkpoint import CHECKPOINT_FILE, can_resume
from .config import (
    CONFIG_FILE,
    DEFAULT_PATIENCE,
    RESUMABLE_CHANGES,
    STUDY_LAYER_LRS,
    FineTuneConfig,
    read_run_config,
    resume_conflicts,
)
from .ddp import process_count, process_rank
from .events import EventKind, FineTuneResult, Outcome, TrainEvent
from .job import fine_tune
from .trainer import autocast_dtype

__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "DEFAULT_PATIENCE",
    "HISTORY_FIELDS",
    "HISTORY_FILE",
    "LAYER_GROUPS",
    "MODEL_FILE",
    "RESUMABLE_CHANGES",
    "STUDY_LAYER_LRS",
    "WEIGHT_CHANGE_FIELDS",
    "WEIGHT_CHANGE_FILE",
    "EventKind",
    "FineTuneConfig",
    "FineTuneResult",
    "Outcome",
    "TrainEvent",
    "autocast_dtype",
    "can_resume",
    "fine_tune",
    "freeze_first_blocks",
    "layer_groups",
    "process_count",
    "process_rank",
    "read_run_config",
    "resume_conflicts",
]
