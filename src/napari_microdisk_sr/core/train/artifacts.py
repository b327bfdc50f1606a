"""What a fine-tuning run leaves beside its checkpoint: the model and its sidecar, history, weight change.

``model.pth`` holds the weights as ``{"params_ema": state_dict}`` with basicsr's key names (Real-ESRGAN's own
convention, so its tools load the file unchanged); ``model.json`` beside it holds the architecture, the
configuration, the history and the provenance (:func:`model_info`). ``history.csv`` has one row per epoch
(epoch 0 is the pretrained model on the validation set); ``weight_change.csv`` the mean, largest and smallest
absolute change of the weights of each layer group from the parent weights.
"""

import logging
import platform
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ... import __version__
from ..archs import LAYER_GROUPS, layer_groups
from ..device import describe_device
from ..errors import TrainingError
from ..io import ensure_writable_dir, remove_stale_temporaries, write_csv
from ..models import LoadedModel, ModelSpec, save_model, sidecar_path
from .checkpoint import CHECKPOINT_FILE, Progress, can_resume
from .config import CONFIG_FILE, FineTuneConfig
from .data import CropRecord
from .events import Outcome

log = logging.getLogger(__name__)

__all__ = [
    "HISTORY_FIELDS",
    "HISTORY_FILE",
    "MODEL_FILE",
    "WEIGHT_CHANGE_FIELDS",
    "WEIGHT_CHANGE_FILE",
    "history_row",
    "model_info",
    "open_run_dir",
    "weight_change",
    "write_history",
    "write_outputs",
]

HISTORY_FILE = "history.csv"
MODEL_FILE = "model.pth"
WEIGHT_CHANGE_FILE = "weight_change.csv"
HISTORY_FIELDS = ("epoch", "train_l1", "val_l1", "val_psnr", "lr", "seconds")
WEIGHT_CHANGE_FIELDS = ("group", "parameters", "mean_abs_change", "max_abs_change", "min_abs_change")


def open_run_dir(run_dir: Path, *, resume: bool, prepare: bool = True) -> bool:
    """Check the run folder's rules, create it if needed and clear what interrupted writes left in it.

    A folder that holds a run (a checkpoint or a model) is refused unless resuming; resuming needs a
    checkpoint. Hidden temporary files of the run's own files, left by a process killed while writing, are
    removed. Returns whether the folder was created here. With ``prepare`` false (the processes of a
    data-parallel run but the one that writes), the rules are checked and the folder left alone.

    Raises
    ------
    TrainingError
        For a folder that holds a run when not resuming, or none when resuming.
    OutputError
        If the folder cannot be created or written to.
    """
    held = [name for name in (CHECKPOINT_FILE, MODEL_FILE) if (run_dir / name).exists()]
    if resume and not can_resume(run_dir):
        raise TrainingError(f"nothing to resume in {run_dir}: it holds no {CHECKPOINT_FILE}; start a new run")
    if not resume and held:
        raise TrainingError(
            f"{run_dir} already holds a fine-tuning run ({', '.join(held)}); resume it or choose another "
            "folder"
        )
    if not prepare:
        return False
    created = not run_dir.exists()
    ensure_writable_dir(run_dir)
    run_files = (CHECKPOINT_FILE, CONFIG_FILE, MODEL_FILE, sidecar_path(MODEL_FILE).name, HISTORY_FILE,
                 WEIGHT_CHANGE_FILE)  # fmt: skip
    for name in run_files:
        for stale in remove_stale_temporaries(run_dir / name):
            log.info("removed %s, left by an interrupted write", stale)
    return created


def write_outputs(
    run_dir: Path,
    weights: Mapping[str, torch.Tensor],
    spec: ModelSpec,
    info: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    parent: Mapping[str, torch.Tensor],
    module: nn.Module,
) -> Path:
    """Write the model with its sidecar ``info``, the history and the weight change from ``parent`` (by the
    layer groups of ``module``); returns the model's path."""
    model_path = save_model(weights, spec, run_dir / MODEL_FILE, info=info, overwrite=True)
    write_history(run_dir, history)
    write_csv(
        run_dir / WEIGHT_CHANGE_FILE,
        weight_change(parent, weights, layer_groups(module)),
        WEIGHT_CHANGE_FIELDS,
        overwrite=True,
    )
    return model_path


def history_row(
    epoch: int,
    train_l1: "float | None",
    val_l1: "float | None",
    val_psnr: "float | None",
    lr: "float | None",
    seconds: float,
) -> dict[str, Any]:
    """One row of ``history.csv``."""
    return dict(zip(HISTORY_FIELDS, (epoch, train_l1, val_l1, val_psnr, lr, seconds), strict=True))


def write_history(run_dir: Path, history: Sequence[Mapping[str, Any]]) -> None:
    write_csv(run_dir / HISTORY_FILE, history, HISTORY_FIELDS, overwrite=True)


def weight_change(
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


def model_info(
    *,
    name: str,
    outcome: Outcome,
    config: FineTuneConfig,
    progress: Progress,
    batch_size: int,
    processes: int,
    frozen: Sequence[str],
    parent: LoadedModel,
    crops: CropRecord,
    device: torch.device,
    precision: "torch.dtype | None",
) -> dict[str, Any]:
    """The ``info`` of a fine-tuned model's sidecar: how it was trained and from what.

    Parameters
    ----------
    name : str
        The model's name (the run folder's).
    batch_size, processes : int
        The batch size of each process and the number of processes that trained together.
    precision : torch.dtype or None
        The autocast dtype of training; None: float32.
    """
    p = progress
    return {
        "name": name,
        "fine_tuning": {
            "state": outcome.value,
            "epochs_done": p.epoch,
            "best_epoch": p.best_epoch,
            "best_val_l1": p.best_val_l1,
            "saved_weights": (
                f"epoch {p.best_epoch} (best validation L1)"
                if config.early_stop is not None
                else f"last ({p.position()})"
            )
            + (", exponential moving average" if config.ema else ""),
            "config": config.to_json(),
            "batch_size": batch_size,
            "processes": processes,
            "pairs_per_step": batch_size * processes,
            "frozen_parameters": list(frozen),
            "history": p.history,
        },
        "provenance": {
            "parent": {"name": parent.name, "source": parent.source, "sha256": parent.sha256},
            "crops": crops.to_json(),
            "seed": config.seed,
            "device": describe_device(device),
            "precision": "float32" if precision is None else str(precision),
            "versions": {
                "napari-microdisk-sr": __version__,
                "torch": torch.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
            "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }
