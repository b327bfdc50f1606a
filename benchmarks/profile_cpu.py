"""Where the time goes on the CPU: ``torch.profiler`` over one x4plus tile and one x4plus training step.

Profiles, after one warm-up call each: ``core.infer.upscale`` and ``RealESRGANer`` (when installed) on one
80x80 RGB image, untiled, so that each is one network call on a tile-sized input; then one training step
(batch 2, 128 px HR patches) of ``core.train.fine_tune`` and of the plain loop of ``bench_finetune.py``.
Each table lists the operators by their own CPU time.

Usage: ``python benchmarks/profile_cpu.py [--threads N] [--rows N]``
"""

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common
import bench_finetune
import bench_upscale
import torch
from torch.profiler import ProfilerActivity, profile

TILE = 80


def show(label: str, fn: Callable[[], Any], rows: int) -> None:
    """Warm up ``fn``, then profile one call and print its operators by self CPU time."""
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
    print(f"\n== {label}: {seconds:.3f} s under the profiler")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=36))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    parser.add_argument("--rows", type=int, default=10, help="operators per table (default: 10)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")

    tile = bench_upscale.sample_image(TILE)
    _, why = _common.import_realesrganer()
    if why:
        print(f"RealESRGANer is not profiled: {why}")
    for impl, cls in bench_upscale.IMPLEMENTATIONS.items():
        if why and cls is bench_upscale.Theirs:
            continue
        run = cls(cpu, tile=0, pad=0, half=False)
        show(f"x4plus, one {TILE}x{TILE} tile, {impl}", lambda run=run: run(tile), args.rows)

    case = bench_finetune.Case("realesrgan-x4plus", batch=2, warmup=1, steps=1, turn=1)
    crops = bench_finetune.training_crops()
    with tempfile.TemporaryDirectory(prefix="profile-cpu-") as tmp:
        ours = bench_finetune.Ours(case, crops, cpu, Path(tmp) / "ours")
        plain = bench_finetune.Plain(case, crops, cpu)
        for name, contender in (("ours", ours), ("plain loop", plain)):
            show(f"x4plus, one training step (batch 2), {name}", lambda c=contender: c.advance(1), args.rows)
        ours.stop_seconds()


if __name__ == "__main__":
    main()
