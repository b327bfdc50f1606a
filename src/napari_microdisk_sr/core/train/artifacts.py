"""What a fine-tuning run leaves beside its checkpoint: the model and its sidecar, history, weight change.

``model.pth`` holds the weights as ``{"params_ema": state_dict}`` with basicsr's key names (Real-ESRGAN's own
convention, so its tools load the file unchanged); ``model.json`` beside it holds the architecture, the
configuration, the history and the provenance (:func:`model_info`). ``history.csv`` has one row per epoch
(epoch 0 is the pretrained model on the validation set); ``weight_change.csv`` the mean, largest and smallest
absolute change of the weights of each layer group from the parent weights.
"""

import platform
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import __version__
from ..archs import LAYER_GROUPS
from ..device import describe_device
from ..io import write_csv
from ..models import LoadedModel
from .checkpoint import Progress
from .config import FineTuneConfig
from .data import CropRecord
from .events import Outcome

__all__ = [
    "HISTORY_FIELDS",
    "HISTORY_FILE",
    "MODEL_FILE",
    "WEIGHT_CHANGE_FIELDS",
    "WEIGHT_CHANGE_FILE",
    "history_row",
    "model_info",
    "weight_change",
    "write_history",
    "write_weight_change",
]

HISTORY_FILE = "history.csv"
MODEL_FILE = "model.pth"
WEIGHT_CHANGE_FILE = "weight_change.csv"
HISTORY_FIELDS = ("epoch", "train_l1", "val_l1", "val_psnr", "lr", "seconds")
WEIGHT_CHANGE_FIELDS = ("group", "parameters", "mean_abs_change", "max_abs_change", "min_abs_change")


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


def write_weight_change(
    run_dir: Path,
    parent: Mapping[str, torch.Tensor],
    weights: Mapping[str, torch.Tensor],
    groups: Mapping[str, str],
) -> None:
    write_csv(
        run_dir / WEIGHT_CHANGE_FILE,
        weight_change(parent, weights, groups),
        WEIGHT_CHANGE_FIELDS,
        overwrite=True,
    )


def model_info(
    *,
    name: str,
    outcome: Outcome,
    config: FineTuneConfig,
    progress: Progress,
    batch_size: int,
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
