"""Intensity mappings on dim 16-bit images: does the output keep the input's intensities and exposure ratios?

A microscopist's 16-bit images often use a small part of their range: dim fluorescence, or a 10- to 12-bit
camera. Held-out synthetic scenes (dark and light backgrounds) are turned into such uint16 images: their LR
acquisition stretched to a camera offset of 100 and a peak of 210, 1,000 or 4,000 counts. Each is upscaled
at one and at two times the exposure with the compact model (realesr-animevideov3) by three mappings of
``core.intensity.Intensity``:

- ``range``, the former default: the dtype's full range, 0 to 65535;
- ``bits:N``, the smallest camera bit depth that holds the image (8, 10 or 12 bits here);
- ``auto``, the default: the image's 1st to 99.8th percentiles (CSBDeep's), mapped back by the inverse.

Per image and mapping: the output's mean over the input's (1 when intensities are kept), the ratio of the
2x output's mean over the 1x output's (2 when exposures stay comparable), and the PSNR of the output against
the HR truth brought to the same counts (data range: the truth's 1st-99.8th percentile span). The last line's
ratio is the median |mean error| of ``range`` over that of ``auto`` (above 1: ``auto`` keeps intensities
better).

Usage: ``python benchmarks/bench_intensity.py [--quick] [--device DEV] [--threads N]``
"""

import sys
import time

import _common
import numpy as np

from napari_microdisk_sr.core.device import describe_device
from napari_microdisk_sr.core.infer import upscale_array
from napari_microdisk_sr.core.intensity import Intensity
from napari_microdisk_sr.core.models import load_model
from napari_microdisk_sr.core.quality import psnr
from napari_microdisk_sr.core.sample import make_scene

NAME = "bench_intensity"
MODEL = "realesr-animevideov3"
HELD_OUT_SEEDS = (201, 202, 203)
OFFSET = 100.0
"""A camera's dark level in counts."""
PEAKS = (210.0, 1000.0, 4000.0)
"""The brightest count of each image: the issue's dim image, a dim 10-bit image, a 12-bit image."""


def dim_pair(seed: int, background: str, peak: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A scene's LR acquisition and HR truth as uint16 counts from ``OFFSET`` to ``peak`` (the LR's span)."""
    scene = make_scene(seed=seed, size=(size, size), background=background)
    lr, hr = scene.lr.astype(np.float64), scene.hr.astype(np.float64)
    low, high = lr.min(), lr.max()

    def counts(values: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(OFFSET + (values - low) * (peak - OFFSET) / (high - low)), 0, 65535)

    return counts(lr).astype(np.uint16), counts(hr)


def mappings(peak: float) -> dict[str, Intensity]:
    bits = next(n for n in (8, 10, 12, 14, 16) if 2 * peak <= 2**n - 1)  # holds the 2x exposure too
    return {"range": Intensity("range"), f"bits:{bits}": Intensity("bits", bits=bits), "auto": Intensity()}


def main() -> int:
    args = _common.parse_args(__doc__.splitlines()[0])
    device = _common.setup(args)
    size = 96 if args.quick else 256
    model = load_model(MODEL)
    rows = []
    start = time.perf_counter()
    for seed in HELD_OUT_SEEDS:
        for background in ("dark", "light"):
            for peak in PEAKS:
                lr, hr = dim_pair(seed, background, peak, size)
                low, high = np.percentile(hr, [1, 99.8])
                for label, intensity in mappings(peak).items():
                    once, twice = (
                        upscale_array(image, model, device=device, tile=0, intensity=intensity)
                        for image in (lr, lr * 2)
                    )
                    rows.append(
                        {
                            "image": f"{seed}-{background}-{peak:.0f}",
                            "mapping": "bits:N" if label.startswith("bits") else label,
                            "intensity": label,
                            "in_mean": float(lr.mean()),
                            "out_mean": float(once.mean()),
                            "mean_ratio": float(once.mean() / lr.mean()),
                            "exposure_ratio": float(twice.mean() / once.mean()),
                            "psnr_db": psnr(
                                (hr - low) / (high - low), (once - low) / (high - low), data_range=1.0
                            ),
                        }
                    )
    seconds = time.perf_counter() - start
    summary = []
    for mapping in ("range", "bits:N", "auto"):
        mine = [row for row in rows if row["mapping"] == mapping]
        summary.append(
            {
                "mapping": mapping,
                "median_abs_mean_error": float(np.median([abs(r["mean_ratio"] - 1) for r in mine])),
                "worst_abs_mean_error": float(max(abs(r["mean_ratio"] - 1) for r in mine)),
                "median_abs_exposure_error": float(np.median([abs(r["exposure_ratio"] - 2) for r in mine])),
                "median_psnr_db": float(np.median([r["psnr_db"] for r in mine])),
            }
        )
    print(
        f"{MODEL}: {len(rows) // 3} uint16 images of {size}x{size} (x4), peaks {PEAKS}, at 1x and 2x "
        f"exposure, in {seconds:.0f} s; {describe_device(device)}"
    )
    _common.print_table(
        rows, ("image", "intensity", "in_mean", "out_mean", "mean_ratio", "exposure_ratio", "psnr_db")
    )
    print()
    columns = (
        "mapping",
        "median_abs_mean_error",
        "worst_abs_mean_error",
        "median_abs_exposure_error",
        "median_psnr_db",
    )
    _common.print_table(summary, columns)
    by_mapping = {line["mapping"]: line for line in summary}
    ratio = by_mapping["range"]["median_abs_mean_error"] / by_mapping["auto"]["median_abs_mean_error"]
    path = _common.write_results(
        NAME,
        device,
        folder=args.results,
        payload={
            "settings": {"quick": args.quick, "size": size, "model": MODEL, "peaks": PEAKS, "offset": OFFSET},
            "seconds": seconds,
            "rows": rows,
            "summary": summary,
            "ratio": ratio,
        },
    )
    print(f"results: {path}")
    print("ratio = median |output mean / input mean - 1| by range / by auto")
    print(f"ratio: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
