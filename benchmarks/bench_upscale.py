"""Tiled x4plus inference: ours (``core.infer``) against Real-ESRGAN's ``RealESRGANer``.

Both get the same weights file (the cached fp32 conversion of the embedded x4plus), the same uint8 RGB input
(a synthetic microdisk field), the same tile size and the same tile padding (the model's recommended padding,
32 LR pixels for x4plus; ``RealESRGANer``'s default of 10 leaves visible seams, see FACTS.md), and
``RealESRGANer`` gets ``pre_pad=0`` so that both outputs cover the same field without border padding. Each
implementation runs once as a warm-up, then the timed runs alternate between them in one process. Speed is
output megapixels per second of the fastest run (other processes only add time; the median run is reported
too). Peak memory is the largest, over the timed calls, of what a call needs beyond what was in use before it
(see ``_common.measured``).

Both bound memory the same way: no network input is larger than the tile plus twice the padding. Within that
bound ``RealESRGANer`` cuts fixed tiles from the top left corner; ours cuts the fewest tiles of equal input
size (see ``core.infer``), so it computes fewer overlapping pixels. The table counts the LR pixels that went
through the network per run, to separate that saving from the speed per pixel. The quick input (128 px, tile
48) is large enough that ``RealESRGANer`` has a fully padded inner tile, so that its largest input meets the
bound as ours does; at 96 px ours would run untiled with a larger input than any of its tiles.

Quality: the two float32 outputs must agree (PSNR >= 40 dB, else the script exits with 1), and each is
compared with the untiled output of the same network (ours with ``tile=0``; ``RealESRGANer`` with ``tile=0``
is checked to give the same reference). On CUDA both also run in half precision (``half=True``): float16
autocast for ours, a ``.half()`` model for ``RealESRGANer``. On CPUs with native bfloat16 ours also runs with
``half=True`` (bfloat16 autocast, a preview setting); ``RealESRGANer`` has no CPU counterpart.

Usage: ``python benchmarks/bench_upscale.py [--quick] [--device DEV] [--threads N]``
"""

import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

import _common
import numpy as np
import torch

from napari_microdisk_sr.core.device import describe_device, half_dtype
from napari_microdisk_sr.core.infer import upscale_array
from napari_microdisk_sr.core.metrics import psnr
from napari_microdisk_sr.core.models import REGISTRY, load_model
from napari_microdisk_sr.core.sample import make_scene
from napari_microdisk_sr.core.weights import embedded_weights

NAME = "bench_upscale"
MODEL = "realesrgan-x4plus"
OURS, THEIRS = "ours", "realesrganer"
AGREEMENT_DB = 40.0


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to run.

    Attributes
    ----------
    size : int
        Side of the timed LR input (the output is 4x larger).
    tile : int
        Tile side in LR pixels, for both implementations.
    check_size : int
        Side of the LR input compared with the untiled output (the timed input when equal; a 2048 px input
        is too large to run untiled on one GPU).
    repeats : int
        Timed runs of each implementation, after the warm-up.
    """

    size: int
    tile: int
    check_size: int
    repeats: int


QUICK = Settings(size=128, tile=48, check_size=128, repeats=3)
FULL = Settings(size=2048, tile=512, check_size=1024, repeats=3)


def sample_image(size: int) -> np.ndarray:
    """A ``(size, size, 3)`` uint8 microdisk field (the LR acquisition of a synthetic scene)."""
    return make_scene(seed=0, size=(size, size), rgb=True).lr


def count_input_pixels(network: torch.nn.Module) -> list[int]:
    """A list to which ``network`` (and any copy of it) adds the height x width of each of its inputs."""
    counts: list[int] = []
    network.register_forward_pre_hook(
        lambda _module, args: counts.append(args[0].shape[-2] * args[0].shape[-1])
    )
    return counts


class Ours:
    """``core.infer.upscale_array`` with a model loaded by ``core.models.load_model``."""

    def __init__(self, device: torch.device, *, tile: int, pad: int, half: bool) -> None:
        self.model = load_model(MODEL, device=device)
        self.input_pixels = count_input_pixels(self.model.module)
        self.options = {"tile": tile, "tile_pad": pad, "device": device, "half": half}

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return upscale_array(image, self.model, **self.options)


class Theirs:
    """Real-ESRGAN 0.3.0's ``RealESRGANer`` with basicsr's ``RRDBNet`` (the reference implementation)."""

    def __init__(self, device: torch.device, *, tile: int, pad: int, half: bool) -> None:
        realesrganer, _ = _common.import_realesrganer()  # main() checked that it imports
        archs, _ = _common.import_basicsr()
        network = archs.rrdbnet_arch.RRDBNet(
            num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4
        )
        weights = embedded_weights(MODEL)  # {"params_ema": state_dict}, as Real-ESRGAN's releases
        self.upsampler = realesrganer(
            scale=4,
            model_path=str(weights),
            model=network,
            tile=tile,
            tile_pad=pad,
            pre_pad=0,
            half=half,
            device=device,
        )
        self.input_pixels = count_input_pixels(self.upsampler.model)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        with _common.quiet():  # it prints a line per tile
            bgr, _ = self.upsampler.enhance(image[..., ::-1])  # it takes and returns OpenCV's BGR order
        return bgr[..., ::-1]


IMPLEMENTATIONS = {OURS: Ours, THEIRS: Theirs}


def _max_abs_error(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def bench_precision(
    device: torch.device,
    settings: Settings,
    *,
    pad: int,
    half: bool,
    impls: Sequence[str],
    image: np.ndarray,
    check: np.ndarray,
    reference: np.ndarray,
) -> tuple[list[dict[str, Any]], "float | None"]:
    """Time the implementations ``impls`` alternately at one precision and score their outputs.

    Returns
    -------
    rows : list of dict
        One per implementation: best and median seconds, output megapixels per second, peak memory, PSNR and
        largest error against the untiled ``reference`` of ``check``.
    agreement_db : float or None
        PSNR between the two implementations' outputs of ``image`` (None when only one ran).
    """
    runners = {impl: IMPLEMENTATIONS[impl](device, tile=settings.tile, pad=pad, half=half) for impl in impls}
    outputs = {impl: run(image) for impl, run in runners.items()}  # warm-up, not timed
    input_pixels = {impl: sum(run.input_pixels) for impl, run in runners.items()}
    times: dict[str, list[float]] = {impl: [] for impl in runners}
    peaks: dict[str, list[int]] = {impl: [] for impl in runners}
    for r in range(settings.repeats):
        for impl in list(runners) if r % 2 == 0 else list(reversed(runners)):
            seconds, outputs[impl], peak = _common.measured(lambda run=runners[impl]: run(image), device)
            times[impl].append(seconds)
            if peak is not None:
                peaks[impl].append(peak)
    checked = outputs if check is image else {impl: run(check) for impl, run in runners.items()}
    megapixels = image.shape[0] * image.shape[1] * 16 / 1e6
    rows = []
    for impl in runners:
        best, median = _common.best_and_median(times[impl])
        rows.append(
            {
                "impl": impl,
                "precision": precision_name(device, half),
                "seconds": best,
                "median_s": median,
                "runs_s": times[impl],
                "mpix_per_s": megapixels / best,
                "input_kpix": input_pixels[impl] / 1e3,
                "peak_mib": max(peaks[impl]) / 2**20 if peaks[impl] else None,
                "psnr_vs_untiled_db": psnr(reference, checked[impl]),
                "max_err_vs_untiled": _max_abs_error(reference, checked[impl]),
            }
        )
    return rows, psnr(outputs[OURS], outputs[THEIRS]) if len(outputs) == 2 else None


def precision_name(device: torch.device, half: bool) -> str:
    """``fp32``, or what ``half=True`` means on ``device``: ``fp16`` (CUDA) or ``bf16`` (CPU)."""
    return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[half_dtype(device) if half else None]


def main() -> int:
    args = _common.parse_args(__doc__.splitlines()[0])
    device = _common.setup(args)
    settings = QUICK if args.quick else FULL
    _, why = _common.import_realesrganer()
    if why:
        print(f"the baseline cannot run: {why}")
        print("ratio: nan")
        return 1
    pad = REGISTRY[MODEL].spec.tile_pad
    image = sample_image(settings.size)
    check = image if settings.check_size == settings.size else sample_image(settings.check_size)
    reference = Ours(device, tile=0, pad=pad, half=False)(check)
    reference_check_db = psnr(reference, Theirs(device, tile=0, pad=pad, half=False)(check))

    rows: list[dict[str, Any]] = []
    agreement: dict[str, float] = {}
    for half in (False, True) if half_dtype(device) is not None else (False,):
        impls = (OURS, THEIRS) if not half or device.type == "cuda" else (OURS,)
        precision_rows, agreed = bench_precision(
            device, settings, pad=pad, half=half, impls=impls, image=image, check=check, reference=reference
        )
        rows += precision_rows
        if agreed is not None:
            agreement[precision_name(device, half)] = agreed
    fp32 = {row["impl"]: row for row in rows if row["precision"] == "fp32"}
    ratio = fp32[THEIRS]["seconds"] / fp32[OURS]["seconds"]
    fewer_pixels = fp32[THEIRS]["input_kpix"] / fp32[OURS]["input_kpix"]
    ok = agreement["fp32"] >= AGREEMENT_DB  # fp16: autocast (ours) and a .half() model (theirs) differ more
    side = settings.size
    print(
        f"x4plus tiled inference: {side}x{side} -> {4 * side}x{4 * side} RGB uint8, tile {settings.tile}, "
        f"pad {pad}, {describe_device(device)}; best of {settings.repeats} alternating runs"
    )
    _common.print_table(
        rows,
        (
            "impl",
            "precision",
            "seconds",
            "median_s",
            "mpix_per_s",
            "input_kpix",
            "peak_mib",
            "psnr_vs_untiled_db",
            "max_err_vs_untiled",
        ),
    )
    print(f"(vs untiled: {settings.check_size}x{settings.check_size} input)")
    print(f"(peak memory: {_common.MEMORY.get(device.type, 'not measured')})")
    print(f"untiled reference, ours vs RealESRGANer: {reference_check_db:.1f} dB")
    print(
        f"agreement ours vs RealESRGANer (fp32): {agreement['fp32']:.1f} dB (>= {AGREEMENT_DB:g} dB required)"
    )
    if "fp16" in agreement:
        print(f"agreement ours vs RealESRGANer (fp16): {agreement['fp16']:.1f} dB")
    for row in rows:
        if row["impl"] == OURS and row["precision"] != "fp32":
            print(
                f"ours in {row['precision']}: {fp32[OURS]['seconds'] / row['seconds']:.2f}x its fp32 speed, "
                f"{row['psnr_vs_untiled_db']:.1f} dB from the untiled fp32 output"
            )
    print(
        f"speed-up {ratio:.3f} = {fewer_pixels:.3f} (fewer LR pixels through the network) "
        f"x {ratio / fewer_pixels:.3f} (speed per LR pixel)"
    )
    path = _common.write_results(
        NAME,
        device,
        folder=args.results,
        payload={
            "settings": dataclasses.asdict(settings) | {"quick": args.quick, "tile_pad": pad, "model": MODEL},
            "memory": _common.MEMORY.get(device.type),
            "rows": rows,
            "agreement_db": agreement,
            "agreement_ok": ok,
            "untiled_reference_check_db": reference_check_db,
            "ratio": ratio,
            "ratio_from_fewer_input_pixels": fewer_pixels,
            "ratio_per_input_pixel": ratio / fewer_pixels,
        },
    )
    print(f"results: {path}")
    print(f"ratio: {ratio:.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
