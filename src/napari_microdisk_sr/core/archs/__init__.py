"""The super-resolution networks of Real-ESRGAN, written for this package, one adapter per network.

Each network lives in its own module with its :class:`~._base.Architecture` adapter: :mod:`.rrdbnet`
(x4plus) and :mod:`.srvgg` (the compact models). :data:`ARCHITECTURES` is the explicit registry, by basicsr's
class names; a third network is one new module and one entry here. The rest of the package asks the adapter
(:func:`architecture`, :func:`architecture_of`, :func:`detect_architecture`) instead of branching on a
network's type.
"""

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import InputError, TrainingError, WeightsError, short_list
from ._base import LAYER_GROUPS, Architecture
from .rrdbnet import RRDB, ResidualDenseBlock, RRDBNet, RRDBNetArch
from .srvgg import SRVGGArch, SRVGGNetCompact

__all__ = [
    "ARCHITECTURES",
    "LAYER_GROUPS",
    "RRDB",
    "Architecture",
    "RRDBNet",
    "ResidualDenseBlock",
    "SRVGGNetCompact",
    "architecture",
    "architecture_of",
    "detect_architecture",
    "freeze_first_blocks",
    "layer_groups",
]

ARCHITECTURES: dict[str, Architecture] = {arch.name: arch for arch in (RRDBNetArch(), SRVGGArch())}
"""The networks' adapters by the class names used in basicsr, Real-ESRGAN and our sidecar files."""


def architecture(name: str) -> Architecture:
    """The adapter of the network called ``name`` (basicsr's class name).

    Raises
    ------
    InputError
        For an unknown name.
    """
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}") from None


def architecture_of(module: nn.Module) -> Architecture:
    """The adapter of a built network.

    Raises
    ------
    TrainingError
        For a module that is none of :data:`ARCHITECTURES`.
    """
    for arch in ARCHITECTURES.values():
        if arch.owns(module):
            return arch
    raise TrainingError(f"cannot fine-tune a {type(module).__name__}: only {' and '.join(ARCHITECTURES)}")


def detect_architecture(state_dict: Mapping[str, torch.Tensor]) -> tuple[Architecture, dict[str, Any]]:
    """The network that ``state_dict`` (basicsr key names) was saved from, and its constructor arguments.

    Raises
    ------
    WeightsError
        If the keys match no network, or match one whose shapes cannot be read.
    """
    for arch in ARCHITECTURES.values():
        params = arch.detect(state_dict)
        if params is not None:
            return arch, params
    raise WeightsError(
        f"the weights are neither an RRDBNet nor an SRVGGNetCompact (keys: {short_list(list(state_dict), 4)})"
    )


def layer_groups(module: nn.Module) -> dict[str, str]:
    """The layer group (one of :data:`LAYER_GROUPS`) of every entry of ``module.state_dict()``.

    See each adapter's ``group_prefixes`` for what belongs to "first" and "upsampler"; the rest is "body".

    Raises
    ------
    TrainingError
        For a network of another architecture.
    """
    return architecture_of(module).layer_groups(module)


def freeze_first_blocks(module: nn.Module, n: int) -> list[str]:
    """Freeze the input end of ``module``: its first ``n`` blocks as its adapter defines them.

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
    TrainingError
        For a network of another architecture.
    """
    if n == 0:
        return []
    frozen = architecture_of(module).leading_layers(module, n)
    ids = {id(p) for layer in frozen for p in layer.parameters()}
    names = [name for name, p in module.named_parameters() if id(p) in ids]
    for layer in frozen:
        layer.requires_grad_(False)
    return names
