"""Copies of a network on a device for inference: private, float32, in the device's fast memory format.

A job never runs the caller's module itself (training may go on meanwhile). A LoadedModel stands for the
weights of its file, so its copy on a device is made once and reused (copying x4plus takes ~50 ms) until a
parameter or buffer is replaced or changed; a bare module is copied for each job.
"""

import copy
import itertools
import threading
import weakref

import torch
from torch import nn

from .device import describe_device
from .errors import MicrodiskSRError

__all__ = ["copied", "memory_format", "prepared"]


def memory_format(device: torch.device) -> torch.memory_format:
    return torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format


_PREPARED: "weakref.WeakKeyDictionary[nn.Module, dict[torch.device, tuple[tuple, nn.Module]]]" = (
    weakref.WeakKeyDictionary()
)
_PREPARED_LOCK = threading.Lock()


def prepared(module: nn.Module, device: torch.device) -> nn.Module:
    """The copy of a LoadedModel's module on ``device``, made once and reused (copying x4plus takes ~50 ms).

    A LoadedModel stands for the weights of its file, so its module is not expected to train. The copy is
    remade when a parameter or buffer has been replaced or changed by a tracked in-place operation (its
    data pointer or version counter differ; ``load_state_dict`` counts, a fused optimiser step does not);
    it lives as long as the module.
    """
    fingerprint = _fingerprint(module)
    with _PREPARED_LOCK:
        cached = _PREPARED.get(module, {}).get(device)
        if fingerprint is not None and cached is not None and cached[0] == fingerprint:
            return cached[1]
    prepared = copied(module, device)
    if fingerprint is not None:
        with _PREPARED_LOCK:
            _PREPARED.setdefault(module, {})[device] = (fingerprint, prepared)
    return prepared


def copied(module: nn.Module, device: torch.device) -> nn.Module:
    """A private float32 copy of ``module`` on ``device``, in its fast memory format, without gradients."""
    try:
        copied = copy.deepcopy(module).requires_grad_(False)
        for parameter in copied.parameters():
            parameter.grad = None
        return copied.to(device=device, dtype=torch.float32, memory_format=memory_format(device))
    except torch.OutOfMemoryError as exc:
        raise MicrodiskSRError(
            f"not enough memory on {describe_device(device)} for the model; free memory or run on the CPU"
        ) from exc


def _fingerprint(module: nn.Module) -> "tuple | None":
    """Identity and in-place version of every parameter and buffer; None where versions are not tracked."""
    tensors = itertools.chain(module.named_parameters(), module.named_buffers())
    try:
        return tuple((name, t.data_ptr(), t._version) for name, t in tensors)
    except RuntimeError:  # inference tensors (made under torch.inference_mode) have no version counter
        return None
