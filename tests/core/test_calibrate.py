"""Calibration: the fit recovers a microscope's known parameters, profiles round-trip and refuse bad files,
the profile degradation makes pairs with them, and fine-tuning records the profile and refuses a changed one.

The acquisitions are made here with an independent implementation of the model (scipy's Gaussian filter,
area binning by reshaping, numpy's Poisson and normal draws), not with the code under test.
"""

import dataclasses
import json

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data

from napari_microdisk_sr.core import train
from napari_microdisk_sr.core.calibrate import (
    DegradationProfile,
    FitQuality,
    calibrate,
    profile_for,
    read_profile,
    write_profile,
)
from napari_microdisk_sr.core.degradation import degrade
from napari_microdisk_sr.core.errors import InputError, OutputError, TrainingError
from napari_microdisk_sr.core.intensity import Intensity
from napari_microdisk_sr.core.models import ModelSpec, save_model
from napari_microdisk_sr.core.pair_config import PairConfig
from napari_microdisk_sr.core.pairs import PairSampler
from napari_microdisk_sr.core.progress import drive
from napari_microdisk_sr.core.train import FineTuneConfig


def _field(seed=0, n=128, scale=4):
    """An HR field (n*scale px a side, in [0, 1]): a ramp (flat regions of every level) and sharp disks."""
    rng = np.random.default_rng(seed)
    size = n * scale
    yy, xx = np.mgrid[:size, :size]
    hr = 0.1 + 0.8 * xx / size
    for _ in range(12):
        cy, cx = rng.uniform(0, size, 2)
        hr[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(8, 30) ** 2] = rng.uniform(0.1, 0.9)
    return hr


def _acquire(hr, *, sigma, gain, offset, photons, read_noise, seed=0, scale=4):
    """LR = offset + gain * area(blur(HR)) with Poisson-Gaussian noise, as uint16 (known parameters)."""
    rng = np.random.default_rng(seed)
    blurred = ndimage.gaussian_filter(hr, sigma, mode="mirror", truncate=3.0)
    h, w = blurred.shape
    x = blurred.reshape(h // scale, scale, w // scale, scale).mean(axis=(1, 3))
    clean = np.maximum(offset + gain * x, 0.0)
    lr = rng.poisson(clean * photons) / photons + rng.normal(0.0, read_noise, clean.shape)
    return _uint16(lr)


def _uint16(values):
    return np.round(np.clip(values, 0.0, 1.0) * 65535).astype(np.uint16)


TRUE = [
    {"sigma": 1.8, "gain": 0.85, "offset": 0.06, "photons": 800.0, "read_noise": 0.012},
    {"sigma": 2.5, "gain": 0.7, "offset": 0.1, "photons": 300.0, "read_noise": 0.03},
]


def _assert_recovers(profile, true, *, sigma_tol=0.12, noise_tol=0.2):
    assert profile.psf_sigma == pytest.approx(true["sigma"], rel=sigma_tol)
    assert profile.gain == pytest.approx(true["gain"], rel=0.03)
    assert profile.offset == pytest.approx(true["offset"], abs=0.005)
    assert profile.photons == pytest.approx(true["photons"], rel=noise_tol)
    assert profile.read_noise == pytest.approx(true["read_noise"], rel=noise_tol)


@pytest.mark.parametrize("true", TRUE)
def test_a_registered_pair_gives_back_the_microscope_that_made_it(true):
    hr = _field()
    profile = calibrate(_acquire(hr, **true), _uint16(hr))
    _assert_recovers(profile, true)
    assert profile.downsampling == "area"  # or a note that bicubic fits as well
    fit = profile.fit
    assert fit.source == "pair"
    assert fit.noise_r2 > 0.9
    # the model explains the LR up to its noise
    assert fit.residual_rms == pytest.approx(fit.predicted_noise_rms, rel=0.05)


def test_a_pair_of_a_real_photograph_gives_back_the_microscope():
    """scikit-image's phase-contrast cell (smooth, little texture) as the HR truth."""
    hr = data.cell()[:640, :548].astype(np.float64) / 255
    true = TRUE[0]
    profile = calibrate(_acquire(hr, **true), _uint16(hr))
    _assert_recovers(profile, true, sigma_tol=0.15)


def test_the_lr_alone_gives_the_noise_and_says_the_psf_is_unknown():
    true = TRUE[0]
    lr = _acquire(_field(seed=1), **true)
    profile = calibrate(lr)
    assert profile.photons == pytest.approx(true["photons"], rel=0.2)
    assert profile.read_noise == pytest.approx(true["read_noise"], rel=0.2)
    assert profile.psf_sigma is None
    assert profile.downsampling is None
    assert (profile.gain, profile.offset) == (1.0, 0.0)
    assert profile.fit.source == "lr"
    assert profile.fit.noise_r2 > 0.8
    assert "PSF" in profile.fit.notes[0]
    assert "not measured" in profile.fit.notes[0]


def test_a_narrow_range_of_flat_intensities_is_said_to_leave_photons_and_read_noise_uncertain():
    wide = calibrate(_acquire(_field(seed=1), **TRUE[0]))
    narrow = calibrate(_acquire(0.3 + 0.2 * _field(seed=1), **TRUE[0]))
    assert not any("trade off" in note for note in wide.fit.notes)
    assert any("trade off" in note for note in narrow.fit.notes)
    assert narrow.fit.intensity_range[1] - narrow.fit.intensity_range[0] < 0.35


def test_calibrate_refuses_unusable_images():
    hr = _field(n=32)
    lr = _acquire(hr, **TRUE[0])
    with pytest.raises(InputError, match="registered onto the LR"):
        calibrate(lr, _uint16(hr)[:-4])
    yy, xx = np.mgrid[:64, :64]
    texture = _uint16(0.5 + 0.4 * np.sin(xx / 1.3) * np.sin(yy / 1.7))  # no flat region
    with pytest.raises(InputError, match=r"flat|regions"):
        calibrate(texture)
    with pytest.raises(InputError, match=r"intensity levels|flat"):
        calibrate(np.full((64, 64), 30000, np.uint16))
    with pytest.raises(InputError, match="dtype"):
        calibrate(lr.astype(bool))


def test_profile_json_round_trip_and_file_errors(tmp_path):
    profile = calibrate(_acquire(_field(n=64), **TRUE[0]), _uint16(_field(n=64)))
    path = write_profile(tmp_path / "profile.json", profile)
    assert read_profile(path) == profile
    saved = json.loads(path.read_text())
    for key in ("psf_sigma", "photons", "read_noise", "gain", "offset", "downsampling", "fit"):
        assert key in saved
    with pytest.raises(OutputError):
        write_profile(path, profile)  # never replaced

    def bad(text, match):
        broken = tmp_path / "broken.json"
        broken.write_text(text)
        with pytest.raises(InputError, match=match) as info:
            read_profile(broken)
        assert "broken.json" in str(info.value)

    bad("{not json", "cannot read")
    bad(json.dumps({"photons": 100}), "format")
    bad(json.dumps(saved | {"colour": 1}), "unknown key")
    bad(json.dumps({k: v for k, v in saved.items() if k != "photons"}), "no photons")
    bad(json.dumps(saved | {"photons": -3}), "photons must be a positive number")
    bad(json.dumps(saved | {"downsampling": "nearest"}), "downsampling")
    bad(json.dumps(saved | {"fit": {"colour": 1}}), "fit")
    with pytest.raises(InputError, match="does not exist"):
        read_profile(tmp_path / "missing.json")
    assert profile_for("realistic") is None
    with pytest.raises(InputError, match=r"unknown degradation 'blurry'.*profile file"):
        profile_for("blurry")


PROFILE = DegradationProfile(
    photons=500.0, read_noise=0.02, psf_sigma=1.5, downsampling="area", gain=0.8, offset=0.1
)


def test_profile_degradation_uses_the_profile_with_a_small_jitter():
    hr = np.full((64, 64), 0.5, np.float32)
    lrs = [degrade(hr, kind="profile", profile=PROFILE, rng=np.random.default_rng(s)) for s in range(40)]
    again = degrade(hr, kind="profile", profile=PROFILE, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(lrs[0], again)
    means = np.array([lr.mean() for lr in lrs])
    stds = np.array([lr.std() for lr in lrs])
    expected = 0.1 + 0.8 * 0.5
    # gain and offset each within +-10 %: the mean within 0.5 * 0.1 * 0.8 + 0.1 * 0.1 of 0.5
    assert np.all(np.abs(means - expected) < 0.051)
    assert means.std() > 0.005
    noise = np.sqrt(expected / PROFILE.photons + PROFILE.read_noise**2)
    assert np.all(np.abs(stds / noise - 1) < 0.15)
    generic = degrade(hr, kind="realistic", rng=np.random.default_rng(0))
    assert abs(generic.mean() - 0.5) < 0.01  # no gain or offset in the generic family


def test_a_profile_without_a_psf_draws_it_from_the_generic_range():
    sharp = np.zeros((64, 64), np.float32)
    sharp[:, 32:] = 1.0
    unmeasured = dataclasses.replace(PROFILE, psf_sigma=None, downsampling=None, read_noise=0.0, photons=1e6)
    edges = [
        degrade(sharp, kind="profile", profile=unmeasured, rng=np.random.default_rng(s))[8, 6:10]
        for s in range(20)
    ]
    assert len({tuple(np.round(edge, 3)) for edge in edges}) > 10  # a PSF and a down-sampling per draw


def test_pair_config_and_degrade_check_the_profile():
    with pytest.raises(InputError, match="needs a profile"):
        PairConfig(degradation="profile")
    with pytest.raises(InputError, match="not 'profile'"):
        PairConfig(degradation="realistic", profile=PROFILE)
    with pytest.raises(InputError, match="x4 but the pairs are x2"):
        PairConfig(degradation="profile", profile=PROFILE, scale=2, patch=16)
    with pytest.raises(InputError, match="random"):
        degrade(np.zeros((8, 8)), kind="profile", profile=PROFILE)


def test_sampler_with_a_profile_is_a_pure_function_of_seed_epoch_and_index():
    crops = [_uint16(_field(seed=s, n=16)) for s in range(3)]
    config = PairConfig(patch=32, degradation="profile", profile=PROFILE, pairs_per_epoch=6)
    a = PairSampler(crops, config).pairs(1, [4, 2])
    b = PairSampler(crops, config).pairs(1, range(6))
    np.testing.assert_array_equal(a[0][0], b[0][4])
    np.testing.assert_array_equal(a[0][1], b[0][2])


# -- fine-tuning with a profile -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    spec = ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2})
    return save_model(spec.build(), spec, tmp_path_factory.mktemp("models") / "tiny.pth")


def _profile_file(folder, profile=PROFILE, name="profile.json"):
    return str(write_profile(folder / name, profile))


def test_config_reads_records_and_restores_the_profile(tmp_path):
    path = _profile_file(tmp_path)
    config = FineTuneConfig(degradation=path)
    assert config.profile == PROFILE
    saved = json.loads(json.dumps(config.to_json()))  # JSON-ready
    assert saved["degradation"] == path
    assert saved["profile"]["photons"] == PROFILE.photons
    (tmp_path / "profile.json").unlink()  # a run's config does not need the file any more
    assert FineTuneConfig.from_json(saved) == config
    with pytest.raises(InputError, match="does not exist"):
        FineTuneConfig(degradation=path)
    with pytest.raises(InputError, match="unknown degradation"):
        FineTuneConfig(degradation="gaussian")
    with pytest.raises(InputError, match="profile was given"):
        FineTuneConfig(degradation="realistic", profile=PROFILE)


def test_a_profile_records_its_intensity_mapping_and_fine_tuning_follows_it(tmp_path):
    lr = _acquire(_field(seed=1), **TRUE[0])
    assert calibrate(lr).intensity == "range"
    profile = calibrate(lr, intensity=Intensity.parse("bits:16"))
    assert profile.intensity == "bits:16"
    assert DegradationProfile.from_json(json.loads(json.dumps(profile.to_json()))) == profile
    path = _profile_file(tmp_path, profile)
    assert str(FineTuneConfig(degradation=path).intensity) == "bits:16"  # auto takes the profile's
    assert str(FineTuneConfig(degradation=path, intensity="bits:16").intensity) == "bits:16"
    with pytest.raises(InputError, match="fitted on values mapped by intensity=bits:16, but the crops"):
        FineTuneConfig(degradation=path, intensity="percentile")
    assert str(FineTuneConfig(degradation=_profile_file(tmp_path, PROFILE, "old.json")).intensity) == "auto"
    with pytest.raises(InputError, match="unknown intensity"):
        DegradationProfile(photons=100.0, read_noise=0.01, intensity="gamma")


def test_fine_tuning_records_the_profile_and_refuses_to_resume_with_a_changed_one(tiny, tmp_path):
    path = _profile_file(tmp_path)
    crops = [_uint16(_field(seed=s, n=8)) for s in range(4)]
    config = FineTuneConfig(
        model=str(tiny), epochs=1, batch_size=2, patch=16, pairs_per_epoch=4, degradation=path, device="cpu"
    )
    run_dir = tmp_path / "run"
    drive(train.fine_tune(crops, config, run_dir))
    for name in ("config.json", "model.json"):
        text = (run_dir / name).read_text()
        assert '"photons": 500.0' in text
        assert path in text
    # the run's own config resumes with its recorded profile
    more = dataclasses.replace(train.read_run_config(run_dir), epochs=2)
    assert drive(train.fine_tune(crops, more, run_dir, resume=True)).epochs_done == 2
    (tmp_path / "profile.json").unlink()
    _profile_file(tmp_path, dataclasses.replace(PROFILE, read_noise=0.05))
    with pytest.raises(TrainingError, match="profile"):
        drive(
            train.fine_tune(crops, dataclasses.replace(config, epochs=3, profile=None), run_dir, resume=True)
        )


def test_profile_quality_record_is_validated():
    with pytest.raises(InputError, match="fit must be a FitQuality"):
        DegradationProfile(photons=100.0, read_noise=0.01, fit={"source": "pair"})
    quality = FitQuality(source="lr", noise_r2=0.9, noise_levels=5, intensity_range=(0.1, 0.8))
    assert DegradationProfile(photons=100.0, read_noise=0.01, fit=quality).fit.noise_levels == 5
