"""LR consistency on cases with a known answer: a true HR reproduces its LR, an invented patch does not."""

import json

import numpy as np
import pytest

from napari_microdisk_sr.core.calibrate import PROFILE_FORMAT, DegradationProfile
from napari_microdisk_sr.core.consistency import AREA, BackDegradation, lr_consistency, read_profile
from napari_microdisk_sr.core.errors import InputError
from napari_microdisk_sr.core.sample import make_scene


def area_lr(hr):
    """The uint8 LR of a uint8 HR by exact 4x4 block averaging, rounded as a camera stores it."""
    h, w = hr.shape[0] // 4, hr.shape[1] // 4
    blocks = hr.astype(np.float64).reshape(h, 4, w, 4, *hr.shape[2:]).mean(axis=(1, 3))
    return np.rint(blocks).astype(np.uint8)


@pytest.fixture(scope="module")
def truth():
    hr = make_scene(seed=4, size=(32, 32)).hr
    return hr, area_lr(hr)


def test_a_true_hr_is_consistent_with_its_area_downsampled_lr(truth):
    hr, lr = truth
    result = lr_consistency(hr, lr)
    assert result.psnr > 55.0  # only the LR's rounding to 8 bits is left
    assert result.map.shape == lr.shape
    assert result.map.dtype == np.float32
    assert result.map.max() <= 0.5 / 255 + 1e-6
    assert result.degradation == "area down-sampling x4"


def test_an_invented_bright_patch_is_flagged_where_it_lies(truth):
    hr, lr = truth
    invented = hr.copy()
    invented[40:48, 80:88] = 255  # rows 10-11, columns 20-21 of the LR
    result = lr_consistency(invented, lr)
    assert result.psnr < 40.0
    peak = np.unravel_index(np.argmax(result.map), result.map.shape)
    assert 10 <= peak[0] <= 11
    assert 20 <= peak[1] <= 21
    outside = result.map.copy()
    outside[10:12, 20:22] = 0
    assert outside.max() <= 0.5 / 255 + 1e-6  # nothing else differs


def test_colour_images_give_one_gray_map_and_alpha_is_ignored(truth):
    hr, lr = truth
    rgb_hr, rgb_lr = np.stack([hr] * 3, axis=-1), np.stack([lr] * 3, axis=-1)
    rgb_hr[0:4, 0:4, 1] = 255  # one channel of one LR pixel invented
    alpha_hr = np.concatenate([rgb_hr, np.zeros_like(rgb_hr[..., :1])], axis=-1)
    alpha_lr = np.concatenate([rgb_lr, np.full_like(rgb_lr[..., :1], 255)], axis=-1)
    result = lr_consistency(alpha_hr, alpha_lr)
    assert result.map.shape == lr.shape
    expected = (255 - int(lr[0, 0])) / 255 / 3  # one channel of three off, averaged
    assert result.map[0, 0] == pytest.approx(expected, abs=0.5 / 255)
    assert np.argmax(result.map) == 0


def test_a_stack_is_checked_plane_by_plane(truth):
    hr, lr = truth
    other = hr.copy()
    other[:4, :4] = 0
    result = lr_consistency(np.stack([hr, other]), np.stack([lr, lr]))
    assert result.map.shape == (2, *lr.shape)
    assert result.map[0].max() <= 0.5 / 255 + 1e-6
    assert np.argmax(result.map[1]) == 0


def write_profile(path, **values):
    """A profile file as microdisk-sr calibrate writes it."""
    profile = DegradationProfile(**({"photons": 1000.0, "read_noise": 0.005} | values))
    path.write_text(json.dumps(profile.to_json()))
    return path


def test_the_scenes_acquisition_as_a_profile_leaves_only_its_noise(tmp_path):
    """make_scene's LR: PSF 0.6 LR px (2.4 HR px), area binning, 1500 photo-electrons, read noise 0.004."""
    scene = make_scene(seed=2, size=(48, 48))
    profile = read_profile(
        write_profile(
            tmp_path / "p.json", psf_sigma=2.4, downsampling="area", photons=1500.0, read_noise=0.004
        )
    )
    with_profile = lr_consistency(scene.hr, scene.lr, degradation=profile)
    assert with_profile.noise_psnr == pytest.approx(with_profile.psnr, abs=0.5)
    assert with_profile.psnr > lr_consistency(scene.hr, scene.lr).psnr + 0.5  # blur explained, not noise
    assert "profile p.json: Gaussian PSF sigma 2.4 HR px, area down-sampling x4" in with_profile.degradation


def test_a_profile_applies_its_gain_offset_and_bicubic_downsampling(tmp_path):
    profile = read_profile(write_profile(tmp_path / "p.json", downsampling="bicubic", gain=0.5, offset=0.1))
    assert profile == BackDegradation(0.0, "bicubic", 0.5, 0.1, 1000.0, 0.005, str(tmp_path / "p.json"))
    flat = np.full((8, 8), 0.6, np.float32)
    np.testing.assert_allclose(profile.apply(flat), np.full((2, 2), 0.4), atol=1e-6)
    unmeasured = read_profile(write_profile(tmp_path / "lr_only.json"))  # fitted from LR images alone
    assert (unmeasured.psf_sigma, unmeasured.downsampling) == (0.0, "area")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"format": PROFILE_FORMAT, "psf_sigma": 1.0}, "has no photons, read_noise"),
        (
            {"format": PROFILE_FORMAT, "photons": 9, "read_noise": 0, "downsampling": "nearest"},
            "downsampling",
        ),
        ({"photons": 9, "read_noise": 0}, "not a degradation profile"),
        ({"format": PROFILE_FORMAT, "photons": 9, "read_noise": 0, "scale": 2}, "is for x2"),
    ],
)
def test_a_bad_profile_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InputError, match=message):
        read_profile(path)


def test_images_that_are_not_an_x4_pair_are_refused(truth):
    hr, lr = truth
    with pytest.raises(InputError, match="not the x4 of the LR"):
        lr_consistency(hr[:-4], lr)
    with pytest.raises(InputError, match="uint16 but the LR image is uint8"):
        lr_consistency(hr.astype(np.uint16), lr)
    assert AREA.describe() == "area down-sampling x4"
