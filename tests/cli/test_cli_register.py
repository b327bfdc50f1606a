"""``microdisk-sr register`` in-process: the three files, their shapes and pixel sizes, and refusals."""

import json

import numpy as np
import pytest

from napari_microdisk_sr.cli import main
from napari_microdisk_sr.core.io import PixelSize, read_csv, read_image, write_tiff
from napari_microdisk_sr.core.sample import make_magnified_pair


@pytest.fixture
def pair_files(tmp_path):
    lr, hr, truth = make_magnified_pair()
    lr_path = write_tiff(tmp_path / "field.tif", lr, pixel_size=PixelSize(1.625, 1.625, "um"))
    hr_path = write_tiff(tmp_path / "field10x.tif", hr, pixel_size=PixelSize(0.65, 0.65, "um"))
    return str(lr_path), str(hr_path), truth


def test_register_writes_the_pair_and_the_fit_and_evaluate_takes_the_pair(pair_files, tmp_path, capsys):
    lr_path, hr_path, truth = pair_files
    out = tmp_path / "registered"
    assert main(["register", lr_path, hr_path, "--out", str(out)]) == 0
    assert "normalised correlation" in capsys.readouterr().out
    lr, hr = read_image(out / "field_lr.tif"), read_image(out / "field_hr.tif")
    assert hr.data.shape == (4 * lr.data.shape[0], 4 * lr.data.shape[1])
    assert hr.pixel_size.y == pytest.approx(lr.pixel_size.y / 4)
    record = json.loads((out / "field_registration.json").read_text())
    assert record["scale"] == pytest.approx(truth.scale, rel=0.003)
    assert record["rotation_deg"] == pytest.approx(truth.rotation_deg, abs=0.2)
    np.testing.assert_allclose(record["shift_yx"], truth.shift, atol=0.3)
    table = tmp_path / "metrics.csv"
    argv = ["evaluate", str(out / "field_hr.tif"), "--lr", str(out / "field_lr.tif"), "--methods", "bicubic"]
    assert main([*argv, "--out", str(table)]) == 0
    assert float(read_csv(table)[0]["psnr"]) > 20


def test_a_scale_from_the_option_replaces_missing_pixel_sizes(tmp_path, capsys):
    lr, hr, _ = make_magnified_pair()
    lr_path, hr_path = write_tiff(tmp_path / "a.tif", lr), write_tiff(tmp_path / "b.tif", hr)
    argv = ["register", str(lr_path), str(hr_path), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "--scale" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main([*argv, "--scale", "2.5"]) == 0
    assert read_image(tmp_path / "out" / "a_hr.tif").pixel_size is None


def test_a_pair_of_different_fields_is_refused_and_nothing_written(tmp_path, capsys):
    lr, _, _ = make_magnified_pair()
    _, elsewhere, _ = make_magnified_pair(seed=8)
    lr_path, hr_path = write_tiff(tmp_path / "a.tif", lr), write_tiff(tmp_path / "b.tif", elsewhere)
    argv = ["register", str(lr_path), str(hr_path), "--out", str(tmp_path / "out"), "--scale", "2.5"]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "out").exists()
