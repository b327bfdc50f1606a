"""The data of a fine-tuning run: the crops checked and named, split by disk, and turned into pairs.

:func:`gather_crops` accepts a :class:`~..crops.CropSet` or a list of arrays and says how to name them in
the provenance; :func:`make_pairs` splits them into training and validation disks (by the seed) and makes the
training pairs' sampler and the fixed validation pairs (see :mod:`..pairs`).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..crops import CropSet
from ..degradation import PROFILE
from ..errors import InputError
from ..images import check_finite
from ..models import ModelSpec
from ..pair_config import PairConfig, refuse_small_crops
from ..pairs import PairSampler, split_by_disk, validation_pairs
from .config import FineTuneConfig

__all__ = ["CropRecord", "RunPairs", "gather_crops", "make_pairs"]


@dataclass(frozen=True)
class CropRecord:
    """Which crops a run learnt from, for its provenance and its resume check.

    Attributes
    ----------
    source : mapping
        ``{"folder": ..., "files": [...]}`` for a crop set on disk (with ``"lr_files": [...]`` for a paired
        set, whose LR crops the command line and the widget always train on), ``{"arrays": [shapes]}`` for
        arrays.
    train, validation : tuple of int
        Indices of the crops in the training and the validation set (whole disks, split by the seed).
    sha256 : str
        Of the crops (and LR crops) in order: their dtypes, shapes and pixels.
    """

    source: Mapping[str, Any]
    train: tuple[int, ...]
    validation: tuple[int, ...]
    sha256: str

    @property
    def count(self) -> int:
        return len(self.train) + len(self.validation)

    def to_json(self) -> dict[str, Any]:
        return dict(self.source) | {
            "train": list(self.train),
            "validation": list(self.validation),
            "sha256": self.sha256,
        }


@dataclass(frozen=True, eq=False)
class RunPairs:
    """The pairs of a run: training pairs drawn afresh every epoch, fixed validation pairs (or None)."""

    sampler: PairSampler
    val: "tuple[torch.Tensor, torch.Tensor] | None"
    train_idx: list[int]
    val_idx: list[int]


def gather_crops(
    crops: "CropSet | Sequence[np.ndarray]", what: str
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """The crops as a list of arrays, checked finite, and how to name them in the provenance.

    Raises
    ------
    InputError
        For neither a CropSet nor a sequence of images, no crops, or a crop with NaN or infinite values.
    """
    if isinstance(crops, CropSet):
        images = list(crops.images)
        source: dict[str, Any] = {
            "folder": str(crops.folder),
            "files": [row.get("file", "") for row in crops.rows],
        }
        if crops.paired:
            source["lr_files"] = [row["lr_file"] for row in crops.rows]
    elif isinstance(crops, np.ndarray) or not isinstance(crops, Sequence):
        raise InputError(f"{what} must be a CropSet or a list of images, got {type(crops).__name__}")
    else:
        images = list(crops)
        source = {"arrays": [list(np.shape(image)) for image in images]}
    if not images:
        raise InputError(f"no {what} to train on; select and crop at least one disk")
    names = source.get("files") or [f"{what} {i}" for i in range(len(images))]
    for name, image in zip(names, images, strict=True):  # by name here: the pairs count after the split
        check_finite(image, name)
    return images, source


def make_pairs(
    images: list[np.ndarray],
    lr_images: "list[np.ndarray] | None",
    config: FineTuneConfig,
    spec: ModelSpec,
) -> RunPairs:
    """Split the crops by disk and make the run's pairs for a network of ``spec``.

    Raises
    ------
    InputError
        If early stopping is asked for but the crops leave no validation set, or the crops cannot make
        pairs (see :class:`~..pairs.PairSampler`).
    """
    pair_config = PairConfig(
        patch=config.patch,
        scale=spec.scale,
        degradation=config.degradation if config.profile is None else PROFILE,
        pairs_per_epoch=config.pairs_per_epoch,
        augment=config.augment,
        seed=config.seed,
        small_crops=config.small_crops,
        channels=spec.in_channels,
        intensity=config.intensity,
        profile=config.profile,
    )
    if config.small_crops == "refuse":  # all of them, before the split: numbered as the user knows them
        refuse_small_crops([image.shape[:2] for image in images], config.patch)
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
    return RunPairs(sampler, val, train_idx, val_idx)
