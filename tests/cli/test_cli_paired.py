"""Real pairs end to end: ``crop --lr`` makes a paired crop set, ``finetune`` learns from its LR crops."""

import json

import numpy as np
import pytest
import torch

from napari_microdisk_sr.cli import main
from napari_microdisk_sr.core import models
from napari_microdisk_sr.core.crops import read_crop_set
from napari_microdisk_sr.core.io import write_tiff
from napari_microdisk_sr.core.sample import make_scene
from napari_microdisk_sr.core.train.checkpoint import crops_fingerprint


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A registered pair (HR exactly 4x its LR, as ``register`` writes them) and a tiny x4 model."""
    folder = tmp_path_factory.mktemp("paired")
    scene = make_scene(seed=1, size=(56, 56), n_disks=3, radius=7)
    spec = models.ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2})
    torch.manual_seed(0)
    return {
        "hr": str(write_tiff(folder / "field_hr.tif", scene.hr)),
        "lr": str(write_tiff(folder / "field_lr.tif", scene.lr)),
        "model": str(models.save_model(spec.build(), spec, folder / "tiny.pth")),
        "scene": scene,
    }


def test_crop_with_lr_then_finetune_learns_from_the_real_lr(pair, tmp_path, capsys):
    crops_dir = tmp_path / "crops"
    assert main(["crop", pair["hr"], "--lr", pair["lr"], "--out", str(crops_dir), "--keep-border"]) == 0
    assert "paired crops" in capsys.readouterr().out
    crops = read_crop_set(crops_dir)
    assert crops.paired
    assert len(crops) == 3
    lr = pair["scene"].lr
    for row, lr_crop in zip(crops.rows, crops.lr_images, strict=True):
        y0, x0, y1, x1 = (row[c] // 4 for c in ("y0", "x0", "y1", "x1"))
        np.testing.assert_array_equal(lr_crop, lr[y0:y1, x0:x1])
    run = tmp_path / "run"
    tiny = ["--epochs", "1", "--patch", "16", "--pairs-per-epoch", "4", "--batch", "2", "--device", "cpu"]
    assert main(["finetune", str(crops_dir), "--out", str(run), "--model", pair["model"], *tiny]) == 0
    assert "registered LR crops" in capsys.readouterr().out
    record = json.loads((run / "model.json").read_text())["info"]["provenance"]["crops"]
    assert record["lr_files"] == [row["lr_file"] for row in crops.rows]
    # trained on the LR crops: they are part of the crops' fingerprint
    assert record["sha256"] == crops_fingerprint(crops.images, crops.lr_images)
    assert record["sha256"] != crops_fingerprint(crops.images, None)


def test_crop_refuses_lr_images_that_do_not_match_their_hr(pair, tmp_path, capsys):
    argv = ["crop", pair["hr"], "--lr", pair["hr"], "--out", str(tmp_path / "crops"), "--keep-border"]
    assert main(argv) == 2
    assert "not a registered pair" in capsys.readouterr().err
    assert main(["crop", pair["hr"], "--lr", pair["lr"], pair["lr"], "--out", str(tmp_path / "crops")]) == 2
    assert "give one LR per image" in capsys.readouterr().err
    assert not (tmp_path / "crops").exists()
