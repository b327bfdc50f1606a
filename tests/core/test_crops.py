"""Crops: cutting disks and boxes, writing crop sets without overwriting, reading them back."""

import numpy as np
import pytest
import tifffile

from napari_microdisk_sr.core.crops import (
    COLUMNS,
    CSV_NAME,
    PAIR_SCALE,
    Crop,
    crop_boxes,
    crop_disks,
    crop_pairs,
    read_crop_set,
    write_crop_set,
)
from napari_microdisk_sr.core.detect import Disk, disk_box
from napari_microdisk_sr.core.errors import InputError, OutputError
from napari_microdisk_sr.core.io import read_csv


@pytest.fixture
def image():
    return np.arange(100 * 120, dtype=np.uint16).reshape(100, 120) * 5


INSIDE = Disk(50.3, 60.6, 10.0)
AT_BORDER = Disk(5.0, 60.0, 8.0)


def test_disks_are_cut_as_squares_and_border_disks_skipped(image):
    crops = crop_disks(image, [INSIDE, AT_BORDER], source="field.tif")
    assert len(crops) == 1
    crop = crops[0]
    assert crop.box == disk_box(INSIDE, image.shape) == (37, 48, 64, 75)  # 2 * ceil(10 * 1.25) + 1 = 27
    np.testing.assert_array_equal(crop.image, image[37:64, 48:75])
    assert crop.image.dtype == np.uint16
    assert (crop.disk, crop.source) == (INSIDE, "field.tif")
    image[40, 50] = 1  # a crop is a copy
    assert crop.image[3, 2] != 1


def test_border_disks_are_kept_on_request_and_the_margin_widens_the_box(image):
    crops = crop_disks(image, [INSIDE, AT_BORDER], skip_border=False, margin=0.5)
    assert [c.disk for c in crops] == [INSIDE, AT_BORDER]
    assert crops[0].box == (35, 46, 66, 77)  # half-size ceil(10 * 1.5) = 15 around (50, 61)
    assert crops[1].box[0] == 0  # clipped


def test_boxes_are_rounded_clipped_and_cut_as_given(image):
    rgb = np.stack([image] * 3, axis=-1)
    crops = crop_disks(rgb, [(10.4, 20.6, 30, 40), (-5, 100, 20, 130)], source=None)
    assert [c.box for c in crops] == [(10, 21, 30, 40), (0, 100, 20, 120)]
    assert crops[0].image.shape == (20, 19, 3)
    assert crops[0].disk is None


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ((10, 20, 30), "y0, x0, y1, x1"),
        ("abcd", "y0, x0, y1, x1"),
        ((10, 20, np.nan, 40), "finite"),
        ((30, 20, 10, 40), "empty or outside"),
        ((200, 20, 210, 40), "empty or outside"),
    ],
)
def test_bad_boxes_are_refused(image, item, message):
    with pytest.raises(InputError, match=message):
        crop_disks(image, [item])


def test_bad_image_or_margin_is_refused(image):
    with pytest.raises(InputError, match="2D image"):
        crop_disks(np.zeros((2, 3, 64, 64)), [INSIDE])
    with pytest.raises(InputError, match="margin"):
        crop_disks(image, [INSIDE], margin=-1)


def test_a_crop_set_is_written_and_read_back(tmp_path, image):
    crops = crop_disks(image, [INSIDE, (0, 0, 10, 12)], source="field.tif")
    folder = tmp_path / "set"
    assert write_crop_set(crops, folder, stem="field") == [
        folder / "field_disk001.tif",
        folder / "field_disk002.tif",
    ]
    assert sorted(p.name for p in folder.iterdir()) == [CSV_NAME, "field_disk001.tif", "field_disk002.tif"]
    raw = read_csv(folder / CSV_NAME)
    assert tuple(raw[0]) == COLUMNS
    assert raw[1] == {
        "file": "field_disk002.tif",
        "source": "field.tif",
        "y0": "0",
        "x0": "0",
        "y1": "10",
        "x1": "12",
        "cy": "",
        "cx": "",
        "r": "",
    }
    crop_set = read_crop_set(folder)
    assert len(crop_set) == 2
    assert crop_set.folder == folder
    assert crop_set.rows[0] == {
        "file": "field_disk001.tif",
        "source": "field.tif",
        "y0": 37,
        "x0": 48,
        "y1": 64,
        "x1": 75,
        "cy": 50.3,
        "cx": 60.6,
        "r": 10.0,
    }
    for crop, read in zip(crops, crop_set.images, strict=True):
        assert read.dtype == np.uint16
        np.testing.assert_array_equal(read, crop.image)
    assert crop_boxes(folder) == [(37, 48, 64, 75), (0, 0, 10, 12)]
    assert '"box": [37, 48, 64, 75]' in tifffile.TiffFile(folder / "field_disk001.tif").pages[0].description


def test_writing_again_appends_and_never_overwrites(tmp_path, image):
    first = crop_disks(image, [INSIDE], source="a.tif")
    write_crop_set(first, tmp_path, stem="a")
    before = (tmp_path / "a_disk001.tif").read_bytes()
    (tmp_path / "a_disk002.tif").write_bytes(b"left over by an interrupted write")
    second = [Crop(np.ones((4, 4), np.uint8), (0, 0, 4, 4))] * 2
    write_crop_set(second, tmp_path, stem="a")
    write_crop_set(second, tmp_path, stem="b")
    crop_set = read_crop_set(tmp_path)
    names = [row["file"] for row in crop_set.rows]
    assert names == ["a_disk001.tif", "a_disk003.tif", "a_disk004.tif", "b_disk001.tif", "b_disk002.tif"]
    assert (tmp_path / "a_disk001.tif").read_bytes() == before
    assert (tmp_path / "a_disk002.tif").read_bytes() == b"left over by an interrupted write"
    assert crop_set.images[0].dtype == np.uint16
    assert crop_set.images[1].dtype == np.uint8


def test_processes_adding_crops_to_one_set_at_once_lose_none(tmp_path, run_at_once):
    """Four processes add three crops each to one folder at the same moment: twelve files, all listed."""
    setup = "import numpy as np\nfrom napari_microdisk_sr.core.crops import Crop, write_crop_set"
    body = (
        "n = int(sys.argv[4])\n"
        "crops = [Crop(np.full((6, 6), 10 * n + k, np.uint8), (0, k, 6, k + 6), source=f'p{n}.tif')\n"
        "         for k in range(3)]\n"
        "write_crop_set(crops, sys.argv[3], stem='field')"
    )
    runs = run_at_once(setup, body, [[tmp_path, n] for n in range(4)])
    assert [run.returncode for run in runs] == [0] * 4, [run.stderr for run in runs]
    crop_set = read_crop_set(tmp_path)
    assert sorted(row["file"] for row in crop_set.rows) == [f"field_disk{n:03d}.tif" for n in range(1, 13)]
    assert sorted(int(image[0, 0]) for image in crop_set.images) == sorted(
        10 * n + k for n in range(4) for k in range(3)
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [CSV_NAME, *(r["file"] for r in crop_set.rows)]
    )


def test_a_crop_name_taken_while_writing_gets_the_next_number(tmp_path, image, monkeypatch):
    taken = tmp_path / "a_disk001.tif"
    real_write = tifffile.imwrite

    def another_writer_first(path, *args, **kwargs):
        if not taken.exists():
            taken.write_bytes(b"another writer's crop")
        real_write(path, *args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", another_writer_first)
    written = write_crop_set(crop_disks(image, [INSIDE], source="a.tif"), tmp_path, stem="a")
    assert written == [tmp_path / "a_disk002.tif"]
    assert [row["file"] for row in read_csv(tmp_path / CSV_NAME)] == ["a_disk002.tif"]
    assert taken.read_bytes() == b"another writer's crop"


def test_the_same_crops_are_not_added_twice(tmp_path, image, caplog):
    crops = crop_disks(image, [INSIDE, (0, 0, 10, 12)], source="field.tif")
    write_crop_set(crops, tmp_path, stem="field")
    assert write_crop_set(crops, tmp_path, stem="field") == []  # the same image cropped again
    pasted = crop_disks(image, [(5, 5, 15, 15), (5, 5, 15, 15)], source="field.tif")  # one box twice
    assert [p.name for p in write_crop_set(pasted, tmp_path, stem="field")] == ["field_disk003.tif"]
    assert "2 of 2 crops were in" in caplog.text
    moved = crop_disks(image, [(1, 0, 11, 12)], source="field.tif")  # another box
    changed = crop_disks(image + 1, [(0, 0, 10, 12)], source="field.tif")  # the file changed since
    other = crop_disks(image, [(0, 0, 10, 12)], source="other.tif")  # another image
    unnamed = crop_disks(image, [(0, 0, 10, 12)])  # no source to tell it by
    added = write_crop_set([*moved, *changed, *other, *unnamed], tmp_path, stem="field")
    assert [path.name for path in added] == [f"field_disk00{n}.tif" for n in (4, 5, 6, 7)]
    assert len(read_crop_set(tmp_path)) == 7


def test_a_folder_with_a_foreign_csv_is_not_written_to(tmp_path, image):
    (tmp_path / CSV_NAME).write_text("name,value\nx,1\n")
    with pytest.raises(OutputError, match="cannot add crops"):
        write_crop_set(crop_disks(image, [INSIDE]), tmp_path, stem="a")
    assert sorted(p.name for p in tmp_path.iterdir()) == [CSV_NAME]


@pytest.mark.parametrize(("crops", "stem"), [([], "a"), (None, ""), (None, "a/b"), (None, ".hidden")])
def test_nothing_or_a_bad_stem_is_refused(tmp_path, image, crops, stem):
    crops = crop_disks(image, [INSIDE]) if crops is None else crops
    with pytest.raises(InputError):
        write_crop_set(crops, tmp_path / "set", stem=stem)
    assert not (tmp_path / "set").exists()


def test_a_folder_of_plain_crops_is_read_in_name_order(tmp_path):
    tifffile.imwrite(tmp_path / "b.tif", np.full((8, 8), 2, np.uint8))
    tifffile.imwrite(tmp_path / "a.tif", np.full((6, 6), 1, np.uint8))
    (tmp_path / "notes.txt").write_text("not a crop")
    crop_set = read_crop_set(tmp_path)
    assert [row["file"] for row in crop_set.rows] == ["a.tif", "b.tif"]
    assert crop_set.rows[0]["y0"] is None
    assert [int(image[0, 0]) for image in crop_set.images] == [1, 2]
    with pytest.raises(InputError, match="not a crop set"):
        crop_boxes(tmp_path)


def test_reading_a_missing_empty_or_broken_set_says_what_is_wrong(tmp_path, image):
    with pytest.raises(InputError, match="does not exist"):
        read_crop_set(tmp_path / "nowhere")
    with pytest.raises(InputError, match="holds no crops"):
        read_crop_set(tmp_path)
    write_crop_set(crop_disks(image, [INSIDE]), tmp_path, stem="a")
    (tmp_path / "a_disk001.tif").unlink()
    with pytest.raises(InputError, match=r"a_disk001\.tif listed in .* is missing"):
        read_crop_set(tmp_path)
    (tmp_path / CSV_NAME).write_text(",".join(COLUMNS) + "\na.tif,,one,0,1,1,,,\n")
    with pytest.raises(InputError, match="not a number"):
        read_crop_set(tmp_path)


def test_paired_crops_are_cut_aligned_from_both_images(image):
    hr = image[:, :120]
    lr = hr.reshape(25, 4, 30, 4).mean(axis=(1, 3)).astype(hr.dtype)
    (crop,) = crop_pairs(hr, lr, [INSIDE, AT_BORDER], source="field_hr.tif")
    y0, x0, y1, x1 = crop.box
    assert all(v % PAIR_SCALE == 0 for v in crop.box)
    assert (y0, x0) <= disk_box(INSIDE, hr.shape)[:2]
    assert (y1, x1) >= disk_box(INSIDE, hr.shape)[2:]
    np.testing.assert_array_equal(crop.image, hr[y0:y1, x0:x1])
    np.testing.assert_array_equal(crop.lr_image, lr[y0 // 4 : y1 // 4, x0 // 4 : x1 // 4])
    with pytest.raises(InputError, match="not a registered pair"):
        crop_pairs(hr[:-1], lr, [INSIDE])


def test_a_paired_crop_set_is_written_and_read_back_and_not_mixed_with_crops_alone(image, tmp_path):
    hr = image[:, :120]
    lr = hr[::4, ::4].copy()
    crops = crop_pairs(hr, lr, [INSIDE, Disk(60.0, 30.0, 8.0)], source="field_hr.tif")
    written = write_crop_set(crops, tmp_path / "paired", stem="field")
    assert [p.name for p in written] == ["field_disk001.tif", "field_disk002.tif"]
    header = (tmp_path / "paired" / CSV_NAME).read_text().splitlines()[0]
    assert header.split(",") == [*COLUMNS, "lr_file"]
    read = read_crop_set(tmp_path / "paired")
    assert read.paired
    assert [row["lr_file"] for row in read.rows] == ["field_disk001_lr.tif", "field_disk002_lr.tif"]
    for crop, lr_crop in zip(crops, read.lr_images, strict=True):
        np.testing.assert_array_equal(lr_crop, crop.lr_image)
    with pytest.raises(OutputError, match="cannot add crops alone to a paired crop set"):
        write_crop_set(crop_disks(hr, [INSIDE], source="other.tif"), tmp_path / "paired", stem="other")
    write_crop_set(crop_disks(hr, [INSIDE]), tmp_path / "alone", stem="field")
    assert not read_crop_set(tmp_path / "alone").paired
    with pytest.raises(OutputError, match="cannot add paired crops to a crop set without LR crops"):
        write_crop_set(crops, tmp_path / "alone", stem="field")


def test_a_paired_set_whose_lr_crop_does_not_fit_its_crop_is_refused(image, tmp_path):
    hr = image[:, :120]
    crops = crop_pairs(hr, hr[::4, ::4].copy(), [INSIDE], source="field_hr.tif")
    write_crop_set(crops, tmp_path, stem="field")
    tifffile.imwrite(tmp_path / "field_disk001_lr.tif", crops[0].lr_image[:-1])
    with pytest.raises(InputError, match=r"is not 1/4 of crop field_disk001\.tif"):
        read_crop_set(tmp_path)
