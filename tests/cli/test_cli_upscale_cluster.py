"""``microdisk-sr upscale --scheduler``: a local cluster writes what one process writes; bad specs refused."""

import numpy as np
import pytest
import torch

from napari_microdisk_sr.cli import main
from napari_microdisk_sr.cli import upscale as upscale_cli
from napari_microdisk_sr.core import models
from napari_microdisk_sr.core.io import read_image, write_tiff

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    spec = models.ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 4})
    torch.manual_seed(1)
    return str(models.save_model(spec.build(), spec, tmp_path_factory.mktemp("model") / "tiny.pth"))


def cli(*argv):
    return main(["upscale", *map(str, argv), "--device", "cpu"])


def test_a_local_cluster_writes_the_outputs_of_one_process_and_a_rerun_skips_them(
    model_file, tmp_path, capsys
):
    plate = tmp_path / "plate"
    plate.mkdir()
    for index in range(4):
        image = np.random.default_rng(index).integers(0, 4095, (24, 20)).astype(np.uint16)
        write_tiff(plate / f"f{index}.tif", image)
    assert cli(plate, "--out", tmp_path / "one", "--model", model_file) == 0
    capsys.readouterr()
    argv = [
        plate,
        "--out",
        tmp_path / "two",
        "--model",
        model_file,
        "--scheduler",
        "local:2",
    ]
    assert cli(*argv) == 0
    out = capsys.readouterr().out
    assert "on 2 dask worker(s)" in out
    for index in range(4):
        assert f"f{index}.tif (24x20) -> {tmp_path / 'two' / f'f{index}_x4.tif'} (96x80)" in out
        ours, theirs = (read_image(tmp_path / name / f"f{index}_x4.tif").data for name in ("two", "one"))
        np.testing.assert_array_equal(ours, theirs)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [f"f{i}_x4.tif" for i in range(4)]

    assert cli(*argv) == 0  # everything is done: no cluster is started
    out = capsys.readouterr().out
    assert "skipped 4 of 4 input(s)" in out
    assert "dask" not in out


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [("local:0", "local:N with N worker processes"), ("nowhere.json", "an existing scheduler file")],
)
def test_a_bad_scheduler_is_refused_before_any_work(
    model_file, tmp_path, capsys, monkeypatch, spec, fragment
):
    def refuse(*args, **kwargs):
        raise AssertionError("work started although the scheduler should have been refused")

    monkeypatch.setattr(upscale_cli, "load_model", refuse)
    write_tiff(tmp_path / "field.tif", np.zeros((8, 8), np.uint8))
    assert cli(tmp_path / "field.tif", "--model", model_file, "--scheduler", spec) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    assert fragment in err[0]
    assert not (tmp_path / "field_microdisk_sr").exists()


def test_ome_zarr_blocks_on_a_local_cluster_make_the_store_of_one_process(model_file, tmp_path, capsys):
    zarr = pytest.importorskip("zarr")
    write_tiff(
        tmp_path / "mosaic.tif", np.random.default_rng(3).integers(0, 255, (260, 100)).astype(np.uint8)
    )
    argv = [tmp_path / "mosaic.tif", "--model", model_file, "--format", "ome-zarr"]
    assert cli(*argv, "--out", tmp_path / "one") == 0
    capsys.readouterr()
    assert cli(*argv, "--out", tmp_path / "two", "--scheduler", "local:1") == 0
    out = capsys.readouterr().out
    assert "a task per block" in out
    assert f"-> {tmp_path / 'two' / 'mosaic_x4.ome.zarr'} (1040x400, 2 levels)" in out
    ours, theirs = (
        zarr.open_group(str(tmp_path / name / "mosaic_x4.ome.zarr"), mode="r") for name in ("two", "one")
    )
    for level in ("0", "1"):
        np.testing.assert_array_equal(ours[level][:], theirs[level][:])
    assert cli(*argv, "--out", tmp_path / "two", "--scheduler", "local:1") == 0
    assert "skipped 1 of 1 input(s)" in capsys.readouterr().out
