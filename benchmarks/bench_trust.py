"""Trust without ground truth: per-disk radius errors and LR consistency next to the true PSNR, per method.

Training crops are the whole disks of three synthetic scenes (their noise-free HR truth); the held-out scenes
are three others. Each method (bicubic, the pretrained model, the model fine-tuned with realistic pairs)
upscales each held-out scene's LR acquisition; ``core.metrics.evaluate`` scores it against the HR truth
(PSNR, SSIM), measures its LR consistency (the output degraded back by 4x4 area averaging, against the LR:
no HR needed) and measures every disk of the truth on it (``core.disk_measures``: radius and 10-90 % edge
width, in HR pixels). The consistency is also measured with the scenes' true acquisition as a calibrated
profile (PSF sigma 2.4 HR px, area binning, their noise), and for the HR truth itself: what a perfect
method scores, and the noise floor.

The question: does the LR consistency rank the methods as the true PSNR does, and does it flag a model that
invents texture (consistency far below the truth's, where its PSNR is also low)?

``--quick`` fine-tunes the compact model (realesr-animevideov3) for 3 epochs of 150 pairs on 128x128 LR
scenes; the full run 6 epochs of 300 pairs on 256x256 scenes. The last line's ratio is the median |radius
error| of the pretrained model over the fine-tuned one's (above 1: fine-tuning measures disks better).

Usage: ``python benchmarks/bench_trust.py [--quick] [--device DEV] [--threads N]``
"""

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import _common
import numpy as np
from bench_quality import TRAIN_SEEDS, Settings, finetune, training_crops

from napari_microdisk_sr.core.comparison_table import BICUBIC, MEAN
from napari_microdisk_sr.core.consistency import BackDegradation, lr_consistency
from napari_microdisk_sr.core.device import describe_device
from napari_microdisk_sr.core.disk_measures import summarize
from napari_microdisk_sr.core.metrics import evaluate
from napari_microdisk_sr.core.progress import drive
from napari_microdisk_sr.core.sample import make_scene

NAME = "bench_trust"
HELD_OUT_SEEDS = (201, 202, 203)
TRUTH = "HR truth"
# make_scene's acquisition (core/sample.py): PSF 0.6 LR px, area binning, 1500 e- full well, read noise 0.004.
SCENE_PROFILE = BackDegradation(2.4, "area", photons=1500.0, read_noise=0.004, source="scene_profile.json")


QUICK = Settings(model="realesr-animevideov3", epochs=3, pairs_per_epoch=150, batch=4, size=128)
FULL = Settings(model="realesr-animevideov3", epochs=6, pairs_per_epoch=300, batch=4, size=256)


def main() -> int:
    args = _common.parse_args(__doc__.splitlines()[0])
    device = _common.setup(args)
    settings = QUICK if args.quick else FULL
    size = (settings.size, settings.size)
    held_out = [make_scene(seed=seed, size=size) for seed in HELD_OUT_SEEDS]
    names = [f"scene{seed}" for seed in HELD_OUT_SEEDS]

    with tempfile.TemporaryDirectory(prefix="bench-trust-") as tmp:
        tuned_path, train_s = finetune(settings, training_crops(size), "realistic", device, Path(tmp) / "run")
        methods = {BICUBIC: BICUBIC, "pretrained": settings.model, "fine-tuned": str(tuned_path)}
        start = time.perf_counter()
        result = drive(
            evaluate(
                [scene.hr for scene in held_out],
                list(methods.values()),
                lr_images=[scene.lr for scene in held_out],
                names=names,
                device=device,
                per_disk=True,
                keep_outputs=True,
            )
        )
        evaluate_s = time.perf_counter() - start

    profile = SCENE_PROFILE
    labels = {method: label for label, method in methods.items()}
    means = {labels[row["method"]]: row for row in result.rows if row["image"] == MEAN}
    disks = {line["method"]: line for line in summarize(result.disk_rows)}
    with_profile = {
        label: np.mean(
            [
                lr_consistency(result.outputs[name, method], scene.lr, degradation=profile).psnr
                for name, scene in zip(names, held_out, strict=True)
            ]
        )
        for label, method in methods.items()
    }
    truth_area = [lr_consistency(scene.hr, scene.lr) for scene in held_out]
    truth_profile = [lr_consistency(scene.hr, scene.lr, degradation=profile) for scene in held_out]
    table = [
        {
            "method": label,
            "psnr_db": means[label]["psnr"],
            "ssim": means[label]["ssim"],
            "lr_cons_area_db": means[label]["lr_consistency_psnr"],
            "lr_cons_profile_db": float(with_profile[label]),
            "disks": disks[method]["disks"],
            "median_abs_r_error_px": disks[method]["median_abs_r_error"],
            "median_edge_width_error_px": disks[method]["median_edge_width_error"],
        }
        for label, method in methods.items()
    ]
    table.append(
        {
            "method": TRUTH,
            "psnr_db": None,
            "lr_cons_area_db": float(np.mean([c.psnr for c in truth_area])),
            "lr_cons_profile_db": float(np.mean([c.psnr for c in truth_profile])),
            "noise_floor_db": float(np.mean([c.noise_psnr for c in truth_profile])),
        }
    )
    print(
        f"{settings.model}: fine-tuned {settings.epochs} epochs x {settings.pairs_per_epoch} realistic pairs "
        f"in {train_s:.0f} s; {len(held_out)} held-out {size[0]}x{size[1]} scenes (x4), evaluated with "
        f"per-disk measures in {evaluate_s:.0f} s; {describe_device(device)}"
    )
    _common.print_table(
        table,
        (
            "method",
            "psnr_db",
            "ssim",
            "lr_cons_area_db",
            "lr_cons_profile_db",
            "noise_floor_db",
            "disks",
            "median_abs_r_error_px",
            "median_edge_width_error_px",
        ),
    )
    ratio = disks[settings.model]["median_abs_r_error"] / disks[methods["fine-tuned"]]["median_abs_r_error"]
    path = _common.write_results(
        NAME,
        device,
        folder=args.results,
        payload={
            "settings": dataclasses.asdict(settings)
            | {"quick": args.quick, "train_seeds": TRAIN_SEEDS, "held_out_seeds": HELD_OUT_SEEDS},
            "train_s": train_s,
            "evaluate_s": evaluate_s,
            "table": table,
            "rows": [row | {"method": labels[row["method"]]} for row in result.rows],
            "disk_rows": [row | {"method": labels[row["method"]]} for row in result.disk_rows],
            "ratio": ratio,
        },
    )
    print(f"results: {path}")
    print("ratio = median |r error| of the pretrained model / of the fine-tuned model (HR px)")
    print(f"ratio: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
