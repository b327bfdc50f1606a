"""``microdisk-sr detect`` and ``crop`` in-process: tables, CSVs, crop sets, and clear refusals."""

import numpy as np
import pytest
from skimage import data

from napari_microdisk_sr.cli import main
from napari_microdisk_sr.core.crops import CSV_NAME, read_crop_set
from napari_microdisk_sr.core.detect import detect_disks
from napari_microdisk_sr.core.io import read_csv, write_tiff
from napari_microdisk_sr.core.sample import make_scene


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Image files: two fields of microdisks, a bare substrate, and one disk cut by the border."""
    folder = tmp_path_factory.mktemp("images")
    scenes = {
        "gray.tif": make_scene(seed=1),
        "rgb16.tif": make_scene(seed=2, rgb=True, dtype="uint16", size=(128, 128)),
        "bare.tif": make_scene(seed=3, n_disks=0, size=(64, 64)),
        "edge.tif": make_scene(seed=0, n_disks=1, radius=10, size=(40, 40)),
    }
    assert scenes["edge.tif"].disks_lr[0].touches_border
    for name, scene in scenes.items():
        write_tiff(folder / name, scene.lr)
    return folder, {name: scene.lr for name, scene in scenes.items()}


def test_detect_prints_a_table_of_the_disks(images, capsys):
    folder, arrays = images
    assert main(["detect", str(folder / "gray.tif")]) == 0
    lines = capsys.readouterr().out.splitlines()
    disks = detect_disks(arrays["gray.tif"])
    assert lines[0].split() == ["#", "cy", "cx", "r", "score", "border"]
    assert len(lines) == 1 + len(disks)
    first = lines[1].split()
    assert [float(v) for v in first[1:4]] == pytest.approx([disks[0].cy, disks[0].cx, disks[0].r], abs=0.01)
    assert sum(line.endswith("yes") for line in lines) == sum(d.touches_border for d in disks) > 0


def test_detect_writes_a_csv_and_never_overwrites_it(images, tmp_path, capsys):
    folder, arrays = images
    out = tmp_path / "results" / "disks.csv"
    options = ["--min-radius", "5", "--max-radius", "15", "--sensitivity", "0.4"]
    assert main(["detect", str(folder / "rgb16.tif"), "--out", str(out), *options]) == 0
    assert main(["detect", str(folder / "rgb16.tif"), "--out", str(out), *options]) == 0
    assert str(out.with_name("disks-1.csv")) in capsys.readouterr().out
    rows = read_csv(out)
    assert read_csv(out.with_name("disks-1.csv")) == rows
    disks = detect_disks(arrays["rgb16.tif"], radius_range=(5, 15), sensitivity=0.4)
    assert list(rows[0]) == ["cy", "cx", "r", "score", "touches_border"]
    assert [float(row["r"]) for row in rows] == pytest.approx([d.r for d in disks])
    assert [row["touches_border"] == "True" for row in rows] == [d.touches_border for d in disks]


def test_detect_without_disks_says_what_to_try_and_writes_nothing(images, tmp_path, capsys):
    folder, _ = images
    out = tmp_path / "sub" / "disks.csv"
    assert main(["detect", str(folder / "bare.tif"), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "no microdisk found in" in error
    assert "--min-radius" in error
    assert "--max-radius" in error
    assert not out.parent.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.tif"], "does not exist"),
        (
            ["gray.tif", "--min-radius", "9", "--max-radius", "5"],
            "--min-radius 9 is larger than --max-radius 5",
        ),
        (["gray.tif", "--out", "gray.tif"], "input file itself"),
        (["gray.tif", "--min-radius", "200"], "does not fit"),
    ],
)
def test_detect_refuses_bad_input_with_a_message(images, capsys, argv, message):
    folder, _ = images
    argv = [str(folder / a) if a.endswith(".tif") else a for a in argv]
    assert main(["detect", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "option",
    [
        ["--min-radius", "1"],
        ["--max-radius", "x"],
        ["--sensitivity", "2"],
        ["--sensitivity", "nan"],
        ["--polarity", "light"],
    ],
)
def test_detect_refuses_bad_options_as_usage_errors(images, capsys, option):
    folder, _ = images
    with pytest.raises(SystemExit) as exit_info:
        main(["detect", str(folder / "gray.tif"), *option])
    assert exit_info.value.code == 2
    assert option[0] in capsys.readouterr().err


def test_polarity_chooses_dark_bright_or_either_disks(tmp_path, capsys):
    coins = tmp_path / "coins.tif"  # bright coins on a dark ground
    write_tiff(coins, data.coins())
    found = {}
    for polarity in ("either", "bright"):
        assert main(["detect", str(coins), "--polarity", polarity]) == 0
        found[polarity] = capsys.readouterr().out.splitlines()[1:]
    assert found["either"] == found["bright"]
    assert len(found["either"]) >= 20
    assert main(["detect", str(coins), "--polarity", "dark", "--min-radius", "15"]) == 2
    assert "(--polarity dark)" in capsys.readouterr().err
    out = tmp_path / "crops"
    assert main(["crop", str(coins), "--out", str(out), "--polarity", "bright"]) == 0
    assert len(read_crop_set(out).images) >= 15  # coins cut by the border are left out


def test_crop_writes_one_crop_set_for_all_images(images, tmp_path, capsys):
    folder, arrays = images
    out = tmp_path / "crops"
    assert main(["crop", str(folder / "gray.tif"), str(folder / "rgb16.tif"), "--out", str(out)]) == 0
    crop_set = read_crop_set(out)
    whole = {
        name: [d for d in detect_disks(arrays[name]) if not d.touches_border]
        for name in ("gray.tif", "rgb16.tif")
    }
    assert len(crop_set) == len(whole["gray.tif"]) + len(whole["rgb16.tif"])
    assert f"{len(crop_set)} crops of 2 image(s) -> {out}" in capsys.readouterr().out
    assert main(["crop", str(folder / "gray.tif"), "--out", str(out)]) == 0  # the same again: not added
    assert len(read_crop_set(out)) == len(crop_set)
    n_gray = len(whole["gray.tif"])
    assert f"0 crops of 1 image(s) -> {out}; {n_gray} were in the set already" in capsys.readouterr().out
    files = [row["file"] for row in crop_set.rows]
    assert files[0] == "gray_disk001.tif"
    assert files[-1] == f"rgb16_disk{len(whole['rgb16.tif']):03d}.tif"
    last = crop_set.rows[-1]
    assert last["source"] == str(folder / "rgb16.tif")
    y0, x0, y1, x1 = (last[k] for k in ("y0", "x0", "y1", "x1"))
    np.testing.assert_array_equal(crop_set.images[-1], arrays["rgb16.tif"][y0:y1, x0:x1])
    assert crop_set.images[-1].dtype == np.uint16
    assert y1 - y0 == 2 * np.ceil(last["r"] * 1.25) + 1 or y0 == 0 or y1 == 128

    # again, keeping border disks, with a wider margin: appended, numbered on
    argv = ["crop", str(folder / "gray.tif"), "--out", str(out), "--keep-border", "--margin", "0.5"]
    assert main(argv) == 0
    again = read_crop_set(out)
    assert len(again) == len(crop_set) + len(detect_disks(arrays["gray.tif"]))
    assert again.rows[len(crop_set)]["file"] == f"gray_disk{len(whole['gray.tif']) + 1:03d}.tif"


def test_crop_refuses_an_image_without_disks_and_writes_nothing(images, tmp_path, capsys):
    folder, _ = images
    out = tmp_path / "crops"
    assert main(["crop", str(folder / "gray.tif"), str(folder / "bare.tif"), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "bare.tif" in error
    assert "--min-radius" in error
    assert not out.exists()


def test_bad_pixels_and_outputs_are_named(images, tmp_path, capsys):
    folder, arrays = images
    nan = arrays["gray.tif"].astype(np.float32)
    nan[3, 4] = np.nan
    write_tiff(tmp_path / "holes.tif", nan)
    assert (
        main(["crop", str(folder / "gray.tif"), str(tmp_path / "holes.tif"), "--out", str(tmp_path / "c")])
        == 2
    )
    assert f"error: {tmp_path / 'holes.tif'}: " in capsys.readouterr().err
    assert main(["detect", str(folder / "gray.tif"), "--out", str(tmp_path)]) == 2  # a folder, not a CSV
    assert "must be a .csv file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holes.tif"]


def test_crop_of_border_disks_only_suggests_keep_border(images, tmp_path, capsys):
    folder, _ = images
    out = tmp_path / "crops"
    assert main(["crop", str(folder / "edge.tif"), "--out", str(out)]) == 2
    assert "--keep-border" in capsys.readouterr().err
    assert not out.exists()
    assert main(["crop", str(folder / "edge.tif"), "--out", str(out), "--keep-border"]) == 0
    assert len(read_crop_set(out)) == 1
    assert (out / CSV_NAME).is_file()


def test_crop_needs_an_output_folder_and_a_sane_margin(images, capsys):
    folder, _ = images
    for argv in (
        ["crop", str(folder / "gray.tif")],
        ["crop", str(folder / "gray.tif"), "--out", "x", "--margin", "-1"],
    ):
        with pytest.raises(SystemExit):
            main(argv)
    err = capsys.readouterr().err
    assert "--out" in err
    assert "--margin" in err
