"""Training pairs: degradations, seeded sampling, paired mode, small crops, splits and exports."""

import dataclasses
import itertools
import json
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_microdisk_sr.core.degradation import degrade
from napari_microdisk_sr.core.errors import InputError, OutputError
from napari_microdisk_sr.core.intensity import Intensity
from napari_microdisk_sr.core.pair_config import PairConfig
from napari_microdisk_sr.core.pairs import PairSampler, export_pairs, split_by_disk, validation_pairs


def _crops(n=3, size=72, *, rgb=True, dtype=np.uint8, seed=0):
    """Smooth random crops (a low-resolution noise field upsampled), so that degradations have structure."""
    rng = np.random.default_rng(seed)
    shape = (size // 8, size // 8, 3) if rgb else (size // 8, size // 8)
    crops = []
    for _ in range(n):
        coarse = torch.from_numpy(rng.random(shape, dtype=np.float32))
        coarse = coarse.permute(2, 0, 1)[None] if rgb else coarse[None, None]
        fine = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0]
        fine = fine.permute(1, 2, 0).numpy() if rgb else fine[0].numpy()
        top = np.iinfo(dtype).max if np.dtype(dtype).kind in "iu" else 1.0
        crops.append((fine * top).astype(dtype))
    return crops


def _area(x, scale):
    """Area down-sampling of (..., H, W) by reshaping."""
    *lead, h, w = x.shape
    return x.reshape(*lead, h // scale, scale, w // scale, scale).mean(axis=(-3, -1))


# --- PairConfig ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patch": 130}, "multiple of the scale"),
        ({"patch": 0}, "multiple of the scale"),
        ({"scale": 1}, "scale must be at least 2"),
        ({"degradation": "jpeg"}, "unknown degradation"),
        ({"pairs_per_epoch": 0}, "pairs_per_epoch"),
        ({"seed": -1}, "seed"),
        ({"small_crops": "crop"}, "small_crops"),
        ({"channels": 2}, "channels"),
        ({"patch": 64.0}, "integer"),
        ({"augment": "yes"}, "augment"),
        ({"intensity": "bits:0"}, "bit depth"),
        ({"intensity": "percentile:5"}, "two percentiles"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(InputError, match=message):
        PairConfig(**kwargs)


# --- degrade ------------------------------------------------------------------------------------------


def test_bicubic_degradation_is_antialiased_bicubic():
    hr = np.random.default_rng(1).random((64, 48, 3), dtype=np.float32)
    lr = degrade(hr, kind="bicubic", scale=4)
    assert lr.shape == (16, 12, 3)
    assert lr.dtype == np.float32
    expected = F.interpolate(
        torch.from_numpy(hr).permute(2, 0, 1)[None], size=(16, 12), mode="bicubic", antialias=True
    )[0].permute(1, 2, 0)
    np.testing.assert_allclose(lr, expected.clamp(0, 1).numpy(), atol=1e-6)
    # Antialiased: a pixel-level checkerboard (pure aliasing) averages out to mid-grey.
    checker = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float32)
    assert np.ptp(degrade(checker, kind="bicubic")[2:-2, 2:-2]) < 0.02


def test_realistic_degradation_is_reproducible_blurred_and_noisy():
    hr = _crops(1, 64, rgb=False, dtype=np.float32)[0]
    lr_a = degrade(hr, kind="realistic", rng=np.random.default_rng(5))
    lr_b = degrade(hr, kind="realistic", rng=np.random.default_rng(5))
    lr_c = degrade(hr, kind="realistic", rng=np.random.default_rng(6))
    np.testing.assert_array_equal(lr_a, lr_b)
    assert not np.array_equal(lr_a, lr_c)
    assert lr_a.shape == (16, 16)
    assert lr_a.min() >= 0.0
    assert lr_a.max() <= 1.0
    # Close to the clean down-sampled image on average (noise has zero mean, blur preserves the mean)...
    assert abs(float(lr_a.mean()) - float(hr.mean())) < 0.02
    # ...but noisy: a flat grey image comes out with pixel-to-pixel variation.
    flat = degrade(np.full((64, 64), 0.5, np.float32), kind="realistic", rng=np.random.default_rng(0))
    assert 0.001 < float(flat.std()) < 0.1


def test_realistic_noise_is_shared_by_gray_and_independent_in_rgb():
    flat = np.full((32, 32, 3), 0.5, np.float32)
    lr = degrade(flat, kind="realistic", rng=np.random.default_rng(0))
    assert not np.array_equal(lr[..., 0], lr[..., 1])
    sampler = PairSampler([np.full((32, 32), 128, np.uint8)], PairConfig(patch=32, degradation="realistic"))
    lr, _ = sampler.pairs(0, range(4))
    np.testing.assert_array_equal(lr[:, 0], lr[:, 1])
    np.testing.assert_array_equal(lr[:, 0], lr[:, 2])


def test_degrade_rejects_bad_input():
    with pytest.raises(InputError, match="multiples of the scale"):
        degrade(np.zeros((30, 32), np.float32))
    with pytest.raises(InputError, match="rng"):
        degrade(np.zeros((32, 32), np.float32), kind="realistic")
    with pytest.raises(InputError, match="unknown degradation"):
        degrade(np.zeros((32, 32), np.float32), kind="gaussian")


# --- PairSampler --------------------------------------------------------------------------------------


@pytest.mark.parametrize("degradation", ["bicubic", "realistic"])
def test_sampler_is_deterministic_by_seed_and_epoch(degradation):
    crops = _crops()
    config = PairConfig(patch=32, pairs_per_epoch=10, degradation=degradation, seed=3)
    first = list(PairSampler(crops, config).batches(0, 4))
    again = list(PairSampler(crops, config).batches(0, 4))
    for (lr_a, hr_a), (lr_b, hr_b) in zip(first, again, strict=True):
        assert torch.equal(lr_a, lr_b)
        assert torch.equal(hr_a, hr_b)
    sampler = PairSampler(crops, config)
    other_epoch = torch.cat([hr for _, hr in sampler.batches(1, 4)])
    reseeded = PairSampler(crops, dataclasses.replace(config, seed=4))
    other_seed = torch.cat([hr for _, hr in reseeded.batches(0, 4)])
    epoch0 = torch.cat([hr for _, hr in first])
    assert not torch.equal(epoch0, other_epoch)
    assert not torch.equal(epoch0, other_seed)
    # A pair does not depend on the batching: other batch sizes and a resumed epoch give the same pairs.
    lr_all = torch.cat([lr for lr, _ in sampler.batches(0, 3)])
    assert torch.equal(lr_all, torch.cat([lr for lr, _ in first]))
    resumed = list(sampler.batches(0, 4, first_batch=1))
    assert len(resumed) == 2
    assert torch.equal(resumed[0][0], first[1][0])


def test_sampler_shapes_and_value_ranges():
    sampler = PairSampler(
        _crops(dtype=np.uint16), PairConfig(patch=32, pairs_per_epoch=10, intensity="range")
    )
    assert len(sampler) == 10
    with pytest.raises(InputError, match="batch_size"):
        sampler.batches(0, 0)  # checked when called, before any batch is asked for
    with pytest.raises(InputError, match="past the epoch"):
        sampler.batches(0, 4, first_batch=4)
    batches = list(sampler.batches(0, 4))
    assert [lr.shape[0] for lr, _ in batches] == [4, 4, 2]
    lr, hr = batches[0]
    assert lr.shape == (4, 3, 8, 8)
    assert hr.shape == (4, 3, 32, 32)
    assert lr.dtype == hr.dtype == torch.float32
    assert float(hr.min()) >= 0.0
    assert float(hr.max()) <= 1.0
    # In range mode integer crops map by their dtype's range: a uint16 value v becomes v / 65535.
    levels = hr.numpy().astype(np.float64) * 65535
    np.testing.assert_allclose(levels, np.rint(levels), atol=0.02)


def test_a_bit_depth_maps_crops_of_that_depth_to_the_full_range():
    crop = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 4  # 0 ... 4092: 12-bit data
    config = PairConfig(patch=32, pairs_per_epoch=2, augment=False, intensity="bits:12")
    _, hr = PairSampler([crop], config).pairs(0, [0])
    np.testing.assert_allclose(hr[0, 0], crop / 4095, rtol=1e-6)
    with pytest.raises(InputError, match="HR image 1: values reach 4096, above 4095"):
        PairSampler([crop, crop + 4], config)


def test_sampler_patches_come_from_the_crops():
    crop = _crops(1, 40, dtype=np.uint8)[0]
    sampler = PairSampler([crop], PairConfig(patch=32, pairs_per_epoch=8, augment=False))
    _, hr = sampler.pairs(0, range(8))
    unit = np.moveaxis(crop, -1, 0) / np.float32(255)
    for patch in hr:
        hits = [
            (y, x)
            for y in range(9)
            for x in range(9)
            if np.allclose(unit[:, y : y + 32, x : x + 32], patch, atol=1e-6)
        ]
        assert hits, "every HR patch is a window of the crop"


def test_augmentation_applies_symmetries_of_the_square():
    crop = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    plain = PairSampler([crop], PairConfig(patch=32, pairs_per_epoch=40, augment=False))
    augmented = PairSampler([crop], PairConfig(patch=32, pairs_per_epoch=40))
    _, reference = plain.pairs(0, [0])
    _, hr = augmented.pairs(0, range(40))
    ref = reference[0, 0]
    symmetries = [np.rot90(ref, k) for k in range(4)] + [np.rot90(ref, k)[:, ::-1] for k in range(4)]
    seen = {next(k for k, s in enumerate(symmetries) if np.array_equal(patch[0], s)) for patch in hr}
    assert len(seen) >= 6  # 40 draws of 8 symmetries


def test_gray_crops_give_three_or_one_channels():
    gray = _crops(2, rgb=False)
    lr3, hr3 = PairSampler(gray, PairConfig(patch=32, pairs_per_epoch=2)).pairs(0, [0, 1])
    assert hr3.shape == (2, 3, 32, 32)
    assert lr3.shape == (2, 3, 8, 8)
    np.testing.assert_array_equal(hr3[:, 0], hr3[:, 2])
    lr1, hr1 = PairSampler(gray, PairConfig(patch=32, pairs_per_epoch=2, channels=1)).pairs(0, [0, 1])
    assert hr1.shape == (2, 1, 32, 32)
    assert lr1.shape == (2, 1, 8, 8)
    np.testing.assert_array_equal(hr1[:, 0], hr3[:, 0])
    with pytest.raises(InputError, match="RGB"):
        PairSampler(_crops(1), PairConfig(patch=32, channels=1))


def test_float_crops_map_by_their_own_range_in_range_mode():
    crop = np.linspace(-5.0, 15.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    _, hr = PairSampler([crop], PairConfig(patch=32, augment=False, intensity="range")).pairs(0, [0])
    assert float(hr.min()) == 0.0
    assert float(hr.max()) == 1.0


def test_by_default_16_bit_and_float_crops_map_by_their_percentiles_and_8_bit_by_the_range():
    """auto, as at inference: a dim uint16 crop fills the network's range; peaks above the 99.8th
    percentile stay above 1, and each crop of a pair (HR and LR alike) is mapped by its own percentiles."""
    hr_crop = (_crops(1, 64, rgb=False, dtype=np.uint8)[0].astype(np.uint16) // 2) + 100  # dim: 100 to 227
    hr_crop[5, 5] = 3000  # a peak
    lr_crop = _area_lr(hr_crop[..., None])[..., 0]
    config = PairConfig(patch=64, pairs_per_epoch=1, augment=False)  # the patch is the whole crop
    assert config.intensity == Intensity("auto")
    lr, hr = PairSampler([hr_crop], config, lr_images=[lr_crop]).pairs(0, [0])
    for crop, mapped in ((hr_crop, hr[0, 0]), (lr_crop, lr[0, 0])):
        low, high = np.percentile(crop, [1, 99.8])
        np.testing.assert_allclose(mapped, (crop - low) / (high - low), rtol=1e-5, atol=1e-6)
    assert hr.max() > 1.0  # the peak is kept, not clipped
    eight_bit = _crops(1, 32, dtype=np.uint8)[0]
    _, hr = PairSampler([eight_bit], PairConfig(patch=32, augment=False)).pairs(0, [0])
    np.testing.assert_allclose(hr[0], np.moveaxis(eight_bit, -1, 0) / np.float32(255), atol=1e-6)


def _area_lr(hr_crop):
    """A uint16 LR acquisition made by area down-sampling a uint16 HR crop (the rounding is below 1e-5)."""
    return (
        np.rint(_area(np.moveaxis(hr_crop, -1, 0).astype(np.float64), 4)).astype(np.uint16).transpose(1, 2, 0)
    )


def test_paired_mode_cuts_aligned_patches():
    hr_crops = _crops(2, 64, dtype=np.uint16)
    sampler = PairSampler(
        hr_crops,
        PairConfig(patch=32, pairs_per_epoch=12, intensity="range"),  # one fixed scale for both crops
        lr_images=[_area_lr(c) for c in hr_crops],
    )
    assert sampler.paired
    lr, hr = sampler.pairs(0, range(12))
    assert lr.shape == (12, 3, 8, 8)
    assert hr.shape == (12, 3, 32, 32)
    # Each LR patch is the area down-sampling of its HR patch, also after a flip or rotation.
    np.testing.assert_allclose(_area(hr, 4), lr, atol=1e-5)
    assert len({float(p.sum()) for p in hr}) == 12  # and the patches are different ones


def test_paired_mode_rejects_mismatched_sizes_and_counts():
    hr = _crops(2, 64)
    with pytest.raises(InputError, match="exactly 4x"):
        PairSampler(hr, PairConfig(patch=32), lr_images=[c[:15, :16] for c in _crops(2, 16)])
    with pytest.raises(InputError, match="2 HR image"):
        PairSampler(hr, PairConfig(patch=32), lr_images=_crops(1, 16))


def test_small_crops_are_padded_or_refused():
    small = _crops(1, 24)[0][:20]  # 20 x 24, smaller than the patch
    with pytest.raises(InputError, match="smaller than the 32 px patch"):
        PairSampler([small], PairConfig(patch=32, small_crops="refuse"))
    sampler = PairSampler([small], PairConfig(patch=32, augment=False))
    _, hr = sampler.pairs(0, range(4))
    assert hr.shape == (4, 3, 32, 32)
    unit = np.moveaxis(small, -1, 0) / np.float32(255)
    # The crop is in the middle of the padded patch, mirrored (edge repeated) around it.
    np.testing.assert_allclose(hr[0][:, 4:24, 4:28], unit, atol=1e-6)
    np.testing.assert_allclose(hr[0][:, 3, 4:28], unit[:, 0], atol=1e-6)
    np.testing.assert_allclose(hr[0][:, :, 0], hr[0][:, :, 7], atol=1e-6)


def test_small_paired_crops_stay_aligned_when_padded():
    hr_crop = _crops(1, 24, dtype=np.uint16)[0]
    sampler = PairSampler([hr_crop], PairConfig(patch=32, intensity="range"), lr_images=[_area_lr(hr_crop)])
    lr, hr = sampler.pairs(0, range(4))
    assert hr.shape == (4, 3, 32, 32)
    # Mirror padding with the edge repeated commutes with area down-sampling on the LR grid.
    np.testing.assert_allclose(_area(hr, 4), lr, atol=1e-5)


def test_sampler_rejects_bad_images():
    with pytest.raises(InputError, match="one or more"):
        PairSampler([], PairConfig())
    with pytest.raises(InputError, match="NaN"):
        PairSampler([np.full((32, 32), np.nan, np.float32)], PairConfig(patch=32))
    with pytest.raises(InputError, match="shape"):
        PairSampler([np.zeros((2, 32, 32, 3), np.uint8)], PairConfig(patch=32))
    with pytest.raises(InputError, match="dtype"):
        PairSampler([np.zeros((32, 32), bool)], PairConfig(patch=32))


# --- validation set, split, export --------------------------------------------------------------------


def test_validation_pairs_are_fixed_and_per_image():
    crops = _crops(3)
    config = PairConfig(patch=32, degradation="realistic")
    lr, hr = validation_pairs(crops, config, n_per_image=2)
    assert lr.shape == (6, 3, 8, 8)
    assert hr.shape == (6, 3, 32, 32)
    lr_again, hr_again = validation_pairs(crops, config, n_per_image=2)
    assert torch.equal(lr, lr_again)
    assert torch.equal(hr, hr_again)
    # Image by image: the first two patches come from crop 0, so they differ from crop 1's.
    first = np.moveaxis(crops[0], -1, 0) / np.float32(255)
    assert any(
        np.allclose(first[:, y : y + 32, x : x + 32], hr[1].numpy(), atol=1e-6)
        for y in range(41)
        for x in range(41)
    )


@pytest.mark.parametrize(
    ("n", "fraction", "n_val"), [(10, 0.2, 2), (10, 0.0, 0), (2, 0.9, 1), (1, 0.5, 0), (5, 0.01, 1)]
)
def test_split_by_disk(n, fraction, n_val):
    train, val = split_by_disk(n, fraction, seed=7)
    assert len(val) == n_val
    assert len(train) >= 1
    assert sorted(train + val) == list(range(n))
    assert (train, val) == split_by_disk(n, fraction, seed=7)


def test_split_by_disk_rejects_bad_arguments():
    with pytest.raises(InputError, match="no crops"):
        split_by_disk(0, 0.2)
    with pytest.raises(InputError, match="val_fraction"):
        split_by_disk(5, 1.0)


@pytest.mark.parametrize("fmt", ["png", "tif"])
def test_export_pairs_writes_images_and_refuses_to_overwrite(tmp_path, fmt):
    from napari_microdisk_sr.core.io import read_image

    sampler = PairSampler(_crops(2), PairConfig(patch=32, degradation="realistic"))
    paths = export_pairs(sampler, tmp_path / "pairs", n=3, fmt=fmt)
    assert len(paths) == 3
    lr, hr = sampler.pairs(0, range(3))
    lr_img, hr_img = (read_image(p).data for p in paths[1])
    assert lr_img.shape == (8, 8, 3)
    assert hr_img.shape == (32, 32, 3)
    for written, patch in ((lr_img, lr[1]), (hr_img, hr[1])):
        expected = np.moveaxis(patch, 0, -1)
        if fmt == "png":
            np.testing.assert_array_equal(written, np.rint(expected * 255).astype(np.uint8))
        else:
            np.testing.assert_array_equal(written, expected)
    info = json.loads((tmp_path / "pairs" / "pairs.json").read_text())
    assert info["config"]["degradation"] == "realistic"
    with pytest.raises(OutputError, match="exists"):
        export_pairs(sampler, tmp_path / "pairs", n=3, fmt=fmt)


def _pair_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "microdisk-sr-pairs" and t.is_alive()]


@pytest.mark.parametrize("degradation", ["bicubic", "realistic"])
def test_batches_made_ahead_in_a_thread_are_the_same_batches(degradation):
    config = PairConfig(patch=32, pairs_per_epoch=10, degradation=degradation, seed=3)
    sampler = PairSampler(_crops(), config)
    for first_batch in (0, 1):
        plain = list(sampler.batches(2, 3, first_batch=first_batch))
        ahead = list(sampler.batches(2, 3, first_batch=first_batch, prefetch=2))
        assert len(ahead) == len(plain) == 4 - first_batch
        for (lr_a, hr_a), (lr_b, hr_b) in zip(plain, ahead, strict=True):
            assert torch.equal(lr_a, lr_b)
            assert torch.equal(hr_a, hr_b)
    assert not _pair_threads()
    with pytest.raises(InputError, match="prefetch"):
        sampler.batches(0, 4, prefetch=-1)


def test_stopping_early_stops_the_thread_and_its_errors_reach_the_caller(monkeypatch):
    sampler = PairSampler(_crops(), PairConfig(patch=32, pairs_per_epoch=40))
    batches = sampler.batches(0, 1, prefetch=2)
    next(batches)
    assert len(_pair_threads()) == 1
    batches.close()
    assert not _pair_threads()

    made = []

    def fails_on_the_third(epoch, indices):
        made.append(list(indices))
        if len(made) == 3:
            raise ValueError("a crop could not be read")
        return PairSampler.pairs(sampler, epoch, indices)

    monkeypatch.setattr(sampler, "pairs", fails_on_the_third)
    batches = sampler.batches(0, 1, prefetch=2)
    assert len(list(itertools.islice(batches, 2))) == 2
    with pytest.raises(ValueError, match="could not be read"):
        next(batches)
    assert not _pair_threads()
