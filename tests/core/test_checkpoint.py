"""Checkpoints: one written before the train package resumes to the same weights; the progress state."""

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import torch

from napari_microdisk_sr.core.progress import drive
from napari_microdisk_sr.core.train import FineTuneConfig, Outcome, can_resume, fine_tune, read_run_config
from napari_microdisk_sr.core.train.checkpoint import CHECKPOINT_FILE, Progress

OLD = Path(__file__).parent / "data" / "checkpoint_v1"


def test_a_checkpoint_written_before_the_train_package_resumes_to_the_same_weights(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(OLD / "run", run_dir)
    crops = list(np.load(OLD / "crops.npy"))
    config = dataclasses.replace(read_run_config(run_dir), model=str(OLD / "parent.pth"))
    assert can_resume(run_dir)

    result = drive(fine_tune(crops, config, run_dir, resume=True))

    assert result.outcome is Outcome.FINISHED
    assert result.epochs_done == 3
    saved = torch.load(result.model_path, map_location="cpu", weights_only=True)["params_ema"]
    expected = torch.load(OLD / "expected_weights.pth", map_location="cpu", weights_only=True)
    assert saved.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(saved[key], expected[key], rtol=0.0, atol=1e-6, msg=key)


def test_only_a_folder_with_a_checkpoint_can_resume(tmp_path):
    assert not can_resume(tmp_path)
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"")
    assert can_resume(tmp_path)


def test_progress_state_round_trips_and_names_its_position():
    progress = Progress(epoch=2, step_in_epoch=3, epoch_loss=0.5, history=[{"epoch": 1}])
    restored = Progress()
    restored.load_state_dict(progress.state_dict())
    assert restored == progress
    assert restored.position() == "epoch 3, step 3"
    assert Progress(epoch=2).position() == "the end of epoch 2"
    assert Progress().position() == "the start"


def test_the_old_config_still_reads():
    config = read_run_config(OLD / "run")
    assert isinstance(config, FineTuneConfig)
    assert (config.epochs, config.ema, config.degradation) == (3, True, "realistic")
