"""Microdisk detection: accuracy on synthetic scenes with known disks, options, validation, boxes."""

import cv2
import numpy as np
import pytest
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from skimage import data, filters, measure, segmentation

from napari_microdisk_sr.core.detect import POLARITIES, Disk, detect_disks, disk_box, reaches_border
from napari_microdisk_sr.core.errors import InputError
from napari_microdisk_sr.core.sample import make_scene


def _match(truth, found):
    """Pairs (true, found) one to one, a found centre within half the true radius of the true one."""
    if not truth or not found:
        return []
    t = np.array([(d.cy, d.cx, d.r) for d in truth])
    f = np.array([(d.cy, d.cx) for d in found])
    distance = np.hypot(t[:, None, 0] - f[None, :, 0], t[:, None, 1] - f[None, :, 1])
    cost = np.where(distance < 0.5 * t[:, 2:], distance, 1e9)
    rows, cols = linear_sum_assignment(cost)
    return [(truth[i], found[j]) for i, j in zip(rows, cols, strict=True) if cost[i, j] < 1e9]


def _scores(scenes, found_lists, *, hr=False):
    n_true = n_found = 0
    pairs = []
    for scene, found in zip(scenes, found_lists, strict=True):
        truth = scene.disks_hr if hr else scene.disks_lr
        n_true += len(truth)
        n_found += len(found)
        pairs += _match(truth, found)
    centre = [np.hypot(t.cy - f.cy, t.cx - f.cx) for t, f in pairs]
    radius = [abs(f.r - t.r) / t.r for t, f in pairs]
    return len(pairs) / n_true, len(pairs) / n_found, np.median(centre), np.median(radius), pairs


@pytest.mark.parametrize(
    ("rgb", "dtype", "background"),
    [
        (False, "uint8", "light"),
        (True, "uint16", "light"),
        (False, "uint16", "dark"),
        (True, "uint8", "dark"),
    ],
)
def test_accuracy_on_sample_scenes(rgb, dtype, background):
    scenes = [make_scene(seed=seed, rgb=rgb, dtype=dtype, background=background) for seed in (0, 1, 2)]
    found = [detect_disks(scene.lr) for scene in scenes]
    recall, precision, centre_error, radius_error, pairs = _scores(scenes, found)
    assert recall >= 0.95
    assert precision >= 0.95
    assert centre_error <= 1.0  # low-resolution pixels
    assert radius_error <= 0.10
    assert all(t.touches_border == f.touches_border for t, f in pairs if abs(f.r - t.r) < 0.2)


def test_accuracy_at_high_resolution_large_radii_and_no_noise():
    scenes = [make_scene(seed=seed, size=(96, 96)) for seed in (3, 4)]
    found = [detect_disks(scene.hr) for scene in scenes]
    recall, precision, centre_error, radius_error, _ = _scores(scenes, found, hr=True)
    assert recall == precision == 1.0
    assert centre_error <= 0.5
    assert radius_error <= 0.03


def test_intensity_range_and_type_do_not_matter():
    scene = make_scene(seed=6)
    reference = detect_disks(scene.lr)
    rescaled = detect_disks(scene.lr.astype(np.float64) / 255 * 3.5 - 1.0)
    pairs = _match(reference, rescaled)
    assert len(pairs) == len(reference) == len(rescaled)
    for a, b in pairs:  # the same disks, up to rounding
        assert (a.cy, a.cx, a.r) == pytest.approx((b.cy, b.cx, b.r), abs=0.1)


def test_results_are_best_first_and_max_disks_keeps_the_best():
    scene = make_scene(seed=8)
    disks = detect_disks(scene.lr)
    scores = [d.score for d in disks]
    assert scores == sorted(scores, reverse=True)
    assert all(0 < s <= 1.5 for s in scores)
    assert detect_disks(scene.lr, max_disks=3) == disks[:3]


def test_radius_range_narrows_the_search():
    scene = make_scene(seed=9, radius=(5, 14))
    disks = detect_disks(scene.lr, radius_range=(10, 14))
    assert disks
    assert all(10 <= d.r <= 14 for d in disks)
    wanted = [d for d in scene.disks_lr if 10.5 <= d.r <= 13.5 and not d.touches_border]
    assert len(_match(wanted, disks)) == len(wanted)
    small = [d for d in scene.disks_lr if d.r < 9]
    assert not _match(small, disks)
    assert detect_disks(scene.lr, radius_range=(None, 9)) == detect_disks(scene.lr, radius_range=(3, 9))


def test_sensitivity_trades_completeness_for_strictness():
    scene = make_scene(seed=10, background="dark")
    strict, default, lenient = (len(detect_disks(scene.lr, sensitivity=s)) for s in (0.0, 0.5, 1.0))
    assert strict <= default <= lenient
    # On a clean scene every setting finds every disk; with more noise, only a lenient detector does.
    noisy = scene.lr + np.random.default_rng(0).normal(0.0, 8.0, scene.lr.shape)
    strict, default, lenient = (len(detect_disks(noisy, sensitivity=s)) for s in (0.0, 0.5, 1.0))
    assert strict <= default <= lenient
    assert strict < lenient
    assert lenient >= 0.9 * len(scene.disks_lr)


def _plain_disks(disks, *, bright, shape=(160, 200), seed=0):
    """Uniform disks (no rim) brighter or darker than a uniform ground, blurred, with noise."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.full(shape, 40.0 if bright else 200.0)
    for disk in disks:
        inside = np.clip(disk.r + 0.5 - np.hypot(yy - disk.cy, xx - disk.cx), 0.0, 1.0)
        image += (160.0 if bright else -160.0) * inside
    image = cv2.GaussianBlur(image, (0, 0), 1.0)
    return image + np.random.default_rng(seed).normal(0.0, 4.0, shape)


_PLAIN = [Disk(40, 45, 12), Disk(45, 120, 15), Disk(110, 60, 18), Disk(115, 150, 10.5)]


@pytest.mark.parametrize("bright", [True, False], ids=["bright disks", "dark disks"])
def test_either_polarity_is_found_by_default_and_each_one_on_request(bright):
    image = _plain_disks(_PLAIN, bright=bright)
    found = detect_disks(image)
    pairs = _match(_PLAIN, found)
    assert len(pairs) == len(found) == len(_PLAIN)
    for truth, disk in pairs:
        assert (disk.cy, disk.cx, disk.r) == pytest.approx((truth.cy, truth.cx, truth.r), abs=0.2)
    assert detect_disks(image, polarity="bright" if bright else "dark") == found
    assert detect_disks(image, polarity="dark" if bright else "bright") == []


def test_either_polarity_finds_microdisks_as_the_dark_search_does():
    for background in ("light", "dark"):
        scene = make_scene(seed=5, background=background)
        assert detect_disks(scene.lr) == detect_disks(scene.lr, polarity="dark")
        assert detect_disks(scene.lr, polarity="bright") == []


def test_specks_far_smaller_than_the_disks_are_left_out_unless_a_minimum_radius_is_given():
    specks = [Disk(20, 180, 4.0), Disk(140, 100, 4.0)]
    image = _plain_disks(_PLAIN + specks, bright=True)
    assert len(_match(_PLAIN, detect_disks(image))) == len(detect_disks(image)) == len(_PLAIN)
    kept = detect_disks(image, radius_range=(3, None))
    assert len(_match(specks, kept)) == len(specks)
    assert len(kept) == len(_PLAIN) + len(specks)


def _coins_truth():
    """The 24 coins of scikit-image's photograph (centre, radius of the same area), by watershed."""
    coins = data.coins()
    markers = np.where(coins < 30, 1, 0) + np.where(coins > 150, 2, 0)
    filled = ndimage.binary_fill_holes(segmentation.watershed(filters.sobel(coins), markers) == 2)
    regions = [r for r in measure.regionprops(ndimage.label(filled)[0]) if r.area > 300]
    return [Disk(*r.centroid, r.equivalent_diameter_area / 2) for r in regions]


def test_the_coins_photograph_bright_coins_on_a_dark_ground():
    truth = _coins_truth()
    assert len(truth) == 24
    found = detect_disks(data.coins())
    pairs = _match(truth, found)
    assert len(pairs) >= 22  # 23 at the time of writing (the inverted image alone found 22, and a speck)
    assert len(found) - len(pairs) <= 1  # 0 at the time of writing
    for coin, disk in pairs:
        assert 15 <= disk.r <= 35
        assert abs(disk.r - coin.r) <= 0.15 * coin.r


@pytest.mark.parametrize(
    "make_image",
    [
        lambda: make_scene(seed=11, n_disks=0).lr,
        lambda: np.random.default_rng(0).normal(100.0, 10.0, (128, 128)),
        lambda: np.zeros((64, 64), np.uint8),
    ],
    ids=["bare substrate", "noise", "flat"],
)
def test_no_disk_gives_an_empty_list(make_image):
    assert detect_disks(make_image()) == []


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((2, 64, 64)), "2D gray or RGB"),
        (np.zeros((64, 64, 5)), "2D gray or RGB"),
        (np.zeros((64,)), "2D gray or RGB"),
        (np.zeros((5, 64)), "too small"),
        (np.zeros((64, 64), bool), "type bool"),
        (np.zeros((64, 64), complex), "type complex"),
        (np.where(np.eye(64) > 0, np.nan, 0.0), "64 NaN or infinite"),
        (np.full((64, 64), np.inf), "NaN or infinite"),
    ],
)
def test_unusable_images_are_refused(image, message):
    with pytest.raises(InputError, match=message):
        detect_disks(image)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"radius_range": (1, 5)}, "radius_range"),
        ({"radius_range": (8, 4)}, "radius_range"),
        ({"radius_range": (float("nan"), 4)}, "radius_range"),
        ({"radius_range": (3,)}, "radius_range"),
        ({"radius_range": "3-5"}, "radius_range"),
        ({"radius_range": ("a", 5)}, "radius_range"),
        ({"radius_range": (40, 50)}, "does not fit"),
        ({"sensitivity": 1.5}, "sensitivity"),
        ({"sensitivity": "high"}, "sensitivity"),
        ({"max_disks": 0}, "max_disks"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(InputError, match=message):
        detect_disks(np.zeros((64, 64)), **options)


def test_polarities_are_checked():
    assert POLARITIES[0] == "either"  # the default
    with pytest.raises(InputError, match="polarity must be one of either, dark, bright, not 'light'"):
        detect_disks(np.zeros((64, 64)), polarity="light")


def test_disk_validates_and_rescales():
    disk = Disk(np.float32(10.0), 20, 5)
    assert type(disk.cy) is float
    assert disk.rescaled(4) == Disk(41.5, 81.5, 20.0)
    for bad in [(0, 0, 0), (0, 0, -1), (np.nan, 0, 3), (0, np.inf, 3)]:
        with pytest.raises(InputError):
            Disk(*bad)


def test_reaches_border():
    assert not reaches_border(10, 10, 10, (21, 21))
    assert reaches_border(10, 10, 10.6, (21, 21))
    assert reaches_border(10, 10, 10, (20, 21))


def test_disk_box_is_a_square_around_the_disk_clipped_to_the_image():
    assert disk_box(Disk(50.2, 40.7, 8), (100, 100)) == (40, 31, 61, 52)  # 2 * ceil(8 * 1.25) + 1 = 21
    assert disk_box(Disk(50, 40, 8), (100, 100), margin=0) == (42, 32, 59, 49)
    assert disk_box(Disk(3, 95, 8), (100, 100, 3)) == (0, 85, 14, 100)
    with pytest.raises(InputError, match="margin"):
        disk_box(Disk(50, 50, 8), (100, 100), margin=-0.1)
    with pytest.raises(InputError, match="outside"):
        disk_box(Disk(150, 50, 8), (100, 100))
