"""Per-disk measures on disks of known centre, radius and edge, and the per-disk rows of an evaluation."""

import math

import cv2
import numpy as np
import pytest

from napari_microdisk_sr.core import metrics
from napari_microdisk_sr.core.detect import Disk
from napari_microdisk_sr.core.disk_measures import (
    DISK_COLUMNS,
    LR_METHOD,
    ReferenceDisks,
    measure_disk,
    summarize,
)
from napari_microdisk_sr.core.errors import InputError
from napari_microdisk_sr.core.sample import make_scene


def drawn_disk(cy, cx, r, *, size=96, blur=0.0, dark=True):
    """A disk drawn by 8x8 supersampling (the area each pixel covers), optionally Gaussian-blurred."""
    fine = 8
    grid = (np.arange(size * fine) + 0.5) / fine - 0.5
    inside = (grid[:, None] - cy) ** 2 + (grid[None, :] - cx) ** 2 <= r * r
    cover = inside.reshape(size, fine, size, fine).mean(axis=(1, 3))
    image = 0.2 + 0.6 * (1.0 - cover if dark else cover)
    if blur:
        image = cv2.GaussianBlur(image, (0, 0), blur, borderType=cv2.BORDER_REFLECT)
    return image


@pytest.mark.parametrize("dark", [True, False])
def test_a_drawn_disk_is_measured_to_a_fraction_of_a_pixel(dark):
    image = drawn_disk(47.3, 50.6, 20.4, dark=dark)
    measure = measure_disk(image, Disk(49.0, 49.0, 24.0))  # a guess 2 px and 20 % off
    assert measure.r == pytest.approx(20.4, abs=0.25)
    assert math.hypot(measure.cy - 47.3, measure.cx - 50.6) < 0.1
    assert measure.edge_width < 1.5  # a sharp edge, as wide as the pixels and their interpolation make it


def test_a_blurred_edge_keeps_its_radius_and_gets_its_10_90_width():
    measure = measure_disk(drawn_disk(48.0, 48.0, 20.0, blur=2.0), Disk(48.0, 48.0, 20.0))
    assert measure.r == pytest.approx(20.0, abs=0.2)
    assert measure.edge_width == pytest.approx(2 * 1.2816 * 2.0, rel=0.1)  # 10-90 % of a Gaussian step


def test_a_disk_outside_the_image_is_not_measured():
    assert measure_disk(drawn_disk(48.0, 48.0, 20.0), Disk(48.0, 200.0, 20.0)) is None


@pytest.fixture(scope="module")
def scene():
    return make_scene(seed=3, size=(96, 96), radius=8, n_disks=3)


def test_the_disks_of_a_scene_are_measured_within_a_pixel_of_the_truth(scene):
    reference = ReferenceDisks(scene.hr / 255.0)
    truth = [disk for disk in scene.disks_hr if not disk.touches_border]
    assert len(reference.measured) == len(truth) == 3
    for disk in truth:
        _, measure = min(reference.measured, key=lambda m: math.hypot(m[1].cy - disk.cy, m[1].cx - disk.cx))
        assert math.hypot(measure.cy - disk.cy, measure.cx - disk.cx) < 0.5
        assert measure.r == pytest.approx(disk.r, abs=1.0)


def test_an_lr_reference_is_measured_on_the_hr_grid(scene):
    reference = ReferenceDisks(scene.lr / 255.0, disks=scene.disks_lr, scale=4)
    rows = reference.reference_rows("field")
    assert [row["method"] for row in rows] == [LR_METHOD] * 3
    for row, disk in zip(rows, scene.disks_hr, strict=True):
        assert row["r_ref"] == pytest.approx(disk.r, abs=2.0)  # 0.5 LR px
        assert math.hypot(row["cy"] - disk.cy, row["cx"] - disk.cx) < 2.0
        assert row["r_error"] == 0.0
        assert row["psnr"] is None
    upscaled = cv2.resize(scene.lr / 255.0, (384, 384), interpolation=cv2.INTER_CUBIC)
    rows = reference.rows("field", "bicubic", upscaled)
    assert all(abs(row["r_error"]) < 1.0 for row in rows)  # bicubic keeps the LR's sizes
    assert all(row["psnr"] is None for row in rows)


def test_evaluate_per_disk_scores_each_disk_and_method(scene):
    result = metrics.evaluate_all([scene.hr], ["bicubic"], lr_images=[scene.lr], per_disk=True)
    rows = result.disk_rows
    assert [row["disk"] for row in rows] == [1, 2, 3]
    assert all(set(row) == set(DISK_COLUMNS) for row in rows)
    for row in rows:
        assert abs(row["r_error"]) < 2.0
        assert row["edge_width_error"] > 0  # bicubic blurs the edges
        assert 15.0 < row["psnr"] < 50.0
    (summary,) = summarize(rows)
    assert summary["method"] == "bicubic"
    assert summary["disks"] == "3/3"
    assert summary["median_abs_r_error"] == pytest.approx(np.median([abs(r["r_error"]) for r in rows]))


def test_the_reference_itself_as_an_output_measures_no_error(scene):
    reference = ReferenceDisks(scene.hr / 255.0)
    rows = reference.rows("field", "truth", scene.hr / 255.0)
    for (
        row
    ) in rows:  # measured again from the reference's own measurement: the same up to the fit's tolerance
        assert row["r_error"] == pytest.approx(0.0, abs=0.01)
        assert row["edge_width_error"] == pytest.approx(0.0, abs=0.01)
        assert row["centre_error"] < 0.01
    assert all(math.isinf(row["psnr"]) and row["ssim"] == pytest.approx(1.0) for row in rows)


def test_without_hr_the_lr_and_each_output_are_measured_and_only_the_consistency_scored(scene):
    result = metrics.evaluate_all(None, ["bicubic"], lr_images=[scene.lr], names=["field"], per_disk=True)
    (row,) = result.rows
    assert row["psnr"] is None
    assert row["ssim"] is None
    assert row["gain_vs_bicubic_db"] is None
    assert row["lr_consistency_psnr"] > 35.0  # bicubic interpolates the LR: averaged back, it is close
    methods = [row["method"] for row in result.disk_rows]
    assert methods == [LR_METHOD] * 3 + ["bicubic"] * 3
    for row in result.disk_rows:
        truth = min(scene.disks_hr, key=lambda d: math.hypot(d.cy - row["cy"], d.cx - row["cx"]))
        assert row["r"] == pytest.approx(truth.r, abs=2.0)  # within half an LR pixel
        assert row["psnr"] is None
    assert "-" in result.table().splitlines()[2]


def test_evaluate_needs_hr_or_lr_images():
    with pytest.raises(InputError, match="give HR images, LR images, or both"):
        metrics.evaluate(None, ["bicubic"])
