"""Shared helpers of the benchmarks: arguments, timing, peak memory, the reference packages and the results.

Each benchmark is a script, ``python benchmarks/<name>.py [--quick] [--device DEV]``, that prints a small
table, writes ``benchmarks/results/<name>-<machine>.json`` and ends with the line ``ratio: <x>``.
"""

import argparse
import contextlib
import ctypes
import gc
import io
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_microdisk_sr.core.device import describe_device, resolve_device

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
MEMORY = {
    "cuda": "peak of torch.cuda.memory_allocated during the call, minus the amount before it",
    "cpu": "peak resident set (VmHWM) during the call, minus the resident set before it",
}
"""How :func:`measured` reads peak memory, per device type."""


def parse_args(
    description: str, add_arguments: "Callable[[argparse.ArgumentParser], None] | None" = None
) -> argparse.Namespace:
    """The common command line: ``--quick`` (small settings for a 2-core CPU), ``--device``, ``--threads``,
    ``--results``, and what ``add_arguments(parser)`` adds."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="small settings that finish in ~2 min on 2 CPU cores"
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: 1 with --quick on the CPU, else one per core)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS_DIR,
        help=f"folder of the results file (default: {RESULTS_DIR})",
    )
    if add_arguments is not None:
        add_arguments(parser)
    return parser.parse_args()


def machine_name(device: torch.device) -> str:
    """A file-name slug for the machine: ``cpu-2core`` or the GPU's name (``nvidia-h100-80gb-hbm3``)."""
    if device.type == "cuda":
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
    if device.type == "mps":
        return "apple-mps"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"cpu-{cores}core"


def _version(distribution: str) -> "str | None":
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _git_revision() -> "str | None":
    """``HEAD``'s hash, with ``+dirty`` when the tree has changes; None outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def _cpu_model() -> str:
    """The processor's model name (Linux), else its architecture."""
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        if found:
            return found.group(1).strip()
    return platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    """Machine, device and versions, for the results file."""
    env = {
        "machine": machine_name(device),
        "device": describe_device(device),
        "cpu": _cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "git": _git_revision(),
        "versions": {
            name: _version(name)
            for name in (
                "napari-microdisk-sr",
                "torch",
                "numpy",
                "opencv-python-headless",
                "basicsr",
                "realesrgan",
            )
        },
    }
    if device.type == "cuda":
        env["versions"]["cuda"] = torch.version.cuda
        env["versions"]["cudnn"] = torch.backends.cudnn.version()
        cudnn = torch.backends.cudnn
        env["cudnn"] = {"allow_tf32": cudnn.allow_tf32, "benchmark": cudnn.benchmark}
    return env


def setup(args: argparse.Namespace) -> torch.device:
    """Resolve ``--device`` and set the torch CPU threads.

    ``--quick`` on the CPU runs one thread unless ``--threads`` says otherwise: it is meant for a small
    machine shared with other work, where each of torch's threads waits for the others at every operation, so
    a thread that the system pauses stalls them all (measured on a 2-core machine at load 4: a training step
    of the compact model took 87 ms on one thread, 2.1 s on two).
    """
    device = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    elif args.quick and device.type == "cpu":
        torch.set_num_threads(1)
    return device


def import_basicsr() -> "tuple[Any, str | None]":
    """basicsr's ``archs`` package (the reference networks), or ``(None, why)`` when it cannot be imported.

    basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``, which current torchvision no longer
    has; the functions it needs live in ``torchvision.transforms.functional``.
    """
    try:
        import torchvision.transforms.functional as tv_functional

        sys.modules.setdefault("torchvision.transforms.functional_tensor", tv_functional)
        from basicsr import archs
    except ImportError as exc:
        return None, f"basicsr cannot be imported ({exc})"
    return archs, None


def import_realesrganer() -> "tuple[Any, str | None]":
    """Real-ESRGAN 0.3.0's ``RealESRGANer`` class, or ``(None, why)`` when it cannot be imported.

    ``realesrgan/__init__`` imports basicsr's training code but neither facexlib nor gfpgan.
    """
    _, why = import_basicsr()
    if why:
        return None, why
    try:
        from realesrgan.utils import RealESRGANer
    except ImportError as exc:
        return None, f"realesrgan cannot be imported ({exc})"
    return RealESRGANer, None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow what a reference implementation prints (RealESRGANer prints a line per tile)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any, "int | None"]:
    """Run ``fn()``; return its wall-clock seconds, its result and its peak memory in bytes.

    The peak memory is what the call needed beyond what was in use before it: on CUDA the peak of
    ``torch.cuda.memory_allocated``; on the CPU the peak resident set (the kernel's ``VmHWM``, reset first
    through ``/proc/self/clear_refs``, after freed heap pages went back to the system; Linux only, else
    None); elsewhere None. The CPU allocator of torch keeps no cache, so this is the call's working memory.
    """
    before = None
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    elif device.type == "cpu":
        release_freed_memory()
        before = _reset_peak_rss()
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    seconds = time.perf_counter() - start
    if before is None:
        return seconds, result, None
    if device.type == "cuda":
        return seconds, result, torch.cuda.max_memory_allocated(device) - before
    return seconds, result, _proc_status_bytes("VmHWM") - before


def _proc_status_bytes(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return 1024 * int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1))


def _reset_peak_rss() -> "int | None":
    """Reset the kernel's peak resident set of this process to the current one; return it (None if unable)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _proc_status_bytes("VmRSS")
    except OSError:
        return None


def release_freed_memory() -> None:
    """Collect garbage and return the C heap's free pages to the system (glibc): RSS becomes memory in use."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def best_and_median(values: Sequence[float]) -> tuple[float, float]:
    """The smallest and the median of timings. Other processes only ever add time, so on a shared machine the
    smallest is the best estimate of the cost; the median shows how much the runs were disturbed."""
    array = np.asarray(values, dtype=float)
    return float(array.min()), float(np.median(array))


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Print ``rows`` as an aligned text table of ``columns`` (floats with 4 significant digits)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "-" if value is None else str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def write_results(
    name: str, device: torch.device, payload: dict[str, Any], folder: Path = RESULTS_DIR
) -> Path:
    """Write the environment and ``payload`` to ``<folder>/<name>-<machine>.json``; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    env = environment(device)
    path = folder / f"{name}-{env['machine']}.json"
    record = {"benchmark": name, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **env, **payload}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
