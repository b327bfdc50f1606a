"""Registration of cross-magnification pairs: known similarities recovered, the x4 grid, refusals, files."""

import hashlib
import json

import cv2
import numpy as np
import pytest
import tifffile

from napari_microdisk_sr.core import register as reg
from napari_microdisk_sr.core.errors import InputError
from napari_microdisk_sr.core.io import PixelSize, read_image, write_tiff
from napari_microdisk_sr.core.sample import make_magnified_pair


def _assert_recovered(found, truth):
    assert found.scale == pytest.approx(truth.scale, rel=0.003)
    assert found.rotation_deg == pytest.approx(truth.rotation_deg, abs=0.2)
    np.testing.assert_allclose(found.shift, truth.shift, atol=0.3)


@pytest.mark.parametrize(
    ("scale", "angle", "dtype"),
    [(2.5 * 1.015, 1.5, "uint8"), (2.5 * 0.985, -2.2, "uint16")],
    ids=["1.5 % over, +1.5 deg", "1.5 % under, -2.2 deg, 16-bit"],
)
def test_a_known_similarity_is_recovered_despite_gain_offset_and_noise(scale, angle, dtype):
    lr, hr, truth = make_magnified_pair(scale=scale, angle=angle, dtype=dtype)
    result = reg.register(lr, hr, scale=2.5)
    _assert_recovered(result.transform, truth)
    assert result.nominal_scale == 2.5
    assert result.ncc > 0.95
    y0, x0, y1, x1 = result.lr_box
    assert 0 <= y0 < y1 <= lr.shape[0]
    assert 0 <= x0 < x1 <= lr.shape[1]
    np.testing.assert_array_equal(result.lr, lr[y0:y1, x0:x1])
    assert result.hr.shape == (4 * (y1 - y0), 4 * (x1 - x0))
    assert result.hr.dtype == result.lr.dtype == np.dtype(dtype)


def test_the_hr_lies_on_the_x4_grid_of_the_lr_crop():
    """HR pixel (i, j) of the output has its centre at LR ((i + 0.5) / 4 - 0.5, ...) of the crop."""
    lr, hr, truth = make_magnified_pair()
    result = reg.register(lr, hr, scale=2.5)
    y0, x0 = result.lr_box[:2]
    offset = (1 - 1 / 4) / 2
    grid_to_lr = np.array([[0.25, 0, x0 - offset], [0, 0.25, y0 - offset], [0, 0, 1]])
    exact = cv2.warpAffine(
        hr.astype(np.float32),
        truth.lr_to_hr() @ grid_to_lr,
        result.hr.shape[::-1],
        flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
    )
    error = np.abs(exact - result.hr)[8:-8, 8:-8]
    shifted = np.abs(exact - np.roll(result.hr, 1, axis=1))[8:-8, 8:-8]  # a quarter LR pixel off
    assert error.mean() < 0.5 * shifted.mean()


def test_every_plane_and_channel_is_resampled_with_the_fit_of_the_first():
    lr, hr, _ = make_magnified_pair()
    gray = reg.register(lr, hr, scale=2.5)
    stack = reg.register(np.stack([lr, 255 - lr]), np.stack([hr, 255 - hr]), scale=2.5)
    assert stack.lr_box == gray.lr_box
    assert np.abs(stack.hr[0].astype(int) - gray.hr).max() <= 1  # OpenCV's rounding may differ by one
    assert np.abs(stack.hr[1].astype(int) - (255 - gray.hr.astype(int))).max() <= 1
    rgb = reg.register(np.dstack([lr, lr, lr // 2]), np.dstack([hr, hr, hr // 2]), scale=2.5)
    assert rgb.hr.shape == (*gray.hr.shape, 3)
    assert rgb.lr.shape == (*gray.lr.shape, 3)
    assert np.abs(rgb.hr[..., 0].astype(int) - gray.hr).max() <= 1


def test_a_pair_that_does_not_overlap_is_refused():
    lr, _, _ = make_magnified_pair()
    _, elsewhere, _ = make_magnified_pair(seed=8)  # another field
    with pytest.raises(InputError, match=r"not found|do not overlap|do not show the same field|fits poorly"):
        reg.register(lr, elsewhere, scale=2.5)


def test_a_poor_fit_is_refused():
    lr, hr, _ = make_magnified_pair(noise=60 / 255)
    with pytest.raises(InputError, match="fits poorly"):
        reg.register(lr, hr, scale=2.5, min_ncc=0.9)


def test_the_nominal_scale_comes_from_the_pixel_sizes_or_is_asked_for():
    assert reg.nominal_scale(PixelSize(1.625, 1.625, "um"), PixelSize(0.65, 0.65, "um")) == pytest.approx(2.5)
    with pytest.raises(InputError, match=r"HR image has no pixel size.*--scale"):
        reg.nominal_scale(PixelSize(1.625, 1.625, "um"), None)
    with pytest.raises(InputError, match=r"in um \(LR\) and mm \(HR\); give the scale"):
        reg.nominal_scale(PixelSize(1.625, 1.625, "um"), PixelSize(0.65, 0.65, "mm"))


def test_files_are_written_with_pixel_sizes_and_the_fit(tmp_path):
    lr, hr, truth = make_magnified_pair(dtype="uint16")
    lr_path = write_tiff(tmp_path / "field.tif", lr, pixel_size=PixelSize(1.625, 1.625, "um"))
    hr_path = write_tiff(tmp_path / "field10x.tif", hr, pixel_size=PixelSize(0.65, 0.65, "um"))
    written = reg.register_files(lr_path, hr_path, tmp_path / "out")
    assert [p.name for p in (written.lr, written.hr, written.json)] == [
        "field_lr.tif", "field_hr.tif", "field_registration.json"
    ]  # fmt: skip
    lr_out, hr_out = read_image(written.lr), read_image(written.hr)
    assert hr_out.data.shape == tuple(4 * n for n in lr_out.data.shape)
    assert hr_out.data.dtype == lr_out.data.dtype == np.uint16
    assert lr_out.pixel_size == PixelSize(1.625, 1.625, "um")
    assert hr_out.pixel_size.x == pytest.approx(1.625 / 4)
    record = json.loads(written.json.read_text())
    assert record["nominal_scale"] == pytest.approx(2.5)
    assert record["scale_source"] == "pixel sizes"
    assert record["scale"] == pytest.approx(truth.scale, rel=0.003)
    assert record["inputs"]["hr"]["sha256"] == hashlib.sha256(hr_path.read_bytes()).hexdigest()
    assert record["lr_box"] == list(written.registration.lr_box)
    again = reg.register_files(lr_path, hr_path, tmp_path / "out")  # never overwritten: one suffix for all
    assert [p.name for p in (again.lr, again.hr, again.json)] == [
        "field-1_lr.tif", "field-1_hr.tif", "field-1_registration.json"
    ]  # fmt: skip
    assert tifffile.imread(written.lr).shape == lr_out.data.shape


def test_a_refused_pair_writes_nothing(tmp_path):
    lr, _, _ = make_magnified_pair()
    _, elsewhere, _ = make_magnified_pair(seed=8)
    lr_path, hr_path = write_tiff(tmp_path / "a.tif", lr), write_tiff(tmp_path / "b.tif", elsewhere)
    with pytest.raises(InputError):
        reg.register_files(lr_path, hr_path, tmp_path / "out", scale=2.5)
    assert not (tmp_path / "out").exists()
