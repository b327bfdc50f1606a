"""The checkpoint of a fine-tuning run: what it holds, writing and reading it, and the checks before a resume.

``checkpoint.pth`` is the sum of its parts' states: the trainer's (weights, optimiser, scheduler, loss scaler,
EMA), the :class:`Progress` (position in the run, best epoch, history), the global random states, and the
facts a resume must match (configuration, network, parent weights' and crops' SHA-256). It holds only
tensors and plain Python values, so ``torch.load(weights_only=True)`` reads it, and it is written atomically:
a failed write leaves the previous one.
"""

import dataclasses
import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError, TrainingError
from ..io import atomic_write
from ..models import LoadedModel, ModelSpec
from .config import RESUMABLE_CHANGES, FineTuneConfig, resume_conflicts
from .data import CropRecord
from .trainer import Trainer

__all__ = [
    "CHECKPOINT_FILE",
    "Progress",
    "can_resume",
    "check_resumable",
    "check_same_crops",
    "check_same_processes",
    "crops_fingerprint",
    "read_checkpoint",
    "restore",
    "rng_state",
    "seed_everything",
    "set_rng_state",
    "write_checkpoint",
]

CHECKPOINT_FILE = "checkpoint.pth"
_FORMAT = "napari-microdisk-sr fine-tuning checkpoint"
_VERSION = 1


@dataclass
class Progress:
    """Where a run stands: its position, its best epoch so far and its history (saved in the checkpoint)."""

    epoch: int = 0  # complete epochs
    step_in_epoch: int = 0  # steps done in the epoch under way
    epoch_loss: float = 0.0  # sum of the step losses of the epoch under way
    epoch_seconds: float = 0.0  # time spent in the epoch under way by earlier calls
    best_epoch: "int | None" = None
    best_val_l1: "float | None" = None
    bad_epochs: int = 0  # epochs since the best one
    history: list[dict[str, Any]] = field(default_factory=list)

    def position(self) -> str:
        """The position in words: "the start", "epoch 3, step 12" or "the end of epoch 2"."""
        if self.step_in_epoch:
            return f"epoch {self.epoch + 1}, step {self.step_in_epoch}"
        return f"the end of epoch {self.epoch}" if self.epoch else "the start"

    def end_epoch(self, row: dict[str, Any], val_l1: "float | None") -> bool:
        """Count the epoch under way as complete, with its ``history.csv`` row and validation L1 (None
        without validation); returns whether it is the best epoch so far."""
        self.epoch += 1
        self.step_in_epoch, self.epoch_loss, self.epoch_seconds = 0, 0.0, 0.0
        self.history.append(row)
        if val_l1 is None:
            return False
        if self.best_val_l1 is not None and val_l1 >= self.best_val_l1:
            self.bad_epochs += 1
            return False
        self.best_epoch, self.best_val_l1, self.bad_epochs = self.epoch, val_l1, 0
        return True

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)


def can_resume(run_dir: "str | Path") -> bool:
    """Whether ``run_dir`` holds a checkpoint that ``fine_tune(..., resume=True)`` can continue."""
    return (Path(run_dir) / CHECKPOINT_FILE).is_file()


def write_checkpoint(
    path: Path,
    *,
    config: FineTuneConfig,
    parent: LoadedModel,
    crops: CropRecord,
    batch_size: int,
    processes: int,
    progress: Progress,
    trainer: Trainer,
    best_weights: "Mapping[str, torch.Tensor] | None",
) -> None:
    """Write the checkpoint atomically (a failure leaves the previous one in place).

    It holds what a resume must match (see :func:`check_resumable`, :func:`check_same_crops` and
    :func:`check_same_processes`), the batch size in use (per process), the states of the progress and
    the trainer, the best epoch's weights (early stopping) and the global random states.
    """
    payload = {
        "format": _FORMAT,
        "version": _VERSION,
        "config": config.to_json(),
        "spec": parent.spec.to_json(),
        "parent_sha256": parent.sha256,
        "crops_sha256": crops.sha256,
        "crops": crops.count,
        "batch_size": batch_size,
        "processes": processes,
        "progress": progress.state_dict(),
        "trainer": trainer.state_dict(),
        "best_weights": best_weights,
        "rng": rng_state(),
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp), overwrite=True)


def restore(
    checkpoint: Mapping[str, Any], *, trainer: Trainer, progress: Progress
) -> "dict[str, torch.Tensor] | None":
    """Load a checkpoint's parts into the trainer, the progress and the global random states; returns the
    best epoch's weights it holds (early stopping), or None."""
    trainer.load_state_dict(checkpoint["trainer"])
    progress.load_state_dict(checkpoint["progress"])
    set_rng_state(checkpoint["rng"])
    return checkpoint["best_weights"]


def read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise TrainingError(f"cannot read the checkpoint {path}: {exc}; start a new run folder") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != _FORMAT:
        raise TrainingError(f"{path} is not a fine-tuning checkpoint of this program; start a new run folder")
    if checkpoint.get("version") != _VERSION:
        raise TrainingError(f"{path} was written by another version (format {checkpoint.get('version')})")
    return checkpoint


def check_resumable(
    checkpoint: Mapping[str, Any], config: FineTuneConfig, parent: LoadedModel, run_dir: Path
) -> None:
    """Refuse to resume a run with another network, other parent weights or another recipe."""
    run_spec = ModelSpec.from_json(checkpoint["spec"])
    if run_spec != parent.spec:
        raise TrainingError(
            f"the run in {run_dir} fine-tunes {_describe(run_spec)} but {config.model} is "
            f"{_describe(parent.spec)}; resume with the run's model or start a new run folder"
        )
    if checkpoint["parent_sha256"] != parent.sha256:
        raise TrainingError(
            f"the weights of {config.model} (SHA-256 {parent.sha256[:12]}...) are not the ones the run in "
            f"{run_dir} started from ({checkpoint['parent_sha256'][:12]}...); resume with those weights"
        )
    saved = FineTuneConfig.from_json(checkpoint["config"])
    # the model was checked by its network and weights above: the same file by another path resumes
    changed = [
        f"{name} {getattr(saved, name)!r} -> {getattr(config, name)!r}"
        for name in resume_conflicts(saved, config)
        if name != "model"
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


def crops_fingerprint(images: list[np.ndarray], lr_images: "list[np.ndarray] | None") -> str:
    """SHA-256 of the crops (and LR crops) in order: their dtypes, shapes and pixels."""
    digest = hashlib.sha256()
    for image in [*images, *(lr_images or [])]:
        array = np.ascontiguousarray(image)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.data)
    return digest.hexdigest()


def check_same_crops(checkpoint: Mapping[str, Any], crops_sha256: str, count: int, run_dir: Path) -> None:
    """Refuse to resume on other crops: the split into training and validation would not be the run's."""
    saved = checkpoint.get("crops_sha256")  # absent from checkpoints of earlier versions
    if saved is not None and saved != crops_sha256:
        raise TrainingError(
            f"the run in {run_dir} was trained on other crops ({checkpoint.get('crops', '?')} crop(s), "
            f"SHA-256 {saved[:12]}...; these {count}: {crops_sha256[:12]}...); resume with the run's crops "
            "or start a new run folder"
        )


def check_same_processes(checkpoint: Mapping[str, Any], processes: int, run_dir: Path) -> None:
    """Refuse to resume with another number of processes: the batches of the steps would not be the run's
    (its batch size is per process)."""
    saved = checkpoint.get("processes", 1)  # absent from checkpoints of earlier versions: one process
    if saved == processes:
        return
    batch = checkpoint["batch_size"]
    how = (
        f"torchrun --nproc_per_node {saved} -m napari_microdisk_sr.cli finetune ... --resume"
        if saved > 1
        else "microdisk-sr finetune ... --resume, without torchrun"
    )
    raise TrainingError(
        f"the run in {run_dir} trains with {saved} process(es) of batch {batch} ({saved * batch} pairs a "
        f"step), not {processes}; resume it with as many: {how}"
    )


# The global generators of torch, numpy and Python are seeded and checkpointed so that a resumed run continues
# exactly even if code outside this module (a transform, a library) draws from them; the pairs have their own.


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
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


def set_rng_state(state: Mapping[str, Any]) -> None:
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


def _describe(spec: ModelSpec) -> str:
    return f"{spec} (x{spec.scale})"
