"""Choosing and describing the compute device."""

import logging

import torch

from .errors import InputError

log = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def is_device_name(name: str) -> bool:
    """Whether :func:`resolve_device` understands ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``).

    Only the spelling is checked, not whether the device is available, so settings can be validated on a
    machine other than the one that runs them.
    """
    key = name.strip().lower()
    return key in DEVICE_CHOICES or (key.startswith("cuda:") and key[5:].isdigit())


def resolve_device(name: "str | torch.device" = "auto") -> torch.device:
    """Return the torch device for ``name``: ``auto`` picks CUDA, then Apple MPS, then the CPU.

    Parameters
    ----------
    name : {"auto", "cpu", "cuda", "cuda:N", "mps"} or torch.device
    """
    if isinstance(name, torch.device):
        return name
    key = str(name).strip().lower()
    if not is_device_name(key):
        raise InputError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)} or cuda:N")
    if key == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(
                f"device {name!r} was asked for but no CUDA GPU is available; use --device cpu or auto"
            )
        return torch.device(key)
    if not _mps_available():  # key == "mps"
        raise InputError(
            "device 'mps' was asked for but Apple MPS is not available; use --device cpu or auto"
        )
    return torch.device("mps")


def describe_device(device: "str | torch.device") -> str:
    """A short description, e.g. ``CUDA: NVIDIA H100 80GB HBM3``, ``Apple MPS`` or ``CPU (2 threads)``."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(dev)}"
    if dev.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where autocast makes work faster.

    Elsewhere PyTorch emulates bfloat16 and autocast would make it slower.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def half_dtype(device: torch.device) -> "torch.dtype | None":
    """The 16-bit float that half precision autocasts to on ``device``, or None where it would not pay.

    float16 on CUDA; bfloat16 on CPUs with native bfloat16 (x4plus inference about 2x faster there); None
    on other CPUs (emulated, slower) and on Apple MPS.
    """
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None
