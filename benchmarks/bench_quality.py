"""The study's table on the sample data: bicubic, pretrained and fine-tuned PSNR/SSIM on held-out scenes.

Training crops are the whole disks of three synthetic microdisk scenes (gray, their noise-free HR truth);
the held-out scenes are three others, scored as the study does: each method upscales the scene's LR
acquisition (optical blur, area down-sampling, Poisson-Gaussian noise; see ``core.sample``) and is compared
with the HR truth (``core.metrics.evaluate``, the mean over the scenes). The model is fine-tuned twice with
``core.train.fine_tune`` at the study's settings but a shorter schedule: once with the study's bicubic pairs,
once with the realistic degradation (blur, camera pixels, sensor noise), each timed from start to saved model.

``--quick`` fine-tunes the compact model (realesr-animevideov3) for 2 epochs of 150 pairs on the CPU; the
full run fine-tunes x4plus for 4 epochs of 500 pairs. The last line's ratio is the pretrained model's mean
squared error over the fine-tuned (realistic) model's, ``10 ** (PSNR gain / 10)``: above 1 when
fine-tuning helps.

Usage: ``python benchmarks/bench_quality.py [--quick] [--device DEV] [--threads N]``
"""

import dataclasses
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import _common
import numpy as np
import torch

from napari_microdisk_sr.core.comparison_table import BICUBIC, MEAN
from napari_microdisk_sr.core.crops import crop_disks
from napari_microdisk_sr.core.device import describe_device
from napari_microdisk_sr.core.metrics import evaluate
from napari_microdisk_sr.core.progress import drive
from napari_microdisk_sr.core.sample import make_scene
from napari_microdisk_sr.core.train import FineTuneConfig, Outcome, fine_tune

NAME = "bench_quality"
TRAIN_SEEDS = (1, 2, 3)
HELD_OUT_SEEDS = (101, 102, 103)
DEGRADATIONS = ("bicubic", "realistic")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to run: the model, the training schedule and the scenes' LR size."""

    model: str
    epochs: int
    pairs_per_epoch: int
    batch: int
    size: int


QUICK = Settings(model="realesr-animevideov3", epochs=2, pairs_per_epoch=150, batch=4, size=128)
FULL = Settings(model="realesrgan-x4plus", epochs=4, pairs_per_epoch=500, batch=4, size=256)


def training_crops(size: tuple[int, int]) -> list[np.ndarray]:
    """The whole disks of the training scenes, cut from their HR truth."""
    crops = []
    for seed in TRAIN_SEEDS:
        scene = make_scene(seed=seed, size=size)
        crops += [crop.image for crop in crop_disks(scene.hr, scene.disks_hr)]
    return crops


def finetune(
    settings: Settings, crops: Sequence[np.ndarray], degradation: str, device: torch.device, run_dir: Path
) -> tuple[Path, float]:
    """Fine-tune the model on ``crops``; return the saved model and the wall time of the whole job."""
    config = FineTuneConfig(
        model=settings.model,
        epochs=settings.epochs,
        pairs_per_epoch=settings.pairs_per_epoch,
        batch_size=settings.batch,
        degradation=degradation,
        val_fraction=0.0,
        device=str(device),
    )
    start = time.perf_counter()
    result = drive(fine_tune(crops, config, run_dir))
    seconds = time.perf_counter() - start
    if result.outcome is not Outcome.FINISHED:
        raise RuntimeError(
            f"fine-tuning with {degradation} pairs ended {result.outcome.value}: {result.message}"
        )
    return result.model_path, seconds


def main() -> int:
    args = _common.parse_args(__doc__.splitlines()[0])
    device = _common.setup(args)
    settings = QUICK if args.quick else FULL
    size = (settings.size, settings.size)
    crops = training_crops(size)
    held_out = [make_scene(seed=seed, size=size) for seed in HELD_OUT_SEEDS]

    methods = {BICUBIC: BICUBIC, "pretrained": settings.model}
    train_seconds = {}
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        for degradation in DEGRADATIONS:
            label = f"fine-tuned ({degradation} pairs)"
            model_path, train_seconds[label] = finetune(
                settings, crops, degradation, device, Path(tmp) / degradation
            )
            methods[label] = str(model_path)
        result = drive(
            evaluate(
                [scene.hr for scene in held_out],
                list(methods.values()),
                lr_images=[scene.lr for scene in held_out],
                names=[f"scene{seed}" for seed in HELD_OUT_SEEDS],
                device=device,
            )
        )
    labels = {method: label for label, method in methods.items()}
    rows = [row | {"method": labels[row["method"]]} for row in result.rows]
    means = {row["method"]: row for row in rows if row["image"] == MEAN}
    table = [
        {
            "method": label,
            "psnr_db": means[label]["psnr"],
            "ssim": means[label]["ssim"],
            "db_vs_bicubic": means[label]["psnr"] - means[BICUBIC]["psnr"],
            "db_vs_pretrained": means[label]["psnr"] - means["pretrained"]["psnr"],
            "train_s": train_seconds.get(label),
        }
        for label in methods
    ]
    gain_db = means["fine-tuned (realistic pairs)"]["psnr"] - means["pretrained"]["psnr"]
    ratio = 10 ** (gain_db / 10)
    print(
        f"{settings.model}: {len(crops)} training crops, {len(held_out)} held-out {size[0]}x{size[1]} scenes "
        f"(x4); {settings.epochs} epochs x {settings.pairs_per_epoch} pairs, batch {settings.batch}; "
        f"{describe_device(device)}"
    )
    _common.print_table(table, ("method", "psnr_db", "ssim", "db_vs_bicubic", "db_vs_pretrained", "train_s"))
    path = _common.write_results(
        NAME,
        device,
        folder=args.results,
        payload={
            "settings": dataclasses.asdict(settings)
            | {"quick": args.quick, "train_seeds": TRAIN_SEEDS, "held_out_seeds": HELD_OUT_SEEDS},
            "table": table,
            "rows": rows,
            "ratio": ratio,
        },
    )
    print(f"results: {path}")
    print("ratio = MSE(pretrained) / MSE(fine-tuned, realistic pairs) on the held-out scenes")
    print(f"ratio: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
