"""How training pairs are made (:class:`PairConfig`), and what becomes of crops smaller than the patch.

The configuration is validated when it is made; :mod:`.pairs` makes the pairs it describes.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .degradation import check_profile
from .errors import InputError
from .intensity import AUTO, Intensity

if TYPE_CHECKING:
    from .calibrate import DegradationProfile

__all__ = [
    "SMALL_CROP_POLICIES",
    "PairConfig",
    "check_small_crops",
    "describe_small_crops",
    "refuse_small_crops",
]

SMALL_CROP_POLICIES = ("pad", "refuse")


def describe_small_crops(sizes: "Sequence[tuple[int, ...]]", patch: int) -> "str | None":
    """Which crops of ``(height, width)`` ``sizes`` are smaller than the patch, in words; None if none."""
    small = [i for i, size in enumerate(sizes) if min(size[:2]) < patch]
    if not small:
        return None
    listed = ", ".join(f"{i} ({sizes[i][0]}x{sizes[i][1]})" for i in small[:5])
    more = f" and {len(small) - 5} more" if len(small) > 5 else ""
    return f"{len(small)} of the {len(sizes)} HR crop(s) smaller than the {patch} px patch: {listed}{more}"


def refuse_small_crops(sizes: "Sequence[tuple[int, ...]]", patch: int) -> None:
    """Raise :class:`InputError` if any crop of ``(height, width)`` ``sizes`` is smaller than the patch."""
    problem = describe_small_crops(sizes, patch)
    if problem is not None:
        raise InputError(f"{problem}; use a smaller patch, larger crop margins, or small_crops='pad'")


def check_small_crops(policy: str) -> None:
    """Raise :class:`InputError` unless ``policy`` is one of :data:`SMALL_CROP_POLICIES`."""
    if policy not in SMALL_CROP_POLICIES:
        raise InputError(f"small_crops must be one of {', '.join(SMALL_CROP_POLICIES)}, got {policy!r}")


@dataclass(frozen=True)
class PairConfig:
    """How training pairs are made.

    Attributes
    ----------
    patch : int
        Side of the square HR patches in pixels; a multiple of ``scale`` (the LR patch is ``patch // scale``).
    scale : int
        Resolution ratio between HR and LR, at least 2.
    degradation : {"bicubic", "realistic", "profile"}
        How synthetic LR patches are made (see :func:`degrade`); unused in paired mode.
    pairs_per_epoch : int
        Number of pairs in one epoch.
    augment : bool
        Apply a random flip/90-degree rotation (one of the 8 symmetries of the square) to each pair.
    seed : int
        Seed of every random choice (non-negative).
    small_crops : {"pad", "refuse"}
        What to do with a crop smaller than ``patch``: mirror-pad it to the patch size, or raise.
    channels : {3, 1}
        Channels of the pairs: 3 (gray crops replicated) or 1 (gray crops only).
    intensity : Intensity
        How the crops' values map to ``[0, 1]`` (see :class:`.intensity.Intensity`; its text form is accepted
        too). HR and LR crops are mapped the same way, each by its own values (its percentiles, in
        ``percentile`` mode, as CSBDeep maps source and target); values beyond the range are kept.
    profile : DegradationProfile or None
        The calibrated microscope of ``degradation="profile"`` (see :mod:`.calibrate`); None otherwise.
    """

    patch: int = 128
    scale: int = 4
    degradation: str = "bicubic"
    pairs_per_epoch: int = 500
    augment: bool = True
    seed: int = 0
    small_crops: str = "pad"
    channels: int = 3
    intensity: Intensity = AUTO
    profile: "DegradationProfile | None" = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "intensity", Intensity.parse(self.intensity))
        for name in ("patch", "scale", "pairs_per_epoch", "seed", "channels"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise InputError(f"{name} must be an integer, got {value!r}")
        if self.scale < 2:
            raise InputError(f"scale must be at least 2, got {self.scale}")
        if self.patch < self.scale or self.patch % self.scale:
            raise InputError(
                f"patch {self.patch} must be a positive multiple of the scale {self.scale} "
                f"(e.g. {max(self.scale, self.patch - self.patch % self.scale)})"
            )
        if self.pairs_per_epoch < 1:
            raise InputError(f"pairs_per_epoch must be at least 1, got {self.pairs_per_epoch}")
        if self.seed < 0:
            raise InputError(f"seed must be non-negative, got {self.seed}")
        check_profile(self.degradation, self.profile, self.scale)
        check_small_crops(self.small_crops)
        if self.channels not in (1, 3):
            raise InputError(f"channels must be 1 or 3, got {self.channels}")
        if not isinstance(self.augment, (bool, np.bool_)):
            raise InputError(f"augment must be True or False, got {self.augment!r}")
