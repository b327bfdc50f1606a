"""Upscaling at scale: peak memory of OME-Zarr output, and throughput on local dask workers.

One function per part, chosen with ``--part`` (default: all, in turn); each part prints its table, writes
``results/bench_scale-<part>-<machine>.json`` and ends with its ``ratio: <x>`` line.

``memory``: for fields of several sizes (uint16, 12-bit, the compact model), the peak resident memory of
``core.ome_zarr.upscale_to_ome_zarr`` (lazy input from an OME-Zarr store, output written block by block with
its pyramid) must stay flat as the image grows, while that of ``core.infer.upscale`` (the whole result in
memory) grows with the output. The ratio is the in-memory peak over the OME-Zarr peak at the largest size;
the script exits with 1 when the two outputs differ by more than 1.

``throughput``: the same folder of synthetic microdisk fields (``core.sample``), upscaled by the compact
model into a fresh output folder per run, by three contenders in turn: this process alone (the command line
without ``--scheduler``: ``core.batch.upscale_file`` in a loop), a local cluster of 1 worker process and one
of 2 (``core.distributed``). Threads as the command line gives them: this process every core, each worker an
equal share; ``--quick`` on the CPU gives every process one thread (so 1 worker uses one core, 2 workers
two), as the other benchmarks do on a small shared machine, where threads that wait for one another at every
operation stall whenever the system pauses one of them. The clusters are started, and each has run the
folder once (every worker has loaded the model), before the timed runs, which alternate between the
contenders; starting a cluster is timed apart. Speed is fields per second of the fastest run (the median
beside it). Every output must be the same bits as this process's (else the script exits with 1). The ratio
is the speed of 2 workers over that of 1.

``resume``: the command line (``microdisk-sr upscale --format ome-zarr``, the compact model) upscales one
field without interruption, then again in a subprocess that is SIGKILLed once about half its blocks are
marked written (half its level-0 blocks), then the same command resumes that run. Both timed runs are in
this process (the model loaded each time, as the command does), after an untimed run on a small field. The
result must equal the uninterrupted one bit for bit, in every level (else the script exits with 1). The
ratio is the uninterrupted run's time over the resumed run's.

Usage: ``python benchmarks/bench_scale.py [--part memory|throughput|resume|all] [--quick] [--device DEV]
[--threads N]``
"""

import argparse
import contextlib
import ctypes
import dataclasses
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common
import dask.array as da
import numpy as np
import torch
import zarr
from ome_zarr.writer import write_image

from napari_microdisk_sr import cli
from napari_microdisk_sr.core import batch, distributed, infer, unfinished
from napari_microdisk_sr.core.device import describe_device
from napari_microdisk_sr.core.infer import UpscaleConfig, upscale_array
from napari_microdisk_sr.core.io import read_image, write_tiff
from napari_microdisk_sr.core.lazy import open_lazy
from napari_microdisk_sr.core.models import load_model
from napari_microdisk_sr.core.ome_zarr import BLOCK, upscale_to_ome_zarr
from napari_microdisk_sr.core.progress import drive
from napari_microdisk_sr.core.sample import make_scene
from napari_microdisk_sr.core.weights import file_sha256

NAME = "bench_scale"
MODEL = "realesr-animevideov3"
BITS = 12
INTENSITY = f"bits:{BITS}"  # 12-bit camera data in uint16 files: the mapping reads no values
CPU = torch.device("cpu")


@dataclasses.dataclass(frozen=True)
class Memory:
    """What the memory part runs."""

    sizes: tuple[int, ...]  # input sides in pixels; the outputs are 4x
    tile: int
    block: int


MEMORY_QUICK = Memory(sizes=(768, 1280, 1792), tile=256, block=BLOCK)
MEMORY_FULL = Memory(sizes=(1024, 2048, 3072), tile=256, block=BLOCK)


def make_field(side: int, folder: Path) -> Path:
    """A 12-bit uint16 field of ``side`` pixels as an OME-Zarr store, written chunk by chunk by ome-zarr."""
    field = da.random.default_rng(side).integers(0, 2**BITS, (side, side), chunks=256, dtype=np.uint16)
    store = folder / f"field{side}.ome.zarr"
    write_image(field, zarr.open_group(str(store), mode="w"), axes=["y", "x"], scale_factors=[],
                storage_options={"chunks": (256, 256)})  # fmt: skip
    return store


def measure_memory(settings: Memory, device: torch.device, folder: Path) -> dict[str, Any]:
    """Peak host memory of OME-Zarr output and of in-memory upscaling, at each size."""
    model = load_model(MODEL)
    config = UpscaleConfig(tile=settings.tile, device=str(device), intensity=INTENSITY)
    # First calls allocate thread pools and a convolution cache per block shape (3x3 blocks have them all)
    warm = make_field(768, folder)
    drive(upscale_to_ome_zarr(open_lazy(warm), model, folder / "warm.ome.zarr", config=config, levels=3))
    upscale_array(
        open_lazy(warm).data.compute(), model, tile=settings.tile, device=device, intensity=INTENSITY
    )
    rows = []
    for side in settings.sizes:
        store = make_field(side, folder)
        target = folder / f"field{side}_x4.ome.zarr"

        def ours(store: Path = store, target: Path = target) -> Any:
            job = upscale_to_ome_zarr(open_lazy(store), model, target, config=config, block=settings.block)
            return drive(job)

        image = open_lazy(store).data.compute()  # the baseline's input, in memory before its call

        def in_memory(image: np.ndarray = image) -> Any:
            return upscale_array(image, model, tile=settings.tile, device=device, intensity=INTENSITY)

        output_mib = (4 * side) ** 2 * 2 / 2**20
        for impl, run in (("ome-zarr", ours), ("in-memory", in_memory)):
            rows.append(_row(impl, side, output_mib, run))
        result = rows[-2]["result"]
        expected = rows[-1].pop("result")
        written = zarr.open_array(str(result.path / "0"), mode="r")
        window = (slice(0, 512), slice(4 * side - 512, 4 * side))  # a corner: blocks at the border and inside
        rows[-2]["max_err_vs_in_memory"] = int(
            np.abs(written[window].astype(np.int64) - expected[window]).max()
        )
        rows[-2]["levels"] = len(result.shapes)
        rows[-2].pop("result")
    ours_peaks = [row["peak_mib"] for row in rows if row["impl"] == "ome-zarr"]
    theirs_peaks = [row["peak_mib"] for row in rows if row["impl"] == "in-memory"]
    return {
        "rows": rows,
        "flatness": ours_peaks[-1] / ours_peaks[0],  # 1: flat
        "in_memory_growth": theirs_peaks[-1] / theirs_peaks[0],
        "ratio": theirs_peaks[-1] / ours_peaks[-1],
    }


def _row(impl: str, side: int, output_mib: float, run: Callable[[], Any]) -> dict[str, Any]:
    seconds, result, peak = _common.measured(run, CPU)  # host memory: where a result that does not fit is
    return {
        "impl": impl,
        "input_px": side,
        "output_px": 4 * side,
        "output_mib": output_mib,
        "seconds": seconds,
        "peak_mib": None if peak is None else peak / 2**20,
        "result": result,
    }


def fix_mmap_threshold() -> None:
    """Give every allocation over 1 MiB its own mapping, returned to the system when freed (glibc).

    By default glibc raises its mmap threshold after each large free (up to 32 MiB), so the network's freed
    activations (about 20 MiB each with the compact model) stay in the heap, and the peak resident set of a
    call depends on what earlier calls left there: the same job measured 105 to 200 MiB.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (fixed: no more adjusting)


def memory(args: argparse.Namespace, device: torch.device) -> float:
    """Peak memory of OME-Zarr output against in-memory upscaling; returns the in-memory peak over ours at
    the largest size."""
    fix_mmap_threshold()
    settings = MEMORY_QUICK if args.quick else MEMORY_FULL
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        memory = measure_memory(settings, device, Path(tmp))
    print(
        f"OME-Zarr output vs in-memory: {MODEL}, uint16 ({BITS}-bit) fields, tile {settings.tile}, "
        f"block {settings.block}, {describe_device(device)}"
    )
    _common.print_table(
        memory["rows"],
        (
            "impl",
            "input_px",
            "output_px",
            "output_mib",
            "seconds",
            "peak_mib",
            "levels",
            "max_err_vs_in_memory",
        ),
    )
    print(f"(peak memory: {_common.MEMORY['cpu']})")
    print(
        f"OME-Zarr peak, largest / smallest size: {memory['flatness']:.2f} (in memory: "
        f"{memory['in_memory_growth']:.2f})"
    )
    path = _common.write_results(
        f"{NAME}-memory",
        device,
        folder=args.results,
        payload={
            "settings": dataclasses.asdict(settings)
            | {"quick": args.quick, "model": MODEL, "intensity": INTENSITY},
            "memory": _common.MEMORY["cpu"],
        }
        | memory,
    )
    print(f"results: {path}")
    if not all(row.get("max_err_vs_in_memory", 0) <= 1 for row in memory["rows"]):
        sys.exit("OME-Zarr output differs from the in-memory result by more than 1")
    return memory["ratio"]


@dataclasses.dataclass(frozen=True)
class Throughput:
    """What the throughput part runs.

    Attributes
    ----------
    fields : int
        Files in the folder.
    size : int
        Side of each LR field (uint16, gray).
    tile : int
        Tile side in LR pixels.
    workers : tuple of int
        The local clusters' sizes.
    repeats : int
        Timed runs per contender.
    """

    fields: int
    size: int
    tile: int
    workers: tuple[int, ...] = (1, 2)
    repeats: int = 3


THROUGHPUT_QUICK = Throughput(fields=8, size=192, tile=256)
THROUGHPUT_FULL = Throughput(fields=32, size=512, tile=256)


def make_folder(folder: Path, settings: Throughput) -> list[Path]:
    """The plate: ``settings.fields`` synthetic uint16 fields."""
    folder.mkdir(parents=True)
    return [
        write_tiff(
            folder / f"field{seed:03d}.tif",
            make_scene(seed=seed, size=(settings.size,) * 2, dtype="uint16").lr,
        )
        for seed in range(settings.fields)
    ]


def jobs_into(paths: list[Path], out: Path, model: Any, config: infer.UpscaleConfig) -> list[batch.FileJob]:
    """The command line's jobs for ``paths`` into the new folder ``out``."""
    out.mkdir(parents=True)
    made_with = batch.output_settings(model, config, torch.device("cpu"))
    return [
        batch.FileJob(
            path, out / f"{path.stem}_x4.tif", made_with | {"input_sha256": file_sha256(path)}, config
        )
        for path in paths
    ]


def throughput(args: argparse.Namespace, device: torch.device) -> float:
    """1 and 2 local workers against this process alone; returns the speed of 2 workers over 1."""
    settings = THROUGHPUT_QUICK if args.quick else THROUGHPUT_FULL
    cores = _cpu_count()
    # Every contender gets the cores: this process all, each worker its share; --quick one thread each.
    quick_cpu = args.quick and device.type == "cpu" and args.threads is None
    torch.set_num_threads(1 if quick_cpu else args.threads or cores)
    config = infer.UpscaleConfig(tile=settings.tile, device=args.device)
    model = load_model(MODEL)
    sha256 = model.sha256
    scratch = Path(tempfile.mkdtemp(prefix="bench_scale-"))
    try:
        paths = make_folder(scratch / "plate", settings)
        runs = iter(range(10**6))

        def fresh() -> list[batch.FileJob]:
            return jobs_into(paths, scratch / f"run{next(runs)}", model, config)

        def alone() -> list[Path]:
            return [batch.upscale_file(job, model).output for job in fresh()]

        contenders: dict[str, Callable[[], list[Path]]] = {"this process": alone}
        threads = {"this process": torch.get_num_threads()}
        started: dict[str, float] = {}
        with contextlib.ExitStack() as stack:
            for count in settings.workers:
                begin = time.perf_counter()
                each = 1 if quick_cpu else args.threads or max(1, cores // count)
                scheduler = distributed.Scheduler(local_workers=count)
                client = stack.enter_context(distributed.connect(scheduler, threads=each))
                started[f"{count} worker(s)"] = time.perf_counter() - begin

                def on_cluster(client: Any = client) -> list[Path]:
                    files = distributed.upscale_files(client, fresh(), MODEL, sha256)
                    return [done.output for done in files]

                contenders[f"{count} worker(s)"] = on_cluster
                threads[f"{count} worker(s)"] = each
            reference = alone()  # warm-up, and the bits every contender must give
            expected = {path.name: read_image(path).data for path in reference}
            for name, run in contenders.items():
                if name != "this process":
                    _check_same(run(), expected, name)  # warm-up: every worker loads the model
            timings: dict[str, list[float]] = {name: [] for name in contenders}
            for _ in range(settings.repeats):
                for name, run in contenders.items():
                    begin = time.perf_counter()
                    outputs = run()
                    timings[name].append(time.perf_counter() - begin)
                    _check_same(outputs, expected, name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    rows = []
    for name, values in timings.items():
        best, median = _common.best_and_median(values)
        rows.append(
            {
                "contender": name,
                "threads_each": threads[name],
                "start_s": started.get(name),
                "seconds": best,
                "median_s": median,
                "runs_s": values,
                "fields_per_s": settings.fields / best,
            }
        )
    _common.print_table(rows, ["contender", "threads_each", "start_s", "seconds", "median_s", "fields_per_s"])
    speed = {row["contender"]: row["fields_per_s"] for row in rows}
    ratio = speed["2 worker(s)"] / speed["1 worker(s)"]
    versus_alone = speed["2 worker(s)"] / speed["this process"]
    print(f"2 workers / 1 worker: {ratio:.3f}; 2 workers / this process: {versus_alone:.3f}")
    path = _common.write_results(
        f"{NAME}-throughput",
        device,
        {
            "settings": dataclasses.asdict(settings) | {"quick": args.quick, "model": MODEL, "cores": cores},
            "rows": rows,
            "ratio": ratio,
            "ratio_vs_this_process": versus_alone,
            "outputs": "every run's outputs were the same bits as this process's",
        },
        args.results,
    )
    print(f"results: {path}")
    return ratio


RESUME_SIDE = {True: 768, False: 1536}
"""The resumed field's side in pixels, with and without ``--quick`` (9 and 36 blocks upscaled)."""


def resume(args: argparse.Namespace, device: torch.device) -> float:
    """An uninterrupted OME-Zarr run against one resumed after a kill at about half its blocks; returns the
    first's time over the second's."""
    side = RESUME_SIDE[args.quick]
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        folder = Path(tmp)
        field = make_field(side, folder)
        options = [
            "--format",
            "ome-zarr",
            "--model",
            MODEL,
            "--intensity",
            INTENSITY,
            "--device",
            str(device),
        ]
        warm = ["upscale", str(make_field(BLOCK, folder)), *options, "--out", str(folder / "warm")]
        _timed_command(warm)  # the first run in a process starts torch's thread pools and caches: untimed
        argv = ["upscale", str(field), *options]
        clean = _timed_command([*argv, "--out", str(folder / "clean")])[0]
        killed = folder / "killed"
        blocks, marked = ((side + BLOCK - 1) // BLOCK) ** 2, 0
        command = [sys.executable, "-m", "napari_microdisk_sr.cli", *argv, "--out", str(killed)]
        with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as run:
            while 2 * marked < blocks and run.poll() is None:
                marked = sum(len(unfinished.done_blocks(store)) for store in killed.glob(".*.tmp"))
                time.sleep(0.01)
            run.send_signal(signal.SIGKILL)
        if run.returncode != -signal.SIGKILL:
            sys.exit("the run to kill ended before it was killed")
        (left,) = killed.iterdir()
        kept = len(unfinished.done_blocks(left))
        resumed, resumed_out = _timed_command([*argv, "--out", str(killed)])
        if f"resumed: {kept} block(s) kept" not in resumed_out:
            sys.exit(f"the rerun did not resume the {kept} block(s) kept: {resumed_out}")
        stores = [
            zarr.open_group(str(next(f.glob("*_x4.ome.zarr"))), mode="r") for f in (folder / "clean", killed)
        ]
        same = sorted(stores[0].array_keys()) == sorted(stores[1].array_keys()) and all(
            np.array_equal(stores[0][key][:], stores[1][key][:]) for key in stores[0].array_keys()
        )
    rows = [
        {"run": "uninterrupted", "blocks_computed": "all", "seconds": clean},
        {"run": "resumed after a kill", "blocks_computed": f"all but {kept} kept", "seconds": resumed},
    ]
    print(f"a killed OME-Zarr run resumed: {MODEL}, a {side}x{side} uint16 field, {describe_device(device)}")
    _common.print_table(rows, ("run", "blocks_computed", "seconds"))
    print(f"blocks kept by the resumed run: {kept}; its result equals the uninterrupted one: {same}")
    path = _common.write_results(
        f"{NAME}-resume",
        device,
        folder=args.results,
        payload={
            "settings": {"quick": args.quick, "model": MODEL, "intensity": INTENSITY, "side": side},
            "rows": rows,
            "kept": kept,
            "same": same,
        },
    )
    print(f"results: {path}")
    if not same:
        sys.exit("the resumed store differs from the uninterrupted one")
    return clean / resumed


def _timed_command(argv: list[str]) -> tuple[float, str]:
    """Seconds the command line took in this process, and what it printed."""
    printed = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(argv)
    seconds = time.perf_counter() - started
    if code != 0:
        sys.exit(f"microdisk-sr {' '.join(argv)} failed with exit code {code}: {printed.getvalue()}")
    return seconds, printed.getvalue()


def _check_same(outputs: list[Path], expected: dict[str, np.ndarray], name: str) -> None:
    if sorted(path.name for path in outputs) != sorted(expected):
        sys.exit(f"{name}: outputs {sorted(p.name for p in outputs)} are not {sorted(expected)}")
    for path in outputs:
        if not np.array_equal(read_image(path).data, expected[path.name]):
            sys.exit(f"{name}: {path.name} is not the same bits as this process's output")


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


PARTS: dict[str, Callable[[argparse.Namespace, torch.device], float]] = {
    "memory": memory,
    "throughput": throughput,
    "resume": resume,
}
"""The parts of the benchmark: each prints its table, writes its results and returns its ratio."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--part", choices=[*PARTS, "all"], default="all", help="which part to run (default: all, in turn)"
    )


def main() -> int:
    args = _common.parse_args(__doc__.splitlines()[0], add_arguments)
    device = _common.setup(args)
    for name in PARTS if args.part == "all" else [args.part]:
        print(f"--- {name}")
        ratio = PARTS[name](args, device)
        print(f"ratio: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
