"""``microdisk-sr calibrate`` in-process, and ``finetune --degradation PROFILE.json`` training with it."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from napari_microdisk_sr.cli import main
from napari_microdisk_sr.core import models
from napari_microdisk_sr.core.calibrate import DegradationProfile, read_profile, write_profile
from napari_microdisk_sr.core.crops import Crop, write_crop_set
from napari_microdisk_sr.core.degradation import degrade
from napari_microdisk_sr.core.io import write_tiff
from napari_microdisk_sr.core.sample import make_scene
from napari_microdisk_sr.core.train import read_run_config

TRUE = DegradationProfile(
    photons=600.0, read_noise=0.015, psf_sigma=2.0, downsampling="area", gain=0.8, offset=0.08
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A registered LR/HR pair (uint16) made with ``TRUE``, a crop set and a tiny x4 model."""
    folder = tmp_path_factory.mktemp("calibrate")
    hr = make_scene(seed=5, size=(96, 96), dtype="uint16").hr
    lr = degrade(hr.astype(np.float32) / 65535, kind="profile", profile=TRUE, rng=np.random.default_rng(0))
    write_tiff(folder / "field_hr.tif", hr)
    write_tiff(folder / "field_lr.tif", np.round(lr * 65535).astype(np.uint16))
    crops = [Crop(hr[y : y + 40, x : x + 40], (y, x, y + 40, x + 40)) for y in (0, 64) for x in (0, 80, 160)]
    write_crop_set(crops, folder / "crops", stem="field")
    spec = models.ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2})
    torch.manual_seed(0)
    return {
        "lr": str(folder / "field_lr.tif"),
        "hr": str(folder / "field_hr.tif"),
        "crops": str(folder / "crops"),
        "model": str(models.save_model(spec.build(), spec, folder / "tiny.pth")),
    }


def test_calibrate_a_pair_writes_the_profile_and_says_how_well_it_fits(files, tmp_path, capsys):
    out = tmp_path / "profile.json"
    assert main(["calibrate", files["lr"], "--hr", files["hr"], "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "PSF sigma:" in text
    assert "residual RMS" in text
    assert f"wrote {out}" in text
    profile = read_profile(out)
    # the jitter of the profile degradation (+-10 %) bounds how close the fit can be
    assert profile.psf_sigma == pytest.approx(TRUE.psf_sigma, rel=0.15)
    assert profile.gain == pytest.approx(TRUE.gain, rel=0.12)
    assert profile.offset == pytest.approx(TRUE.offset, rel=0.12)
    assert profile.photons == pytest.approx(TRUE.photons, rel=0.3)
    saved = json.loads(out.read_text())
    assert {"psf_sigma", "photons", "read_noise", "gain", "offset", "downsampling", "fit"} <= set(saved)
    assert main(["calibrate", files["lr"], "--hr", files["hr"], "--out", str(out)]) == 2
    assert "never replaced" in capsys.readouterr().err


def test_calibrate_the_lr_alone_says_the_psf_was_not_measured(files, tmp_path, capsys):
    out = tmp_path / "noise.json"
    assert main(["calibrate", files["lr"], "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "PSF sigma: not measured" in text
    assert "note: no HR image" in text
    assert read_profile(out).psf_sigma is None


def test_calibrate_errors(files, tmp_path, capsys):
    assert main(["calibrate", files["lr"], "--hr", files["lr"], "--out", str(tmp_path / "p.json")]) == 2
    assert "registered onto the LR" in capsys.readouterr().err
    assert main(["calibrate", files["lr"], "--out", str(tmp_path / "p.txt")]) == 2
    assert "must be a .json file" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


def test_finetune_with_a_profile_records_it_and_refuses_a_changed_one_on_resume(files, tmp_path, capsys):
    profile = write_profile(tmp_path / "profile.json", TRUE)
    out = tmp_path / "run"
    tiny = ["--epochs", "1", "--patch", "16", "--pairs-per-epoch", "4", "--batch", "2", "--device", "cpu"]
    argv = ["finetune", files["crops"], "--out", str(out), "--model", files["model"], *tiny]
    assert main([*argv, "--degradation", str(profile)]) == 0
    config = read_run_config(out)
    assert config.profile == TRUE
    assert config.degradation == str(profile.resolve())
    assert (
        json.loads((out / "model.json").read_text())["info"]["fine_tuning"]["config"]["profile"]["gain"]
        == 0.8
    )
    profile.unlink()
    write_profile(profile, DegradationProfile(photons=100.0, read_noise=0.05))
    resume = ["finetune", files["crops"], "--out", str(out), "--resume", "--epochs", "2"]
    assert main([*resume, "--degradation", str(profile)]) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert main(resume) == 0  # with the run's own profile
    assert main(["finetune", files["crops"], "--out", str(tmp_path / "r2"), "--degradation", "blur"]) == 2
    assert "unknown degradation 'blur'" in capsys.readouterr().err
    fitted = write_profile(tmp_path / "fitted.json", dataclasses.replace(TRUE, intensity="bits:16"))
    assert main([*argv[:3], str(tmp_path / "r3"), *argv[4:], "--degradation", str(fitted)]) == 0
    assert str(read_run_config(tmp_path / "r3").intensity) == "bits:16"  # the profile's, not auto
    refused = [
        *argv[:3],
        str(tmp_path / "r4"),
        *argv[4:],
        "--degradation",
        str(fitted),
        "--intensity",
        "range",
    ]
    assert main(refused) == 2
    assert (
        "mapped by --intensity bits:16, but the crops would be mapped by --intensity range: its gain, offset "
        "and noise mean nothing in other units; fine-tune with --intensity bits:16 (auto takes it), or "
        "calibrate again with --intensity range"
    ) in capsys.readouterr().err
    assert not (tmp_path / "r4").exists()
