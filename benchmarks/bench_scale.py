"""Scaling to large images: peak memory of OME-Zarr output (block by block) against in-memory upscaling.

Memory part: for fields of several sizes (uint16, 12-bit, the compact model), the peak resident memory of
``core.ome_zarr.upscale_to_ome_zarr`` (lazy input from an OME-Zarr store, output written block by block with
its pyramid) must stay flat as the image grows, while that of ``core.infer.upscale`` (the whole result in
memory) grows with the output. The ratio is the in-memory peak over the OME-Zarr peak at the largest size.

The script is made of parts (``PARTS``): each measures one aspect of scaling and returns its rows and its
summary for the results file; a part for throughput on a cluster can be added beside the memory part.
"""

import contextlib
import ctypes
import dataclasses
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common
import dask.array as da
import numpy as np
import torch
import zarr
from ome_zarr.writer import write_image

from napari_microdisk_sr.core.device import describe_device
from napari_microdisk_sr.core.infer import UpscaleConfig, upscale_array
from napari_microdisk_sr.core.lazy import open_lazy
from napari_microdisk_sr.core.models import load_model
from napari_microdisk_sr.core.ome_zarr import BLOCK, upscale_to_ome_zarr
from napari_microdisk_sr.core.progress import drive

NAME = "bench_scale"
MODEL = "realesr-animevideov3"
BIT_DEPTH = 12
CPU = torch.device("cpu")


@dataclasses.dataclass(frozen=True)
class Settings:
    sizes: tuple[int, ...]  # input sides in pixels; the outputs are 4x
    tile: int
    block: int


QUICK = Settings(sizes=(768, 1280, 1792), tile=256, block=BLOCK)
FULL = Settings(sizes=(1024, 2048, 3072), tile=256, block=BLOCK)


def make_field(side: int, folder: Path) -> Path:
    """A 12-bit uint16 field of ``side`` pixels as an OME-Zarr store, written chunk by chunk by ome-zarr."""
    field = da.random.default_rng(side).integers(0, 2**BIT_DEPTH, (side, side), chunks=256, dtype=np.uint16)
    store = folder / f"field{side}.ome.zarr"
    write_image(field, zarr.open_group(str(store), mode="w"), axes=["y", "x"], scale_factors=[],
                storage_options={"chunks": (256, 256)})  # fmt: skip
    return store


def memory_part(settings: Settings, device: torch.device, folder: Path) -> dict[str, Any]:
    """Peak host memory of OME-Zarr output and of in-memory upscaling, at each size."""
    model = load_model(MODEL)
    config = UpscaleConfig(tile=settings.tile, device=str(device), bit_depth=BIT_DEPTH)
    # First calls allocate thread pools and a convolution cache per block shape (3x3 blocks have them all)
    warm = make_field(768, folder)
    drive(upscale_to_ome_zarr(open_lazy(warm), model, folder / "warm.ome.zarr", config=config, levels=3))
    upscale_array(
        open_lazy(warm).data.compute(), model, tile=settings.tile, device=device, bit_depth=BIT_DEPTH
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
            return upscale_array(image, model, tile=settings.tile, device=device, bit_depth=BIT_DEPTH)

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


PARTS = {"memory": memory_part}
"""The parts of the benchmark, run in this order; each returns rows and a ``ratio``."""


def main() -> int:
    args = _common.parse_args(__doc__.splitlines()[0])
    fix_mmap_threshold()
    device = _common.setup(args)
    settings = QUICK if args.quick else FULL
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for name, part in PARTS.items():
            results[name] = part(settings, device, Path(tmp))
    memory = results["memory"]
    print(
        f"OME-Zarr output vs in-memory: {MODEL}, uint16 ({BIT_DEPTH}-bit) fields, tile {settings.tile}, "
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
        NAME,
        device,
        folder=args.results,
        payload={
            "settings": dataclasses.asdict(settings)
            | {"quick": args.quick, "model": MODEL, "bit_depth": BIT_DEPTH},
            "memory": _common.MEMORY["cpu"],
            "parts": results,
            "ratio": memory["ratio"],
        },
    )
    print(f"results: {path}")
    print(f"ratio: {memory['ratio']:.3f}")
    exact = all(row.get("max_err_vs_in_memory", 0) <= 1 for row in memory["rows"])
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
