"""The main job: the headless demo (the study on the sample data) and napari with the four widgets."""

import csv

import numpy as np
import pytest
import tifffile

from napari_microdisk_sr import launch
from napari_microdisk_sr.cli import main
from napari_microdisk_sr.core.infer import upscale_array
from napari_microdisk_sr.core.models import load_model
from napari_microdisk_sr.core.sample import make_scene

TINY = ["--size", "96", "--epochs", "2", "--pairs-per-epoch", "8", "--device", "cpu"]


def test_headless_launch_runs_the_whole_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert launch.main(["--headless", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "--headless was given: running the headless demo" in printed
    for step in ("1. scenes", "2. detected", "3. fine-tuned", "4. held-out scenes upscaled", "5. held-out"):
        assert step in printed
    assert (out / "run" / "model.pth").is_file()
    assert sorted(p.name for p in (out / "superresolved").iterdir()) == [
        "heldout_101_x4.tif",
        "heldout_102_x4.tif",
    ]
    sr = tifffile.imread(out / "superresolved" / "heldout_101_x4.tif")
    assert (sr.shape, sr.dtype) == ((384, 384), np.uint8)  # x4 of the 96 px gray uint8 scene
    tuned = load_model(out / "run" / "model.pth")
    expected = upscale_array(make_scene(seed=101, size=(96, 96)).lr, tuned, device="cpu")
    np.testing.assert_array_equal(sr, expected)  # the fine-tuned model's output, not another method's
    with open(out / "metrics.csv", newline="") as fh:
        means = {row["method"]: float(row["psnr"]) for row in csv.DictReader(fh) if row["image"] == "mean"}
    assert set(means) == {
        "bicubic",
        "realesrgan-x4plus",
        "realesr-animevideov3",
        str(out / "run" / "model.pth"),
    }
    assert all(value > 10 for value in means.values())
    for label in ("bicubic", "pretrained realesrgan-x4plus", "fine-tuned"):
        assert label in printed


def test_demo_never_writes_into_an_existing_folder(tmp_path, capsys):
    taken = tmp_path / "demo"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep")
    assert main(["demo", "--out", str(taken), *TINY]) == 0
    assert sorted(p.name for p in taken.iterdir()) == ["mine.txt"]
    assert (tmp_path / "demo-1" / "metrics.csv").is_file()
    assert f"outputs in {tmp_path / 'demo-1'}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("option", "message"),
    [(["--minutes", "0"], "max_minutes"), (["--size", "8"], "8"), (["--epochs", "0"], "epochs")],
)
def test_bad_demo_settings_are_refused_before_anything_is_written(tmp_path, capsys, option, message):
    assert main(["demo", "--out", str(tmp_path / "demo"), *TINY, *option]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_no_display_means_headless(monkeypatch):
    monkeypatch.setattr(launch.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert launch.why_no_window() == "no display was found"


def test_a_missing_qt_binding_is_named(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("QT_API", "no-such-binding")
    assert launch.why_no_window().startswith("Qt could not open a window (")


@pytest.mark.usefixtures("qapp")
def test_viewer_opens_with_the_sample_scene_and_the_four_widgets(qtbot):
    pytest.importorskip("napari")
    viewer = launch.open_viewer()
    try:
        assert [layer.name for layer in viewer.layers] == ["microdisk scene (LR)", "microdisk scene (HR)"]
        docked = set(viewer.window.dock_widgets)
        for widget in launch.WIDGETS:
            assert any(widget in name for name in docked), (widget, docked)
    finally:
        viewer.close()
