import errno
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_microdisk_sr.core import io
from napari_microdisk_sr.core.errors import InputError, OutputError


def test_unique_path_adds_numbered_suffix(tmp_path):
    target = tmp_path / "scene_x4.tif"
    assert io.unique_path(target) == target
    target.write_bytes(b"a")
    assert io.unique_path(target) == tmp_path / "scene_x4-1.tif"
    (tmp_path / "scene_x4-1.tif").write_bytes(b"b")
    assert io.unique_path(target) == tmp_path / "scene_x4-2.tif"


def test_atomic_write_never_overwrites_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "out.json"
    io.write_json(target, {"a": 1})
    with pytest.raises(OutputError, match="not overwritten"):
        io.write_json(target, {"a": 2})
    assert target.read_text().strip().startswith("{")

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        io.atomic_write(tmp_path / "other.bin", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_name_taken_while_writing_is_skipped_and_the_work_kept(tmp_path):
    target = tmp_path / "img_x4.tif"

    def another_process_takes_the_name(tmp: Path) -> None:
        target.write_bytes(b"theirs")
        tmp.write_bytes(b"ours")

    written = io.atomic_write(target, another_process_takes_the_name, names=io.numbered_paths(target))
    assert written == tmp_path / "img_x4-1.tif"
    assert (target.read_bytes(), written.read_bytes()) == (b"theirs", b"ours")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img_x4-1.tif", "img_x4.tif"]  # no temporary
    with pytest.raises(OutputError, match=r"img_x4\.tif exists and is not overwritten"):
        io.atomic_write(target, another_process_takes_the_name)  # one name only: refused, not replaced
    assert target.read_bytes() == b"theirs"


def test_processes_writing_one_name_at_once_each_keep_their_file(tmp_path, run_at_once):
    """Four processes write slowly to one name at the same moment: every file is kept, each under its own
    name, and each process learns the name it got."""
    target = tmp_path / "table.csv"
    body = (
        "path = io.atomic_write(sys.argv[3], lambda tmp: (time.sleep(0.3), tmp.write_text(sys.argv[4])), "
        "names=io.numbered_paths(sys.argv[3]))\nprint(path)"
    )
    runs = run_at_once(
        "from napari_microdisk_sr.core import io", body, [[target, f"from {i}"] for i in range(4)]
    )
    assert [run.returncode for run in runs] == [0] * 4, [run.stderr for run in runs]
    names = sorted(["table.csv", "table-1.csv", "table-2.csv", "table-3.csv"])
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    got = {Path(run.stdout.strip()).read_text() for run in runs}
    assert got == {f"from {i}" for i in range(4)}


def test_without_hard_links_a_name_is_claimed_by_creating_it_exclusively(tmp_path, monkeypatch):
    def no_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(io.os, "link", no_links)
    target = tmp_path / "out.bin"
    first = io.write_bytes(target, b"one", names=io.numbered_paths(target))
    second = io.write_bytes(target, b"two", names=io.numbered_paths(target))
    assert (first, second) == (target, tmp_path / "out-1.bin")
    assert (first.read_bytes(), second.read_bytes()) == (b"one", b"two")
    assert stat.S_IMODE(second.stat().st_mode) == stat.S_IMODE(
        io.write_bytes(tmp_path / "x", b"").stat().st_mode
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out-1.bin", "out.bin", "x"]


def test_make_new_dir_claims_a_free_name(tmp_path):
    assert io.make_new_dir(tmp_path / "a" / "run") == tmp_path / "a" / "run"
    assert io.make_new_dir(tmp_path / "a" / "run") == tmp_path / "a" / "run-1"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["run", "run-1"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot create folder"):
        io.make_new_dir(tmp_path / "file" / "run")


def test_atomic_write_overwrite_replaces_owned_files(tmp_path):
    target = tmp_path / "checkpoint.bin"
    io.write_bytes(target, b"one")
    io.write_bytes(target, b"two", overwrite=True)
    assert target.read_bytes() == b"two"


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077, 0o277])
def test_written_files_get_the_mode_of_the_umask_like_any_new_file(tmp_path, umask):
    previous = os.umask(umask)
    try:
        written = io.write_bytes(tmp_path / "result.tif", b"x")
        with open(tmp_path / "plain.tif", "wb"):
            pass
    finally:
        os.umask(previous)
    assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE((tmp_path / "plain.tif").stat().st_mode)


def test_ensure_writable_dir_creates_and_refuses(tmp_path):
    folder = io.ensure_writable_dir(tmp_path / "a" / "b")
    assert folder.is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not writable"):
        io.ensure_writable_dir(blocker / "sub")


def test_refuse_input_as_output(tmp_path):
    source = tmp_path / "in.tif"
    source.write_bytes(b"x")
    with pytest.raises(OutputError, match="input file itself"):
        io.refuse_input_as_output(tmp_path / "." / "in.tif", [source])
    io.refuse_input_as_output(tmp_path / "other.tif", [source])


def test_output_dir_for_is_a_sibling_folder(tmp_path):
    assert io.output_dir_for(tmp_path / "field_01.tif") == tmp_path / "field_01_microdisk_sr"


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((20, 30), np.uint8), ((20, 30, 3), np.uint16), ((20, 30, 4), np.uint8), ((2, 8, 9), np.float32)],
)
def test_tiff_round_trip_keeps_data_and_pixel_size(tmp_path, shape, dtype):
    rng = np.random.default_rng(0)
    data = (rng.random(shape) * 200).astype(dtype)
    path = io.write_tiff(tmp_path / "a.tif", data, pixel_size=io.PixelSize(0.65, 0.65, "um"))
    back = io.read_image(path)
    np.testing.assert_array_equal(back.data, data)
    assert back.pixel_size is not None
    assert back.pixel_size.x == pytest.approx(0.65, rel=1e-6)
    assert back.pixel_size.unit == "um"
    assert back.pixel_size.scaled(1 / 4).y == pytest.approx(0.1625, rel=1e-6)


@pytest.mark.parametrize(
    ("shape", "dtype", "axes"),
    [
        ((2, 2, 16, 16), np.uint16, "TZYX"),
        ((3, 16, 16), np.float32, "ZYX"),
        ((2, 16, 16, 3), np.uint8, "ZYXS"),
        ((2, 2, 16, 16), np.int32, None),  # ImageJ holds no int32: tifffile's shape record instead
        ((2, 16, 16, 3), np.uint16, None),
        ((2, 2, 16, 16), np.float64, None),
    ],
)
def test_stacks_reopen_with_their_shape_pixel_size_and_description(tmp_path, shape, dtype, axes):
    data = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    path = io.write_tiff(
        tmp_path / "a.tif", data, pixel_size=io.PixelSize(0.25, 0.5, "um"), description={"model": "tiny"}
    )
    back = io.read_image(path)
    np.testing.assert_array_equal(back.data, data)
    assert back.pixel_size == io.PixelSize(0.25, 0.5, "um")
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].shape == shape
        assert tif.pages.first.tags["ResolutionUnit"].value == 3  # pixels per centimetre, as for planes
        if axes is None:
            assert json.loads(tif.pages.first.description) == {"model": "tiny"}
        else:  # an ImageJ hyperstack: Fiji opens it with its axes, the description in its Info
            assert tif.series[0].axes == axes
            assert json.loads(tif.imagej_metadata["Info"]) == {"model": "tiny"}


def test_a_single_channel_axis_is_read_as_a_gray_image(tmp_path):
    data = np.arange(48, dtype=np.uint8).reshape(6, 8, 1)
    path = tmp_path / "one_channel.tif"
    tifffile.imwrite(path, data)  # read back by tifffile as (6, 8, 1)
    np.testing.assert_array_equal(io.read_image(path).data, data[..., 0])


@pytest.mark.parametrize(
    ("size", "unit", "per_cm", "back"),
    [
        (0.1625, "um", 1e4 / 0.1625, (0.1625, "um")),
        (0.1625, "µm", 1e4 / 0.1625, (0.1625, "um")),
        (65.0, "nm", 1e7 / 65, (0.065, "um")),
        (0.002, "mm", 1 / 0.0002, (2.0, "um")),
    ],
)
def test_pixel_sizes_are_written_in_the_tiff_standard_unit(tmp_path, size, unit, per_cm, back):
    path = io.write_tiff(
        tmp_path / "a.tif", np.zeros((4, 4), np.uint8), pixel_size=io.PixelSize(size, size, unit)
    )
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages.first.tags
        assert tags["ResolutionUnit"].value == 3  # CENTIMETER: ImageJ/Fiji read it (not tifffile's 5 = um)
        num, den = tags["XResolution"].value
        assert num / den == pytest.approx(per_cm, rel=1e-6)
    assert io.read_image(path).pixel_size == io.PixelSize(back[0], back[0], back[1])


def test_tifffile_micrometre_files_are_still_read(tmp_path):
    path = tmp_path / "old.tif"
    tifffile.imwrite(path, np.zeros((4, 4), np.uint8), resolution=(2.0, 2.0), resolutionunit=5)
    assert io.read_image(path).pixel_size == io.PixelSize(0.5, 0.5, "um")


def test_tiff_without_resolution_has_no_pixel_size(tmp_path):
    path = io.write_tiff(tmp_path / "a.tif", np.zeros((4, 4), np.uint8))
    assert io.read_image(path).pixel_size is None


def test_read_image_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        io.read_image(tmp_path / "missing.tif")
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00garbage")
    with pytest.raises(InputError, match="cannot read image"):
        io.read_image(broken)
    with pytest.raises(InputError, match="is a folder, not an image file"):
        io.read_image(tmp_path)
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    with pytest.raises(InputError, match=r"cannot read image .*notes\.png") as error:
        io.read_image(text)
    assert "\n" not in str(error.value)


def test_csv_round_trip(tmp_path):
    rows = [{"image": "a", "psnr": 30.5}, {"image": "mean", "psnr": 1 / 3}]
    path = io.write_csv(tmp_path / "m.csv", rows)
    back = io.read_csv(path)
    assert back == [{"image": "a", "psnr": "30.5"}, {"image": "mean", "psnr": repr(1 / 3)}]
    assert float(back[1]["psnr"]) == 1 / 3  # full precision, not rounded
