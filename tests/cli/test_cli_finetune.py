"""``microdisk-sr finetune`` in-process: a run and its outputs, resuming, Ctrl-C, and clear errors."""

import json
import os
import signal

import pytest
import torch

from napari_microdisk_sr.cli import main
from napari_microdisk_sr.core import models
from napari_microdisk_sr.core.crops import Crop, write_crop_set
from napari_microdisk_sr.core.io import read_csv
from napari_microdisk_sr.core.sample import make_scene
from napari_microdisk_sr.core.train import FineTuneConfig, read_run_config, trainer


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A crop set of six 40 px crops of a synthetic scene and a tiny x4 model file."""
    folder = tmp_path_factory.mktemp("finetune")
    hr = make_scene(seed=3, size=(32, 64)).hr  # 128 x 256
    crops = [Crop(hr[y : y + 40, x : x + 40], (y, x, y + 40, x + 40)) for y in (0, 64) for x in (0, 80, 160)]
    spec = models.ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2})
    torch.manual_seed(0)
    write_crop_set(crops, folder / "crops", stem="scene")
    return {
        "crops": str(folder / "crops"),
        "model": str(models.save_model(spec.build(), spec, folder / "tiny.pth")),
    }


def _argv(files, out, *options):
    tiny = ["--epochs", "2", "--patch", "16", "--pairs-per-epoch", "8", "--batch", "2", "--device", "cpu"]
    return ["finetune", files["crops"], "--out", str(out), "--model", files["model"], *tiny, *options]


def test_finetune_trains_and_says_where_the_model_went(files, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_argv(files, out, "--val-fraction", "0.34", "--layer-lr", "--ema", "--seed", "3")) == 0
    captured = capsys.readouterr()
    assert f"finished: trained 2 epoch(s); model saved to {out / 'model.pth'}" in captured.out
    assert "validation PSNR:" in captured.out
    assert "epoch 2/2: training L1" in captured.err  # one line per epoch above the progress bar
    assert "fine-tune" in captured.err  # the bar
    config = read_run_config(out)
    assert config.layer_lrs == (1e-5, 1e-4, 1e-3)
    assert (config.ema, config.seed, config.val_fraction, config.patch) == (True, 3, 0.34, 16)
    assert config.lr == FineTuneConfig().lr  # not given: the recipe's
    assert [row["epoch"] for row in read_csv(out / "history.csv")] == ["0", "1", "2"]
    info = json.loads((out / "model.json").read_text())["info"]
    assert len(info["provenance"]["crops"]["files"]) == 6
    assert models.load_model(out / "model.pth").spec.arch == "SRVGGNetCompact"


def test_resume_keeps_the_run_settings_and_extends_it(files, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_argv(files, out, "--lr", "0.002")) == 0
    code = main(_argv(files, out))
    assert code == 2
    assert "already holds a fine-tuning run" in capsys.readouterr().err
    argv = ["finetune", files["crops"], "--out", str(out), "--resume", "--epochs", "3"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "resuming at the end of epoch 2" in captured.err
    assert "finished: trained 3 epoch(s)" in captured.out
    assert read_run_config(out).lr == 0.002  # kept from the run
    assert main([*argv, "--lr", "0.001"]) == 2
    assert "lr 0.002 -> 0.001" in capsys.readouterr().err


def test_ctrl_c_stops_cleanly_and_the_run_resumes(files, tmp_path, capsys, monkeypatch):
    out, handler = tmp_path / "run", signal.getsignal(signal.SIGINT)
    real_step = trainer.Trainer.step

    def step_then_interrupt(self, lr, hr, **kwargs):
        loss = real_step(self, lr, hr, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends
        return loss

    monkeypatch.setattr(trainer.Trainer, "step", step_then_interrupt)
    assert main(_argv(files, out)) == 130
    captured = capsys.readouterr()
    assert "stopping after this step and saving" in captured.err
    assert "stopped: stopped on request at epoch 1, step 1" in captured.out
    assert "--resume" in captured.out
    monkeypatch.undo()
    assert main(["finetune", files["crops"], "--out", str(out), "--resume"]) == 0
    assert "finished: trained 2 epoch(s)" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) is handler  # restored


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--batch", "9"],
            "--batch 9 is larger than the 8 pairs of an epoch; lower the batch size or raise "
            "--pairs-per-epoch",
        ),
        (
            ["--patch", "48", "--small-crops", "refuse"],
            "6 of the 6 HR crop(s) smaller than the 48 px patch: "
            "0 (40x40), 1 (40x40), 2 (40x40), 3 (40x40), 4 (40x40) and 1 more; use a smaller patch, "
            "larger crop margins, or --small-crops pad",
        ),
        (["--val-fraction", "0", "--early-stop"], "set --val-fraction > 0 or leave out --early-stop"),
        (["--patch", "18"], "multiple of the scale 4"),
        (["--lr", "0"], "lr must be a positive number"),
        (["--early-stop", "--val-fraction", "0"], "early stopping needs a validation set"),
        (["--freeze-blocks", "9"], "freeze at most 3"),
        (["--resume"], "holds no fine-tuning run"),
        (["--intensity", "bits:12"], "a uint8 image holds at most 8 bits, not 12"),
        (["--intensity", "percentile:5"], "percentile takes two percentiles LOW,HIGH"),
    ],
)
def test_finetune_errors_say_how_to_fix(files, tmp_path, capsys, options, message):
    assert main(_argv(files, tmp_path / "run", *options)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert not (tmp_path / "run").exists()  # a refused run leaves no folder behind


def test_a_resume_removes_what_a_killed_checkpoint_write_left(files, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_argv(files, out, "--epochs", "1")) == 0
    stray = out / ".checkpoint.k1ll3d.tmp.pth"  # the hidden temporary of a write killed with SIGKILL
    stray.write_bytes(b"half a checkpoint")
    foreign = out / ".notes.tmp.pth"
    foreign.write_bytes(b"not ours")
    assert main(_argv(files, out, "--resume")) == 0
    assert not stray.exists()
    assert foreign.exists()


def test_missing_or_empty_crop_folder(files, tmp_path, capsys):
    assert main(["finetune", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")]) == 2
    assert "crop folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["finetune", str(tmp_path / "empty"), "--out", str(tmp_path / "run")]) == 2
    assert "holds no crops" in capsys.readouterr().err


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--early-stop",
        "--layer-lr",
        "--freeze-blocks",
        "--ema",
        "--max-minutes",
        "--resume",
        "--intensity",
    ):
        assert option in text
