"""A microscope outside the generic family: fine-tuning with generic, calibrated and real pairs, and the fit.

Part 1, **recovery**: HR images degraded with known parameters (a Gaussian PSF, area down-sampling, a gain and
offset, Poisson-Gaussian noise; made here with scipy and numpy, not the code under test) are calibrated with
``core.calibrate.calibrate`` from the pair and from the LR alone; the table gives the true and fitted values.
The HR images are a synthetic microdisk scene and two photographs of scikit-image (``cell``, ``coins``).

Part 2, **fine-tuning**: a microscope the generic "realistic" family does not contain makes the LR of six
synthetic scenes: a defocus (uniform disk) PSF of radius 3 HR pixels, area down-sampling, a camera gain of
0.75 and offset of 0.12, 400 photo-electrons at full scale and a read noise of 3 % (the generic family stops
at 1 %). Training crops are aligned tiles of three scenes; the held-out scenes are three others. The compact
model (realesr-animevideov3) is fine-tuned three times with the same schedule: with the generic realistic
degradation, with the profile calibrated on one training pair, and with the real LR tiles as pairs
(``fine_tune(..., lr_crops=...)``); each is scored on the held-out LR against the HR truth.

``--quick`` trains 2 epochs of 150 pairs on 128 px scenes; the full run 6 epochs of 500 pairs on 256 px
scenes. The last line's ratio is MSE(generic) / MSE(calibrated profile) on the held-out scenes, ``10 **
(PSNR gain / 10)``: above 1 when the calibrated degradation beats the generic one.

Usage: ``python benchmarks/bench_calibration.py [--quick] [--device DEV] [--threads N]``
"""

import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common
import cv2
import numpy as np
from scipy import ndimage
from skimage import data

from napari_microdisk_sr.core.calibrate import DegradationProfile, calibrate, write_profile
from napari_microdisk_sr.core.comparison_table import BICUBIC, MEAN
from napari_microdisk_sr.core.device import describe_device
from napari_microdisk_sr.core.errors import InputError
from napari_microdisk_sr.core.metrics import evaluate
from napari_microdisk_sr.core.progress import drive
from napari_microdisk_sr.core.sample import make_scene
from napari_microdisk_sr.core.train import FineTuneConfig, Outcome, fine_tune

NAME = "bench_calibration"
MODEL = "realesr-animevideov3"
TRAIN_SEEDS = (1, 2, 3)
HELD_OUT_SEEDS = (101, 102, 103)
SCALE = 4
TILE = 128  # HR side of the training tiles


@dataclasses.dataclass(frozen=True)
class Microscope:
    """How an HR image becomes this microscope's LR: PSF, area down-sampling, camera, noise."""

    gain: float
    offset: float
    photons: float
    read_noise: float
    sigma: "float | None" = None  # Gaussian PSF sigma, HR pixels
    disk_radius: "float | None" = None  # defocus PSF: a uniform disk of this radius, HR pixels

    def acquire(self, hr: np.ndarray, seed: int) -> np.ndarray:
        """The uint16 LR acquisition of ``hr`` (float in [0, 1])."""
        if self.disk_radius is not None:
            r = int(np.ceil(self.disk_radius))
            yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
            kernel = (yy**2 + xx**2 <= self.disk_radius**2).astype(np.float32)
            blurred = cv2.filter2D(
                hr.astype(np.float32), -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT_101
            )
        else:
            blurred = ndimage.gaussian_filter(hr, self.sigma, mode="mirror", truncate=3.0)
        h, w = blurred.shape
        x = blurred.reshape(h // SCALE, SCALE, w // SCALE, SCALE).mean(axis=(1, 3))
        clean = np.maximum(self.offset + self.gain * x, 0.0)
        rng = np.random.default_rng(seed)
        lr = rng.poisson(clean * self.photons) / self.photons + rng.normal(0.0, self.read_noise, clean.shape)
        return uint16(lr)


@dataclasses.dataclass(frozen=True)
class Settings:
    epochs: int
    pairs_per_epoch: int
    batch: int
    size: int


QUICK = Settings(epochs=2, pairs_per_epoch=150, batch=4, size=128)
FULL = Settings(epochs=6, pairs_per_epoch=500, batch=4, size=256)
GAUSSIAN = Microscope(gain=0.85, offset=0.06, photons=800.0, read_noise=0.012, sigma=1.8)
DEFOCUS = Microscope(gain=0.75, offset=0.12, photons=400.0, read_noise=0.03, disk_radius=3.0)


def uint16(values: np.ndarray) -> np.ndarray:
    return np.round(np.clip(values, 0.0, 1.0) * 65535).astype(np.uint16)


def unit(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) / np.iinfo(image.dtype).max


def recovery(quick: bool) -> list[dict[str, Any]]:
    """True vs fitted parameters of GAUSSIAN on three HR images, from the pair and from the LR alone."""
    n = 96 if quick else 160
    images = {
        "microdisk scene": unit(make_scene(seed=7, size=(n, n)).hr),
        "skimage cell": data.cell()[:640, :548] / 255.0,
        "skimage coins": data.coins()[:300, :384] / 255.0,
    }
    true = GAUSSIAN
    rows = [
        {
            "image": "(true)",
            "fit": "-",
            "psf_sigma": true.sigma,
            "gain": true.gain,
            "offset": true.offset,
            "photons": true.photons,
            "read_noise": true.read_noise,
            "noise_at_half": _noise_at_half(true.photons, true.read_noise),
        }
    ]
    for name, hr in images.items():
        lr = true.acquire(hr, seed=0)
        for fit, profile in (("pair", calibrate(lr, uint16(hr))), ("LR alone", _lr_alone(lr))):
            if profile is None:
                rows.append({"image": name, "fit": f"{fit}: too few flat regions"})
                continue
            rows.append(
                {
                    "image": name,
                    "fit": fit,
                    "psf_sigma": profile.psf_sigma,
                    "gain": profile.gain,
                    "offset": profile.offset,
                    "photons": profile.photons,
                    "read_noise": profile.read_noise,
                    "noise_at_half": _noise_at_half(profile.photons, profile.read_noise),
                    "noise_r2": profile.fit.noise_r2,
                }
            )
    return rows


def _noise_at_half(photons: float, read_noise: float) -> float:
    """The noise sigma at half of full scale: what photons and read noise give together where measured."""
    return float(np.sqrt(0.5 / photons + read_noise**2))


def _lr_alone(lr: np.ndarray) -> "DegradationProfile | None":
    try:
        return calibrate(lr)
    except InputError:
        return None


def tiles(image: np.ndarray, side: int) -> list[np.ndarray]:
    h, w = image.shape
    return [
        image[y : y + side, x : x + side]
        for y in range(0, h - side + 1, side)
        for x in range(0, w - side + 1, side)
    ]


def finetune(settings: Settings, hr_tiles, degradation: str, device, run_dir: Path, lr_tiles=None) -> Path:
    config = FineTuneConfig(
        model=MODEL,
        epochs=settings.epochs,
        pairs_per_epoch=settings.pairs_per_epoch,
        batch_size=settings.batch,
        degradation=degradation,
        val_fraction=0.0,
        device=str(device),
    )
    result = drive(fine_tune(hr_tiles, config, run_dir, lr_crops=lr_tiles))
    if result.outcome is not Outcome.FINISHED:
        raise RuntimeError(f"fine-tuning ({degradation}) ended {result.outcome.value}: {result.message}")
    return result.model_path


def main() -> int:
    args = _common.parse_args(__doc__.splitlines()[0])
    device = _common.setup(args)
    settings = QUICK if args.quick else FULL
    size = (settings.size, settings.size)

    recovered = recovery(args.quick)
    print(f"Part 1: recovery of a known microscope ({GAUSSIAN})")
    _common.print_table(
        recovered,
        ("image", "fit", "psf_sigma", "gain", "offset", "photons", "read_noise", "noise_at_half", "noise_r2"),
    )

    train_hr = [uint16(unit(make_scene(seed=s, size=size).hr)) for s in TRAIN_SEEDS]
    train_lr = [DEFOCUS.acquire(unit(hr), seed=s) for s, hr in zip(TRAIN_SEEDS, train_hr, strict=True)]
    held_hr = [uint16(unit(make_scene(seed=s, size=size).hr)) for s in HELD_OUT_SEEDS]
    held_lr = [DEFOCUS.acquire(unit(hr), seed=s) for s, hr in zip(HELD_OUT_SEEDS, held_hr, strict=True)]
    hr_tiles = [t for hr in train_hr for t in tiles(hr, TILE)]
    lr_tiles = [t for lr in train_lr for t in tiles(lr, TILE // SCALE)]
    profile = calibrate(train_lr[0], train_hr[0])
    print(f"\nPart 2: defocus microscope {DEFOCUS}")
    print(
        f"calibrated on training scene {TRAIN_SEEDS[0]}: {profile} "
        "(a disk of radius 3 has a sigma of 1.5 per axis)"
    )

    methods = {BICUBIC: BICUBIC, "pretrained": MODEL}
    with tempfile.TemporaryDirectory(prefix="bench-calibration-") as tmp:
        profile_path = str(write_profile(Path(tmp) / "profile.json", profile))
        runs = {
            "fine-tuned (generic realistic)": ("realistic", None),
            "fine-tuned (calibrated profile)": (profile_path, None),
            "fine-tuned (real pairs)": ("bicubic", lr_tiles),
        }
        for label, (degradation, lr) in runs.items():
            run_dir = Path(tmp) / label.split("(")[1].rstrip(")").replace(" ", "_")
            methods[label] = str(finetune(settings, hr_tiles, degradation, device, run_dir, lr))
        result = drive(
            evaluate(
                held_hr,
                list(methods.values()),
                lr_images=held_lr,
                names=[f"scene{s}" for s in HELD_OUT_SEEDS],
                device=device,
            )
        )
    labels = {method: label for label, method in methods.items()}
    means = {labels[row["method"]]: row for row in result.rows if row["image"] == MEAN}
    generic = means["fine-tuned (generic realistic)"]
    table = [
        {
            "method": label,
            "psnr_db": means[label]["psnr"],
            "ssim": means[label]["ssim"],
            "db_vs_generic": means[label]["psnr"] - generic["psnr"],
            "ssim_vs_generic": means[label]["ssim"] - generic["ssim"],
        }
        for label in methods
    ]
    gain_db = means["fine-tuned (calibrated profile)"]["psnr"] - generic["psnr"]
    ratio = 10 ** (gain_db / 10)
    print(
        f"{MODEL}: {len(hr_tiles)} training tiles of {TILE} px, {len(held_hr)} held-out {size[0]}x{size[1]} "
        f"scenes (x4); {settings.epochs} epochs x {settings.pairs_per_epoch} pairs, batch {settings.batch}; "
        f"{describe_device(device)}"
    )
    _common.print_table(table, ("method", "psnr_db", "ssim", "db_vs_generic", "ssim_vs_generic"))
    path = _common.write_results(
        NAME,
        device,
        folder=args.results,
        payload={
            "settings": dataclasses.asdict(settings) | {"quick": args.quick, "model": MODEL},
            "microscopes": {
                "recovery": dataclasses.asdict(GAUSSIAN),
                "fine_tuning": dataclasses.asdict(DEFOCUS),
            },
            "recovery": recovered,
            "profile": profile.to_json(),
            "table": table,
            "ratio": ratio,
        },
    )
    print(f"results: {path}")
    print("ratio = MSE(fine-tuned, generic realistic) / MSE(fine-tuned, calibrated profile), held-out scenes")
    print(f"ratio: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
