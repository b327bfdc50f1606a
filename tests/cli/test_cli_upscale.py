"""``microdisk-sr upscale`` in-process: outputs and their names, and bad input refused before any work."""

import json
import shutil
import signal
import subprocess
import sys
import time

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch

from napari_microdisk_sr.cli import main
from napari_microdisk_sr.cli import upscale as upscale_cli
from napari_microdisk_sr.core import models, ome_zarr, unfinished
from napari_microdisk_sr.core.infer import upscale_array
from napari_microdisk_sr.core.io import PixelSize, read_image, write_tiff
from napari_microdisk_sr.core.lazy import open_lazy, read_store_provenance


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny random SRVGGNetCompact x4 saved like a fine-tuned model."""
    spec = models.ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 4})
    torch.manual_seed(0)
    return str(models.save_model(spec.build(), spec, tmp_path_factory.mktemp("model") / "tiny.pth"))


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if any upscaling starts."""

    def refuse(*args, **kwargs):
        raise AssertionError("upscaling started although the input should have been refused")

    monkeypatch.setattr(upscale_cli.infer, "upscale", refuse)


def cli(*argv, model=None):
    extra = [] if model is None else ["--model", model]
    return main(["upscale", *map(str, argv), *extra, "--device", "cpu"])


def files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def gray(shape=(12, 10), dtype=np.uint16, seed=0):
    return np.random.default_rng(seed).integers(0, 4000, shape).astype(dtype)


def write_ome_zarr(path, image):
    import zarr
    from ome_zarr.writer import write_image

    write_image(image, zarr.open_group(str(path), mode="w"), axes="yx", scale_factors=[])
    return path


def assert_refused(capsys, code, *fragments):
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in err[0]


# --- outputs --------------------------------------------------------------------------------------------


def test_output_beside_the_input_is_the_core_result_with_the_pixel_size_scaled(model_file, tmp_path, capsys):
    image = gray()
    src = write_tiff(tmp_path / "field.tif", image, pixel_size=PixelSize(0.5, 0.4, "um"))
    assert cli(src, model=model_file) == 0
    out = tmp_path / "field_microdisk_sr" / "field_x4.tif"
    assert str(out) in capsys.readouterr().out
    result = read_image(out)
    expected = upscale_array(image, models.load_model(model_file), device="cpu")
    assert expected.shape == (48, 40)
    assert expected.dtype == np.uint16
    np.testing.assert_array_equal(result.data, expected)
    assert result.pixel_size == PixelSize(0.125, 0.1, "um")
    with tifffile.TiffFile(out) as tif:
        provenance = json.loads(tif.pages.first.description)
    assert provenance["model"] == "tiny"
    assert provenance["tile_pad"] == 4  # the spec's receptive radius
    np.testing.assert_array_equal(read_image(src).data, image)  # the original is untouched


def test_the_intensity_is_used_and_recorded_and_a_dark_range_hinted_at(model_file, tmp_path, caplog):
    image = gray((16, 16))
    image[0, 0] = 4095
    src = write_tiff(tmp_path / "field.tif", image)
    model = models.load_model(model_file)
    for option, folder in (
        ([], "auto"),
        (["--intensity", "bits:12"], "bits"),
        (["--intensity", "range"], "range"),
    ):
        caplog.clear()
        assert cli(src, *option, "--out", tmp_path / folder, model=model_file) == 0
        out = read_image(tmp_path / folder / "field_x4.tif")
        expected = upscale_array(image, model, device="cpu", intensity=option[1] if option else None)
        np.testing.assert_array_equal(out.data, expected)
        with tifffile.TiffFile(tmp_path / folder / "field_x4.tif") as tif:
            assert json.loads(tif.pages.first.description)["intensity"] == (option[1] if option else "auto")
        hinted = "if it holds 12-bit data, use intensity bits:12 (or percentile)" in caplog.text
        assert hinted == (folder == "range")  # shown on stderr by the CLI's logging
    assert read_image(tmp_path / "bits" / "field_x4.tif").data.max() <= 4095

    rgba = np.dstack([image, image, image, np.full_like(image, 65535)])  # alpha keeps its own range
    assert cli(write_tiff(tmp_path / "rgba.tif", rgba), "--intensity", "bits:12", model=model_file) == 0


def test_each_input_of_a_batch_is_mapped_by_itself_so_exposures_keep_their_ratio(model_file, tmp_path):
    """A field at 1x and 2x exposure in one run: the second output is twice the first, and the first is
    the same as when it is upscaled alone (no image's result depends on the others in the batch)."""
    once = gray((24, 20)) // 20 + 100  # dim 16-bit data: 100 to 299
    (tmp_path / "plate").mkdir()
    write_tiff(tmp_path / "plate" / "a.tif", once)
    write_tiff(tmp_path / "plate" / "b.tif", once * 2)
    assert cli(tmp_path / "plate", "--out", tmp_path / "both", model=model_file) == 0
    assert cli(tmp_path / "plate" / "a.tif", "--out", tmp_path / "alone", model=model_file) == 0
    a, b = (read_image(tmp_path / "both" / f"{name}_x4.tif").data for name in ("a", "b"))
    np.testing.assert_array_equal(a, read_image(tmp_path / "alone" / "a_x4.tif").data)
    assert b.mean() / a.mean() == pytest.approx(2.0, rel=0.01)
    assert np.abs(b.astype(int) - 2 * a.astype(int)).max() <= 2  # rounding, twice


def test_provenance_names_the_input_by_its_absolute_path(model_file, tmp_path, monkeypatch):
    write_tiff(tmp_path / "field.tif", gray())
    monkeypatch.chdir(tmp_path)
    assert main(["upscale", "field.tif", "--model", model_file, "--device", "cpu"]) == 0
    with tifffile.TiffFile(tmp_path / "field_microdisk_sr" / "field_x4.tif") as tif:
        assert json.loads(tif.pages.first.description)["input_path"] == str(tmp_path / "field.tif")


def test_existing_outputs_get_numbered_never_overwritten(model_file, tmp_path):
    src = write_tiff(tmp_path / "a.tif", gray())
    out_dir = tmp_path / "results"
    for _ in range(3):
        assert cli(src, "--out", out_dir, "--redo", model=model_file) == 0
    assert files_under(out_dir) == ["a_x4-1.tif", "a_x4-2.tif", "a_x4.tif"]


def test_processes_writing_into_one_folder_at_once_each_keep_their_result(model_file, tmp_path, run_at_once):
    """Four ``upscale`` processes started together, each upscaling one input into one folder five times in a
    row: twenty results under twenty names, every process told the name its result got."""
    src = write_tiff(tmp_path / "img.tif", gray((96, 96)))
    out_dir = tmp_path / "results"
    argv = ["upscale", src, "--out", out_dir, "--model", model_file, "--device", "cpu", "--redo"]
    body = "sys.exit(max(main(sys.argv[3:]) for _ in range(5)))"
    runs = run_at_once("from napari_microdisk_sr.cli import main", body, [argv] * 4)
    assert [run.returncode for run in runs] == [0] * 4, [run.stderr for run in runs]
    names = ["img_x4.tif", *(f"img_x4-{n}.tif" for n in range(1, 20))]
    assert files_under(out_dir) == sorted(names)  # no temporary file left either
    reported = [
        line.split(" -> ")[1].split(" (")[0] for run in runs for line in run.stdout.splitlines()[1::2]
    ]
    assert sorted(reported) == sorted(str(out_dir / name) for name in names)  # each its own name
    expected = upscale_array(gray((96, 96)), models.load_model(model_file), device="cpu")
    for name in names:
        np.testing.assert_array_equal(read_image(out_dir / name).data, expected)


def test_a_4d_stack_is_written_with_its_axes_and_reopens_as_it_went_in(model_file, tmp_path, capsys):
    stack = gray((2, 2, 16, 16))
    src = write_tiff(tmp_path / "tz.tif", stack, pixel_size=PixelSize(0.5, 0.5, "um"))
    assert read_image(src).data.shape == (2, 2, 16, 16)
    assert cli(src, "--out", tmp_path / "out", model=model_file) == 0
    assert "(2x2x16x16) -> " in capsys.readouterr().out
    back = read_image(tmp_path / "out" / "tz_x4.tif")
    np.testing.assert_array_equal(
        back.data, upscale_array(stack, models.load_model(model_file), device="cpu")
    )
    assert back.data.shape == (2, 2, 64, 64)
    assert back.pixel_size == PixelSize(0.125, 0.125, "um")


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_wide_signed_integers_come_back_within_their_values(model_file, tmp_path, dtype):
    image = gray((16, 16), dtype) % 100  # values 0..99: once written back as millions
    src = write_tiff(tmp_path / "deep.tif", image)
    assert cli(src, "--out", tmp_path / "out", "--intensity", "range", model=model_file) == 0
    out = read_image(tmp_path / "out" / "deep_x4.tif").data
    assert out.dtype == dtype
    assert image.min() <= out.min() <= out.max() <= image.max()  # range mode clips to them
    model = models.load_model(model_file)
    as_float = upscale_array(image.astype(np.float32), model, device="cpu", intensity="range")
    np.testing.assert_allclose(out, np.rint(as_float), rtol=0, atol=1)


def test_several_inputs_rgb_png_rgba_and_a_stack(model_file, tmp_path, capsys):
    rng = np.random.default_rng(1)
    png = tmp_path / "rgb.png"
    iio.imwrite(png, rng.integers(0, 256, (9, 7, 3), dtype=np.uint8))
    rgba = write_tiff(tmp_path / "rgba.tif", rng.integers(0, 256, (8, 8, 4), dtype=np.uint8))
    stack = write_tiff(tmp_path / "stack.tif", rng.random((3, 6, 5)).astype(np.float32))
    assert cli(png, rgba, stack, "--out", tmp_path / "out", "--tile", "4", model=model_file) == 0
    shapes = {p: read_image(tmp_path / "out" / p).data for p in files_under(tmp_path / "out")}
    assert {p: (a.shape, a.dtype) for p, a in shapes.items()} == {
        "rgb_x4.tif": ((36, 28, 3), np.uint8),
        "rgba_x4.tif": ((32, 32, 4), np.uint8),
        "stack_x4.tif": ((3, 24, 20), np.float32),
    }
    assert len(capsys.readouterr().out.strip().splitlines()) == 4  # the model line and one line per input


def test_constant_image_is_valid(model_file, tmp_path):
    src = write_tiff(tmp_path / "flat.tif", np.full((8, 8), 0.25, np.float32))
    assert cli(src, "--tile", "0", model=model_file) == 0
    out = read_image(tmp_path / "flat_microdisk_sr" / "flat_x4.tif").data
    np.testing.assert_array_equal(out, np.full((32, 32), 0.25, np.float32))


@pytest.mark.slow
def test_default_model_x4plus_on_a_tiny_image(tmp_path, capsys):
    src = write_tiff(tmp_path / "tiny.tif", gray((16, 16), np.uint8, seed=3))
    assert cli(src) == 0
    assert "realesrgan-x4plus" in capsys.readouterr().out
    result = read_image(tmp_path / "tiny_microdisk_sr" / "tiny_x4.tif").data
    assert result.shape == (64, 64)
    assert result.dtype == np.uint8
    assert result.std() > 0


# --- refused before any work: one-line error, exit 2, nothing written ------------------------------------


def test_nan_pixels_are_counted_and_nothing_is_written(model_file, tmp_path, capsys, no_compute):
    good = write_tiff(tmp_path / "good.tif", gray())
    bad = np.ones((6, 6), np.float32)
    bad[1, 1:4] = np.nan
    bad_path = write_tiff(tmp_path / "bad.tif", bad)
    before = files_under(tmp_path)
    # the error names the file, and the good input is not done either
    assert_refused(capsys, cli(good, bad_path, model=model_file), f"{bad_path}: image has 3 NaN")
    assert files_under(tmp_path) == before


def test_inf_pixels_are_refused(model_file, tmp_path, capsys, no_compute):
    bad = np.ones((6, 6), np.float64)
    bad[0, 0] = np.inf
    src = write_tiff(tmp_path / "inf.tif", bad)
    assert_refused(capsys, cli(src, model=model_file), "1 Inf")
    assert files_under(tmp_path) == ["inf.tif"]


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        (np.zeros((6, 6), np.complex64), "complex"),
        (np.zeros((6, 6), bool), "boolean"),
        (np.zeros((2, 2, 2, 6, 6), np.uint8), "5 dimensions"),
        (np.zeros((32, 32, 5), np.uint16), "ends in an axis of 5, which looks like colour channels"),
        (np.zeros((32, 32, 2), np.uint8), "split the channels"),
    ],
)
def test_unusable_images_are_refused(model_file, tmp_path, capsys, no_compute, image, fragment):
    src = tmp_path / "bad.tif"
    tifffile.imwrite(src, image)
    assert_refused(capsys, cli(src, model=model_file), fragment)
    assert files_under(tmp_path) == ["bad.tif"]


def test_unwritable_output_folder_is_refused_before_compute(model_file, tmp_path, capsys, no_compute):
    src = write_tiff(tmp_path / "a.tif", gray())
    blocker = tmp_path / "not_a_folder"
    blocker.write_text(
        "a regular file where a folder is needed"
    )  # root ignores permissions; this still fails
    assert_refused(capsys, cli(src, "--out", blocker / "out", model=model_file), "not writable")
    assert files_under(tmp_path) == ["a.tif", "not_a_folder"]


def test_output_that_would_be_an_input_is_refused(model_file, tmp_path, capsys, no_compute):
    src = write_tiff(tmp_path / "a.tif", gray())
    (tmp_path / "out").mkdir()
    earlier = write_tiff(tmp_path / "out" / "a_x4.tif", gray((48, 40)))
    code = cli(src, earlier, "--out", tmp_path / "out", model=model_file)
    assert_refused(capsys, code, "is the input file itself")
    assert files_under(tmp_path) == ["a.tif", "out/a_x4.tif"]
    np.testing.assert_array_equal(read_image(earlier).data, gray((48, 40)))


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--tile", "-1"], "tile must be"),
        (["--tile-pad", "-3"], "tile_pad must be"),
        (["--model", "no-such-model"], "unknown model"),
        (["--intensity", "bits:10"], "a.tif: values reach"),  # gray() is 12-bit data
        (["--intensity", "bits:0"], "cannot read intensity 'bits:0' (bit depth must be a whole number"),
        (
            ["--intensity", "gamma"],
            "unknown intensity 'gamma'; give auto, range, bits:N (1 to 64), percentile",
        ),
        (["--intensity", "percentile:99,1"], "percentiles must be two numbers 0 <= low < high <= 100"),
        (["--intensity", "percentile:1"], "percentile takes two percentiles LOW,HIGH"),
    ],
)
def test_bad_options_are_refused(model_file, tmp_path, capsys, no_compute, options, fragment):
    src = write_tiff(tmp_path / "a.tif", gray())
    assert_refused(capsys, main(["upscale", str(src), "--model", model_file, *options]), fragment)
    assert files_under(tmp_path) == ["a.tif"]


def test_missing_input_is_refused(model_file, tmp_path, capsys, no_compute):
    assert_refused(capsys, cli(tmp_path / "nowhere.tif", model=model_file), "does not exist")
    assert files_under(tmp_path) == []


def test_a_region_is_a_preview_of_the_same_window_of_the_whole_result(model_file, tmp_path, capsys):
    image = gray((40, 36))
    src = write_tiff(tmp_path / "field.tif", image, pixel_size=PixelSize(0.5, 0.5, "um"))
    assert cli(src, "--region", "8:20,30:36", model=model_file) == 0
    preview = read_image(tmp_path / "field_microdisk_sr" / "field_x4_8-20_30-36.tif")
    whole = upscale_array(image, models.load_model(model_file), device="cpu")
    np.testing.assert_array_equal(preview.data, whole[32:80, 120:144])
    assert preview.pixel_size == PixelSize(0.125, 0.125, "um")
    capsys.readouterr()
    assert_refused(capsys, cli(src, "--region", "8:20,30:37", model=model_file), "reaches beyond the 40x36")
    assert_refused(capsys, cli(src, "--region", "8-20", model=model_file), "a region is Y0:Y1,X0:X1")


# --- batch runs -----------------------------------------------------------------------------------------


def test_folders_and_patterns_are_expanded_and_a_rerun_skips_what_is_done(model_file, tmp_path, capsys):
    plate = tmp_path / "plate"
    plate.mkdir()
    for name in ("b", "a", "c"):
        write_tiff(plate / f"{name}.tif", gray(seed=ord(name)))
    (plate / "notes.txt").write_text("not an image")
    out_dir = tmp_path / "results"
    assert cli(plate, "--out", out_dir, model=model_file) == 0
    assert files_under(out_dir) == ["a_x4.tif", "b_x4.tif", "c_x4.tif"]
    written = {name: (out_dir / name).stat().st_mtime_ns for name in files_under(out_dir)}
    capsys.readouterr()

    write_tiff(plate / "d.tif", gray(seed=9))  # a new field, and a changed one
    (plate / "b.tif").unlink()
    write_tiff(plate / "b.tif", gray(seed=99))
    assert cli(str(plate / "*.tif"), "--out", out_dir, model=model_file) == 0
    out = capsys.readouterr().out
    assert "skipped 2 of 4 input(s)" in out
    assert files_under(out_dir) == ["a_x4.tif", "b_x4-1.tif", "b_x4.tif", "c_x4.tif", "d_x4.tif"]
    assert all((out_dir / name).stat().st_mtime_ns == t for name, t in written.items())  # untouched
    assert cli(plate, "--out", out_dir, "--tile", "8", model=model_file) == 0  # other settings: all again
    assert "skipped" not in capsys.readouterr().out


def test_shards_split_the_sorted_inputs_between_runs(model_file, tmp_path, capsys):
    plate = tmp_path / "plate"
    plate.mkdir()
    for index in range(5):
        write_tiff(plate / f"f{index}.tif", gray(seed=index))
    out_dir = tmp_path / "results"
    assert cli(plate, "--out", out_dir, "--shard", "2/2", model=model_file) == 0
    assert files_under(out_dir) == ["f1_x4.tif", "f3_x4.tif"]
    assert cli(plate, "--out", out_dir, "--shard", "1/2", model=model_file) == 0
    assert files_under(out_dir) == [f"f{i}_x4.tif" for i in range(5)]
    capsys.readouterr()
    assert_refused(capsys, cli(plate, "--shard", "3/2", model=model_file), "I must be from 1 to N")
    assert_refused(capsys, cli(tmp_path / "nothing*.tif", model=model_file), "no image file matches")


# --- OME-Zarr (images larger than memory) ----------------------------------------------------------------


def test_ome_zarr_output_from_a_tiff_and_from_a_store_equals_the_tiff_output(model_file, tmp_path, capsys):
    image = gray((40, 36))
    src = write_tiff(tmp_path / "field.tif", image, pixel_size=PixelSize(0.5, 0.5, "um"))
    assert cli(src, "--format", "ome-zarr", "--tile", "16", model=model_file) == 0
    store = tmp_path / "field_microdisk_sr" / "field_x4.ome.zarr"
    assert f"-> {store} (160x144, 1 levels)" in capsys.readouterr().out
    expected = upscale_array(image, models.load_model(model_file), device="cpu", tile=16)
    written = open_lazy(store)
    np.testing.assert_array_equal(written.data.compute(), expected)
    assert written.pixel_size == PixelSize(0.125, 0.125, "um")
    assert read_store_provenance(store)["input_sha256"] is not None

    copy = tmp_path / "field.ome.zarr"  # the same pixels as a store: an image, not a folder of images
    write_ome_zarr(copy, image)
    assert cli(copy, "--format", "ome-zarr", "--tile", "16", model=model_file) == 0
    np.testing.assert_array_equal(
        open_lazy(tmp_path / "field_microdisk_sr" / "field_x4-1.ome.zarr").data, expected
    )
    capsys.readouterr()
    assert cli(copy, "--format", "ome-zarr", "--tile", "16", model=model_file) == 0  # done: skipped
    assert "skipped 1 of 1 input(s)" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "field_microdisk_sr").iterdir()) == [
        "field_x4-1.ome.zarr",
        "field_x4.ome.zarr",
    ]


def test_ome_zarr_refuses_what_it_cannot_do(model_file, tmp_path, capsys, no_compute):
    src = write_tiff(tmp_path / "field.tif", gray())
    assert_refused(capsys, cli(src, "--format", "ome-zarr", "--region", "0:4,0:4", model=model_file), "TIFFs")
    store = write_ome_zarr(tmp_path / "field.ome.zarr", gray())
    assert_refused(capsys, cli(store, model=model_file), "add --format ome-zarr")
    bad = np.full((8, 8), np.nan, np.float32)
    nan_store = write_ome_zarr(tmp_path / "nan.ome.zarr", bad)
    assert_refused(capsys, cli(nan_store, "--format", "ome-zarr", model=model_file), "nan.ome.zarr", "NaN")


def test_a_killed_ome_zarr_run_is_resumed_by_the_same_command(model_file, tmp_path, capsys, monkeypatch):
    """The real case: the command is SIGKILLed among its blocks, and run again."""
    zarr = pytest.importorskip("zarr")
    src = tmp_path / "mosaic.tif"
    write_tiff(src, np.random.default_rng(7).integers(0, 255, (512, 768)).astype(np.uint8))
    argv = [
        "upscale",
        str(src),
        "--format",
        "ome-zarr",
        "--tile",
        "64",
        "--model",
        model_file,
        "--device",
        "cpu",
    ]
    out = tmp_path / "run"
    command = [sys.executable, "-m", "napari_microdisk_sr.cli", *argv, "--out", str(out)]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as run:
        marked = set()
        while len(marked) < 3 and run.poll() is None:  # of 6 blocks upscaled, then 2 + 1 averaged
            marked = {name for store in out.glob(".*.tmp") for name in unfinished.done_blocks(store)}
            time.sleep(0.01)
        run.send_signal(signal.SIGKILL)
    assert run.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    (left,) = out.iterdir()
    kept = unfinished.done_blocks(left)
    assert 3 <= len(kept) < 9
    shutil.copytree(left, tmp_path / "left")  # for --redo, below

    computed = []
    upscale_block = ome_zarr.upscale_block

    def counted(*args, **kwargs):
        computed.append(args[3])
        return upscale_block(*args, **kwargs)

    monkeypatch.setattr(ome_zarr, "upscale_block", counted)
    assert main([*argv, "--out", str(out)]) == 0
    assert f"; resumed: {len(kept)} block(s) kept from an interrupted run" in capsys.readouterr().out
    assert len(computed) == 6 - sum(name.startswith("0-") for name in kept)
    assert [path.name for path in out.iterdir()] == [
        "mosaic_x4.ome.zarr"
    ]  # the hidden store was put in place
    assert main([*argv, "--out", str(tmp_path / "clean")]) == 0
    ours, theirs = (
        zarr.open_group(str(folder / "mosaic_x4.ome.zarr"), mode="r") for folder in (out, tmp_path / "clean")
    )
    assert sorted(ours.array_keys()) == ["0", "1", "2"]
    for key in ("0", "1", "2"):
        np.testing.assert_array_equal(ours[key][:], theirs[key][:])
    assert dict(ours.attrs) == dict(theirs.attrs)

    shutil.move(tmp_path / "left", left)  # the interrupted store again: --redo deletes it and starts anew
    computed.clear()
    assert main([*argv, "--out", str(out), "--redo"]) == 0
    assert "resumed" not in capsys.readouterr().out
    assert len(computed) == 6
    assert sorted(path.name for path in out.iterdir()) == ["mosaic_x4-1.ome.zarr", "mosaic_x4.ome.zarr"]
