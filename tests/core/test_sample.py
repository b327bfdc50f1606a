"""Synthetic microdisk scenes: deterministic, plausible, and with the disks where they are said to be."""

import time

import numpy as np
import pytest

from napari_microdisk_sr.core.detect import reaches_border
from napari_microdisk_sr.core.errors import InputError
from napari_microdisk_sr.core.sample import DEFAULT_RADIUS_RANGE, make_scene


def _radial_profile(image, disk, distances):
    """Mean of ``image`` (2D, float) on circles around ``disk`` at the given distances from its centre."""
    angles = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    ys = np.rint(disk.cy + np.outer(distances, np.sin(angles))).astype(int)
    xs = np.rint(disk.cx + np.outer(distances, np.cos(angles))).astype(int)
    return image[ys, xs].mean(axis=1)


def _interior_disks(scene, margin=30):
    h, w = scene.lr.shape[:2]
    return [d for d in scene.disks_lr if margin < d.cy < h - margin and margin < d.cx < w - margin]


def test_same_seed_same_scene_and_another_seed_another():
    first, again, other = make_scene(seed=3), make_scene(seed=3), make_scene(seed=4)
    np.testing.assert_array_equal(first.lr, again.lr)
    np.testing.assert_array_equal(first.hr, again.hr)
    assert first.disks_lr == again.disks_lr
    assert first.disks_hr == again.disks_hr
    assert not np.array_equal(first.lr, other.lr)
    assert first.disks_lr != other.disks_lr


@pytest.mark.parametrize("rgb", [False, True])
@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_shapes_types_and_range(rgb, dtype):
    scene = make_scene(seed=1, size=(64, 80), rgb=rgb, dtype=dtype, scale=4)
    channels = (3,) if rgb else ()
    assert scene.lr.shape == (64, 80, *channels)
    assert scene.hr.shape == (256, 320, *channels)
    assert scene.lr.dtype == scene.hr.dtype == np.dtype(dtype)
    assert (scene.seed, scene.scale) == (1, 4)
    if dtype == "uint16":  # the full 16-bit range, not 8 bits stored in 16
        assert scene.hr.max() > 256 * 100


def test_disks_do_not_overlap_lie_in_the_field_and_some_touch_the_border():
    touching = 0
    for seed in range(6):
        scene = make_scene(seed=seed)
        disks = scene.disks_lr
        assert len(disks) >= 15  # about 10 % of the field is covered
        centres = np.array([(d.cy, d.cx) for d in disks])
        radii = np.array([d.r for d in disks])
        gaps = np.hypot(*(centres[:, None] - centres[None]).transpose(2, 0, 1)) - radii[:, None] - radii[None]
        np.fill_diagonal(gaps, np.inf)
        assert gaps.min() >= 2.0
        assert (centres >= 0).all()
        assert (centres <= 255).all()
        assert DEFAULT_RADIUS_RANGE[0] <= radii.min()
        assert radii.max() <= DEFAULT_RADIUS_RANGE[1]
        assert all(d.touches_border == reaches_border(d.cy, d.cx, d.r, (256, 256)) for d in disks)
        touching += sum(d.touches_border for d in disks)
    assert touching > 0


def test_high_resolution_disks_are_the_low_resolution_ones_rescaled():
    scene = make_scene(seed=2, scale=3)
    assert scene.disks_hr == [d.rescaled(3) for d in scene.disks_lr]
    d = scene.disks_lr[0]
    assert scene.disks_hr[0].cy == pytest.approx(3 * d.cy + 1)
    assert scene.disks_hr[0].r == pytest.approx(3 * d.r)


@pytest.mark.parametrize("background", ["light", "dark"])
def test_disks_have_a_dark_body_a_bright_rim_and_fringes_where_they_are_said_to_be(background):
    scene = make_scene(seed=5, background=background)
    hr = scene.hr.astype(float)
    substrate = np.median(hr)
    for lr_disk in _interior_disks(scene):
        disk = lr_disk.rescaled(scene.scale)
        body, rim = _radial_profile(hr, disk, [0.0, disk.r])
        assert body < substrate < rim
        # fringes: the profile outside the rim goes down and up again, by more than 1 % of the substrate
        outside = _radial_profile(hr, disk, disk.r + scene.scale * np.arange(0.5, 4.0, 0.1))
        dip = outside.argmin()
        assert 0 < dip < outside.size - 1
        assert outside[dip:].max() - outside[dip] > 0.01 * substrate
        # the acquisition sees the same disk, blurred: a body darker and a rim brighter than the substrate
        lr = scene.lr.astype(float)
        body = _radial_profile(lr, lr_disk, [0.0])[0]
        rim = _radial_profile(lr, lr_disk, lr_disk.r + np.arange(-0.5, 1.6, 0.25)).max()
        around = _radial_profile(lr, lr_disk, lr_disk.r + np.arange(5.0, 7.0, 0.5)).mean()
        assert body < around < rim


def test_acquisition_is_the_truth_blurred_binned_and_noisy():
    scene = make_scene(seed=7)
    binned = scene.hr.astype(float).reshape(256, 4, 256, 4).mean(axis=(1, 3))
    lr = scene.lr.astype(float)
    assert np.corrcoef(binned.ravel(), lr.ravel())[0, 1] > 0.95
    assert np.abs(lr - binned).mean() > 1.0  # blur and noise: not the truth binned
    # Poisson-Gaussian noise: a few gray levels on a bare substrate, fewer where it is darker
    light, dark = (make_scene(seed=7, n_disks=0, background=b).lr.astype(float) for b in ("light", "dark"))
    light_noise, dark_noise = (np.std(np.diff(image, axis=1)) / np.sqrt(2) for image in (light, dark))
    assert 2.0 < light_noise < 10.0
    assert dark_noise < light_noise / 2
    assert (
        np.std(np.diff(make_scene(seed=7, n_disks=0).hr.astype(float), axis=1)) < 1.0
    )  # the truth: no noise


def test_rgb_has_a_warm_tint():
    scene = make_scene(seed=1, rgb=True)
    r, g, b = (np.median(scene.lr[..., c]) for c in range(3))
    assert r > g > b > 0.7 * r


def test_disk_number_and_radius_can_be_chosen():
    scene = make_scene(seed=0, n_disks=5, radius=8)
    assert len(scene.disks_lr) == 5
    assert all(d.r == 8 for d in scene.disks_lr)
    scene = make_scene(seed=0, radius=(4, 5))
    assert all(4 <= d.r <= 5 for d in scene.disks_lr)
    bare = make_scene(seed=0, n_disks=0)
    assert bare.disks_lr == bare.disks_hr == []
    assert np.percentile(bare.lr, 1) > 0.6 * np.median(bare.lr)  # no dark bodies


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": (8, 8)},
        {"size": (4096, 4096), "scale": 8},
        {"size": (64,)},
        {"size": (64.0, 64)},
        {"scale": 0},
        {"scale": 2.5},
        {"dtype": "float32"},
        {"dtype": "not a type"},
        {"radius": -1},
        {"radius": (9, 5)},
        {"radius": float("nan")},
        {"radius": 40, "size": (64, 64)},
        {"background": "grey"},
        {"n_disks": -1},
        {"n_disks": 200, "radius": 14, "size": (64, 64)},
    ],
)
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(InputError):
        make_scene(**kwargs)


def test_rendering_is_fast():
    make_scene(seed=0, rgb=True)  # warm-up (imports, allocator)
    started = time.perf_counter()
    scene = make_scene(seed=1, rgb=True)
    elapsed = time.perf_counter() - started
    assert scene.hr.shape == (1024, 1024, 3)
    assert elapsed < 1.0, f"a 1024x1024 RGB scene took {elapsed:.2f} s"
