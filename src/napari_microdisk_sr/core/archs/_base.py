"""What every network adapter answers, and the small pieces the networks share.

An :class:`Architecture` is everything the rest of the package knows about one network: the module class, how
to recognise its weights, its scale and input size rules, the context tiled inference needs, its layer groups
for layer-wise learning rates, and what "freeze the first N blocks" means for it. Code outside
:mod:`.archs` asks the adapter and never branches on the network's type.
"""

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import InputError, WeightsError

__all__ = ["LAYER_GROUPS", "Architecture", "check_positive", "conv3x3", "shape_of"]

LAYER_GROUPS = ("first", "body", "upsampler")
"""Layer groups of layer-wise learning rates and of ``weight_change.csv``: the first convolution, the body,
and the upsampler with the last convolution."""


def check_positive(**values: int) -> None:
    """Raise :class:`InputError` for any value that is not a positive integer."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")


def conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    """A "same" 3x3 convolution with bias."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=1)


def shape_of(state_dict: Mapping[str, torch.Tensor], key: str, ndim: int) -> tuple[int, ...]:
    """The shape of ``state_dict[key]``, which must exist and have ``ndim`` dimensions."""
    if key not in state_dict:
        raise WeightsError(f"the weights lack {key}, which the architecture needs")
    shape = tuple(state_dict[key].shape)
    if len(shape) != ndim:
        raise WeightsError(f"the weights' {key} has shape {shape}, expected {ndim} dimensions")
    return shape


def indices(state_dict: Mapping[str, Any], pattern: str) -> set[int]:
    """The integers captured by ``pattern`` (one group) in the keys of ``state_dict`` it matches whole."""
    compiled = re.compile(pattern)
    return {int(m.group(1)) for key in state_dict if (m := compiled.fullmatch(key))}


class Architecture(ABC):
    """One network as the package sees it; subclasses describe RRDBNet and SRVGGNetCompact.

    Methods take the network's full constructor arguments (``ModelSpec.kwargs``) or a built module.
    """

    name: ClassVar[str]
    """basicsr's class name, used in sidecar files and specs."""
    network: ClassVar[type[nn.Module]]
    """The module class; its constructor arguments are the spec's parameters, its ``validate`` checks them."""

    def build(self, kwargs: Mapping[str, Any]) -> nn.Module:
        """A new, randomly initialised network (float32, on the current default device)."""
        return self.network(**kwargs)

    def owns(self, module: nn.Module) -> bool:
        """Whether ``module`` is this network."""
        return isinstance(module, self.network)

    @abstractmethod
    def scale(self, kwargs: Mapping[str, Any]) -> int:
        """Upscaling factor: output size / input size."""

    def size_multiple(self, kwargs: Mapping[str, Any]) -> int:
        """Input height and width must be multiples of this."""
        return 1

    def receptive_radius(self, kwargs: Mapping[str, Any]) -> int:
        """Input pixels on each side that an output pixel can depend on (exact)."""
        return self.network.receptive_radius(**kwargs)

    @abstractmethod
    def tile_pad(self, kwargs: Mapping[str, Any]) -> int:
        """Recommended context, in input pixels, around each tile of tiled inference."""

    @abstractmethod
    def detect(self, state_dict: Mapping[str, torch.Tensor]) -> "dict[str, Any] | None":
        """The constructor arguments that ``state_dict`` was saved from; None if its keys are not this
        network's.

        Raises
        ------
        WeightsError
            If the keys are this network's but the shapes cannot be read.
        """

    @abstractmethod
    def group_prefixes(self, module: nn.Module) -> dict[str, tuple[str, ...]]:
        """Key prefixes of the "first" and "upsampler" groups of :data:`LAYER_GROUPS`; the rest is "body"."""

    @abstractmethod
    def leading_layers(self, module: nn.Module, n: int) -> list[nn.Module]:
        """The layers frozen by "freeze the first ``n`` blocks", from the input end.

        Raises
        ------
        InputError
            If ``n`` is more than the blocks that leave something to train.
        """

    def layer_groups(self, module: nn.Module) -> dict[str, str]:
        """The group (one of :data:`LAYER_GROUPS`) of every entry of ``module.state_dict()``."""
        prefixes = self.group_prefixes(module)
        return {
            name: next((g for g, starts in prefixes.items() if name.startswith(starts)), "body")
            for name in module.state_dict()
        }

    @staticmethod
    def too_many(n: int, limit: int, what: str) -> InputError:
        """The error for freezing ``n`` blocks of a network that has ``limit`` of them."""
        return InputError(
            f"freeze_blocks {n} is more than the model's {limit} {what}; freeze at most {limit}"
        )
