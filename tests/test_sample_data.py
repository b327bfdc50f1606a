"""``sample_data/``: the committed files are what ``sample_data/make_samples.py`` makes, and say so."""

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from napari_microdisk_sr.core.io import read_image

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLE_DATA / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_files_are_what_the_script_makes(script, tmp_path):
    made = script.make_samples(tmp_path)
    committed = sorted(SAMPLE_DATA.glob("*.tif"))
    assert sorted(p.name for p in made) == [p.name for p in committed]
    for path in made:
        ours, theirs = read_image(path), read_image(SAMPLE_DATA / path.name)
        assert theirs.data.dtype == ours.data.dtype
        assert np.array_equal(theirs.data, ours.data), path.name
        assert theirs.pixel_size == ours.pixel_size, path.name
    assert sum(p.stat().st_size for p in committed) < 400_000
    readme = (SAMPLE_DATA / "README.md").read_text()
    assert all(f"`{p.name}`" in readme for p in committed)


def test_the_samples_have_the_pixel_sizes_and_ranges_they_claim(script):
    pair_lr, pair_hr = read_image(SAMPLE_DATA / "pair_4x.tif"), read_image(SAMPLE_DATA / "pair_4x_hr.tif")
    assert pair_hr.data.shape == tuple(4 * n for n in pair_lr.data.shape)
    assert pair_lr.pixel_size.x == pytest.approx(4 * pair_hr.pixel_size.x)
    assert pair_lr.pixel_size.unit == "um"
    twelve = read_image(SAMPLE_DATA / "field_12bit.tif").data
    assert twelve.dtype == np.uint16
    assert twelve.max() <= 4095
    field, window = read_image(SAMPLE_DATA / "cross_4x.tif"), read_image(SAMPLE_DATA / "cross_10x_window.tif")
    assert field.pixel_size.x / window.pixel_size.x == pytest.approx(script.CROSS_RATIO)
    assert window.data.shape == (int(script.WINDOW_4X * script.CROSS_RATIO),) * 2
    # the window shows the field's pixels from WINDOW_ORIGIN on: averaged back to 4X they correlate closely
    y, x = script.WINDOW_ORIGIN
    inside = field.data[y : y + script.WINDOW_4X, x : x + script.WINDOW_4X].astype(float)
    back = cv2.resize(window.data.astype(float), inside.shape[::-1], interpolation=cv2.INTER_AREA)
    assert np.corrcoef(back.ravel(), inside.ravel())[0, 1] > 0.9
