"""``microdisk-sr consistency``, ``upscale --consistency`` and ``evaluate --per-disk`` in-process."""

import json

import numpy as np
import pytest
import tifffile
import torch

from napari_microdisk_sr.cli import main
from napari_microdisk_sr.core import models
from napari_microdisk_sr.core.calibrate import PROFILE_FORMAT, DegradationProfile
from napari_microdisk_sr.core.disk_measures import DISK_COLUMNS
from napari_microdisk_sr.core.io import read_csv, write_tiff
from napari_microdisk_sr.core.sample import make_scene


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A scene's HR with its area-downsampled LR, the same HR with an invented patch, and a tiny model."""
    folder = tmp_path_factory.mktemp("consistency")
    scene = make_scene(seed=3, size=(48, 48), radius=6, n_disks=2)
    lr = np.rint(scene.hr.reshape(48, 4, 48, 4).mean(axis=(1, 3))).astype(np.uint8)
    invented = scene.hr.copy()
    invented[80:88, 120:128] = 255  # LR rows 20-21, columns 30-31
    spec = models.ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 4})
    torch.manual_seed(0)
    paths = {
        "hr": write_tiff(folder / "hr.tif", scene.hr),
        "lr": write_tiff(folder / "lr.tif", lr),
        "invented": write_tiff(folder / "invented.tif", invented),
        "scene_lr": write_tiff(folder / "scene_lr.tif", scene.lr),
        "model": models.save_model(spec.build(), spec, folder / "tiny.pth"),
    }
    return {key: str(path) for key, path in paths.items()}


def last_db(printed):
    line = printed.strip().splitlines()[-1]
    assert line.endswith(" dB")
    return float(line.split()[-2])


def test_consistency_writes_the_map_at_the_lrs_size_and_ends_with_the_psnr(files, tmp_path, capsys):
    assert main(["consistency", files["hr"], files["lr"], "--out", str(tmp_path / "true.tif")]) == 0
    true_db = last_db(capsys.readouterr().out)
    assert main(["consistency", files["invented"], files["lr"], "--out", str(tmp_path / "map.tif")]) == 0
    printed = capsys.readouterr().out
    assert "area down-sampling x4" in printed
    assert true_db > 55.0 > 40.0 > last_db(printed)
    with tifffile.TiffFile(tmp_path / "map.tif") as tif:
        error = tif.asarray()
        record = json.loads(tif.pages.first.description)
    assert error.shape == (48, 48)
    assert error.dtype == np.float32
    assert np.unravel_index(np.argmax(error), error.shape) in {(20, 30), (20, 31), (21, 30), (21, 31)}
    assert record["lr_consistency_psnr"] == pytest.approx(last_db(printed), abs=0.01)


def test_consistency_with_a_profile_says_so_and_a_bad_profile_is_an_error(files, tmp_path, capsys):
    profile = tmp_path / "profile.json"
    values = {"psf_sigma": 2.4, "downsampling": "area", "photons": 1500.0, "read_noise": 0.004}
    profile.write_text(json.dumps(DegradationProfile(**values).to_json()))
    argv = ["consistency", files["hr"], files["scene_lr"], "--out", str(tmp_path / "m.tif")]
    assert main([*argv, "--profile", str(profile)]) == 0
    printed = capsys.readouterr().out
    assert "profile profile.json: Gaussian PSF sigma 2.4 HR px" in printed
    assert "the profile's noise alone would give" in printed
    profile.write_text(json.dumps({"format": PROFILE_FORMAT, "photons": 1500.0}))
    assert main([*argv, "--profile", str(profile)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {profile}: degradation profile has no read_noise; write it with microdisk-sr calibrate"
    )


def test_consistency_refuses_images_that_are_not_an_x4_pair(files, tmp_path, capsys):
    assert main(["consistency", files["lr"], files["lr"], "--out", str(tmp_path / "m.tif")]) == 2
    assert "is not the x4 of the LR image" in capsys.readouterr().err


def test_upscale_consistency_writes_the_map_beside_the_output_and_records_the_psnr(files, tmp_path, capsys):
    argv = ["upscale", files["lr"], "--model", files["model"], "--device", "cpu", "--out", str(tmp_path)]
    assert main([*argv, "--consistency"]) == 0
    assert "LR consistency" in capsys.readouterr().out
    with tifffile.TiffFile(tmp_path / "lr_x4.tif") as tif:
        record = json.loads(tif.pages.first.description)
    assert record["lr_consistency_degradation"] == "area down-sampling x4"
    assert isinstance(record["lr_consistency_psnr"], float)
    assert tifffile.imread(tmp_path / "lr_x4_consistency.tif").shape == (48, 48)
    assert main([*argv, "--profile", str(tmp_path / "p.json")]) == 2
    assert "add --consistency" in capsys.readouterr().err


def test_evaluate_per_disk_writes_the_disk_table_and_a_summary(files, tmp_path, capsys):
    out = tmp_path / "metrics.csv"
    argv = ["evaluate", files["hr"], "--lr", files["scene_lr"], "--methods", f"bicubic,{files['model']}"]
    assert main([*argv, "--device", "cpu", "--per-disk", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "LR consistency: outputs degraded back with area down-sampling x4" in printed
    assert "median |r error|" in printed
    assert "bicubic" in printed.split("per disk")[1]
    assert read_csv(out)[0]["lr_consistency_psnr"]
    rows = read_csv(tmp_path / "metrics_disks.csv")
    assert list(rows[0]) == list(DISK_COLUMNS)
    disks = [row["disk"] for row in rows if row["method"] == "bicubic"]
    assert disks[0] == "1"
    assert [(row["method"], row["disk"]) for row in rows] == [
        (method, disk) for method in ("bicubic", files["model"]) for disk in disks
    ]
    assert all(abs(float(row["r_error"])) < 2.0 for row in rows if row["method"] == "bicubic")


@pytest.mark.parametrize("command", ["consistency", "evaluate", "upscale"])
def test_help_names_the_new_options(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    printed = capsys.readouterr().out
    assert "--profile" in printed
    assert {"consistency": "--out", "evaluate": "--per-disk", "upscale": "--consistency"}[command] in printed


def test_evaluate_with_lr_images_alone_measures_the_disks_on_the_lr_and_each_output(files, tmp_path, capsys):
    out = tmp_path / "lr_only.csv"
    argv = ["evaluate", "--lr", files["scene_lr"], "--methods", "bicubic", "--per-disk", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "LR " in printed.split("per disk")[1]
    (row,) = read_csv(out)
    assert row["psnr"] == ""
    assert float(row["lr_consistency_psnr"]) > 30.0
    methods = {row["method"] for row in read_csv(tmp_path / "lr_only_disks.csv")}
    assert methods == {"LR", "bicubic"}
    assert main(["evaluate", "--lr", files["scene_lr"], "--error-maps", str(tmp_path)]) == 2
    assert "--error-maps needs HR images" in capsys.readouterr().err


def test_upscale_consistency_refuses_a_region(files, tmp_path, capsys):
    argv = ["upscale", files["lr"], "--model", files["model"], "--out", str(tmp_path), "--consistency"]
    assert main([*argv, "--region", "0:16,0:16"]) == 2
    assert "--consistency checks whole images" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_rerun_asking_for_the_check_redoes_an_unchecked_output_and_then_skips(files, tmp_path, capsys):
    argv = ["upscale", files["lr"], "--model", files["model"], "--device", "cpu", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert main([*argv, "--consistency"]) == 0  # the output there was made without the check
    assert (tmp_path / "lr_x4-1_consistency.tif").is_file()
    capsys.readouterr()
    assert main([*argv, "--consistency"]) == 0
    assert "skipped 1 of 1" in capsys.readouterr().out


def test_consistency_maps_by_the_intensity_the_upscale_recorded(files, tmp_path, capsys):
    lr = tifffile.imread(files["scene_lr"]).astype(np.uint16) * 16  # 12-bit data in a 16-bit file
    src = write_tiff(tmp_path / "cam.tif", lr)
    argv = ["upscale", str(src), "--model", files["model"], "--device", "cpu", "--out", str(tmp_path)]
    assert main([*argv, "--consistency", "--intensity", "bits:12"]) == 0
    with tifffile.TiffFile(tmp_path / "cam_x4.tif") as tif:
        recorded = json.loads(tif.pages.first.description)["lr_consistency_psnr"]
    capsys.readouterr()
    check = ["consistency", str(tmp_path / "cam_x4.tif"), str(src), "--out"]
    assert main([*check, str(tmp_path / "map.tif")]) == 0  # by the recorded bits:12
    assert last_db(capsys.readouterr().out) == pytest.approx(recorded, abs=0.01)
    assert main([*check, str(tmp_path / "map.tif"), "--intensity", "range"]) == 0  # fractions of 65535
    assert last_db(capsys.readouterr().out) > recorded + 20
