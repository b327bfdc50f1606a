"""``microdisk-sr evaluate`` in-process: outputs, printed table, and clear errors for bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_microdisk_sr.cli import main
from napari_microdisk_sr.core import models
from napari_microdisk_sr.core.comparison_table import COLUMNS
from napari_microdisk_sr.core.io import read_csv, write_tiff
from napari_microdisk_sr.core.sample import make_scene


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two HR/LR scene pairs as TIFFs and a tiny x4 model file."""
    folder = tmp_path_factory.mktemp("evaluate")
    paths = {}
    for seed in (1, 2):
        scene = make_scene(seed=seed, size=(16, 16))
        paths[f"hr{seed}"] = write_tiff(folder / f"field{seed}_hr.tif", scene.hr)
        paths[f"lr{seed}"] = write_tiff(folder / f"field{seed}_lr.tif", scene.lr)
    spec = models.ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 4})
    torch.manual_seed(0)
    (folder / "run").mkdir()
    paths["model"] = models.save_model(spec.build(), spec, folder / "run" / "model.pth")
    return {key: str(path) for key, path in paths.items()}


def test_evaluate_writes_csv_json_and_error_maps_and_prints_the_table(files, tmp_path, capsys):
    out = tmp_path / "metrics.csv"
    argv = ["evaluate", files["hr1"], files["hr2"], "--lr", files["lr1"], files["lr2"]]
    argv += ["--methods", f"bicubic,{files['model']}", "--device", "cpu", "--out", str(out)]
    argv += ["--error-maps", str(tmp_path / "maps")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "field1_hr" in printed
    assert "mean" in printed
    rows = read_csv(out)
    assert list(rows[0]) == list(COLUMNS)
    assert [(r["image"], r["method"]) for r in rows] == [
        (image, method)
        for image in ("field1_hr", "field2_hr", "mean")
        for method in ("bicubic", files["model"])
    ]
    payload = json.loads(out.with_suffix(".json").read_text())
    assert payload["degradation"] is None
    assert payload["rows"][0]["psnr"] == pytest.approx(float(rows[0]["psnr"]))
    maps = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert len(maps) == 4
    assert "field1_hr_bicubic_abs_error.tif" in maps
    error = tifffile.imread(tmp_path / "maps" / "field1_hr_bicubic_abs_error.tif")
    assert error.shape == (64, 64)
    assert error.dtype == np.float32
    # Run again: nothing is overwritten, the new table goes to metrics-1.csv / metrics-1.json.
    assert main(argv) == 0
    assert (tmp_path / "metrics-1.csv").exists()
    assert (tmp_path / "metrics-1.json").exists()


def test_evaluate_degrades_hr_images_without_lr_and_writes_beside_them_by_default(files, capsys):
    assert main(["evaluate", files["hr1"], "--degradation", "realistic", "--methods", "bicubic"]) == 0
    out = Path(files["hr1"]).parent / "field1_hr_microdisk_sr" / "metrics.csv"
    assert json.loads(out.with_suffix(".json").read_text())["degradation"] == "realistic"
    assert [row["image"] for row in read_csv(out)] == ["field1_hr"]  # no mean row repeating it
    assert str(out) in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lr", "LR1", "LR2"], "1 HR image(s) but 2 --lr image(s)"),
        (["--methods", "bicubic,no-such-model"], "unknown method 'no-such-model'"),
        (
            ["--methods", ""],
            "--methods '' names no method; give them comma-separated, e.g. --methods bicubic,",
        ),
        (["--methods", " , "], "give them comma-separated, e.g. --methods bicubic,realesrgan-x4plus"),
        (["--methods", "bicubic,missing/model.pth"], "model file missing/model.pth does not exist"),
        (["--lr", "MISSING"], "does not exist"),
        (["--intensity", "bits:12"], "HR image field1_hr: a uint8 image holds at most 8 bits, not 12"),
        (["--intensity", "bits"], "a bit depth goes with intensity mode bits and only with it"),
    ],
)
def test_evaluate_reports_bad_input_clearly(files, tmp_path, capsys, extra, message):
    extra = [{"LR1": files["lr1"], "LR2": files["lr2"]}.get(a, a) for a in extra]
    extra = [str(tmp_path / "nope.tif") if a == "MISSING" else a for a in extra]
    code = main(["evaluate", files["hr1"], *extra, "--out", str(tmp_path / "m.csv")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert not (tmp_path / "m.csv").exists()


def test_evaluate_refuses_an_out_that_is_not_csv(files, tmp_path, capsys):
    assert main(["evaluate", files["hr1"], "--methods", "bicubic", "--out", str(tmp_path / "m.json")]) == 2
    assert ".csv" in capsys.readouterr().err
