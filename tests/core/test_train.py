"""Fine-tuning: configuration, events and outputs, exact resume, stops, early stopping, layer-wise rates,
frozen blocks, EMA, time budget, divergence, checkpoint-write failures and run-folder rules.

Every run uses a tiny network saved as a file (a few thousand parameters), 16 px patches and a handful of
steps, so that each takes a fraction of a second on a CPU.
"""

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_microdisk_sr.core import train
from napari_microdisk_sr.core.archs import RRDBNet, SRVGGNetCompact
from napari_microdisk_sr.core.device import cpu_has_native_bf16
from napari_microdisk_sr.core.errors import InputError, TrainingError
from napari_microdisk_sr.core.intensity import Intensity
from napari_microdisk_sr.core.io import read_csv
from napari_microdisk_sr.core.models import ModelSpec, load_model, save_model
from napari_microdisk_sr.core.progress import StopFlag, drive
from napari_microdisk_sr.core.train import EventKind, FineTuneConfig, Outcome
from napari_microdisk_sr.core.weights import file_sha256

SRVGG_PARAMS = {"num_feat": 8, "num_conv": 2}
RRDB_PARAMS = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_block": 2, "num_grow_ch": 4}


def _save_tiny(path, arch, params, seed=0):
    torch.manual_seed(seed)
    spec = ModelSpec(arch, params)
    return save_model(spec.build(), spec, path)


@pytest.fixture(scope="module")
def srvgg(tmp_path_factory):
    """A tiny SRVGGNetCompact x4 weights file (about 5k parameters)."""
    return _save_tiny(tmp_path_factory.mktemp("models") / "srvgg.pth", "SRVGGNetCompact", SRVGG_PARAMS)


@pytest.fixture(scope="module")
def rrdb(tmp_path_factory):
    """A tiny RRDBNet x4 weights file (two blocks)."""
    return _save_tiny(tmp_path_factory.mktemp("models") / "rrdb.pth", "RRDBNet", RRDB_PARAMS)


def _smooth_crops(n=8, size=40, seed=0):
    """Smooth uint8 RGB crops: a coarse random field upsampled, easy to super-resolve."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((n, 3, size // 8, size // 8), dtype=np.float32))
    fine = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return list((fine.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8))


CROPS = _smooth_crops()


def _config(model, **changes):
    base = {
        "model": str(model),
        "epochs": 2,
        "lr": 1e-3,
        "batch_size": 2,
        "patch": 16,
        "pairs_per_epoch": 8,
        "val_fraction": 0.25,
        "device": "cpu",
    }
    return FineTuneConfig(**(base | changes))


def _run(config, run_dir, **kwargs):
    events = []
    result = drive(train.fine_tune(CROPS, config, run_dir, **kwargs), events.append)
    return result, events


def _saved_weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["params_ema"]


def _checkpoint(run_dir):
    return torch.load(run_dir / train.CHECKPOINT_FILE, map_location="cpu", weights_only=True)


def _assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0.0, atol=atol, msg=key)


# -- configuration ---------------------------------------------------------------------------------------


def test_defaults_are_the_study_recipe():
    config = FineTuneConfig()
    assert config.model == "realesrgan-x4plus"
    assert (config.lr, config.betas, config.lr_step, config.lr_gamma) == (1e-4, (0.9, 0.999), 16, 0.5)
    assert (config.epochs, config.patch, config.pairs_per_epoch, config.batch_size) == (50, 128, 500, None)
    assert config.augment
    assert config.degradation == "realistic"  # not the study's bicubic pairs: see the module notes
    assert config.val_fraction == 0.1
    assert train.STUDY_LAYER_LRS == (1e-5, 1e-4, 1e-3)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": 0.0}, "lr must be a positive"),
        ({"lr": float("nan")}, "lr must be a positive"),
        ({"epochs": 0}, "epochs must be a whole number of at least 1"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 600}, "larger than the 500 pairs"),
        ({"degradation": "gaussian"}, "bicubic, realistic"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
        ({"early_stop": 0}, "patience"),
        ({"early_stop": 3, "val_fraction": 0.0}, "early stopping needs a validation set"),
        ({"layer_lrs": (1e-5, 1e-4)}, "three positive learning rates"),
        ({"freeze_blocks": -1}, "freeze_blocks"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"lr_gamma": 2.0}, "lr_gamma"),
        ({"device": "tpu"}, "unknown device"),
        ({"max_minutes": 0}, "max_minutes"),
        ({"ema": "yes"}, "ema must be True or False"),
        ({"intensity": "bits:65"}, "bit depth must be a whole number from 1 to 64"),
        ({"intensity": "minmax"}, "unknown intensity 'minmax'"),
    ],
)
def test_config_refuses_bad_values(changes, message):
    with pytest.raises(InputError, match=message):
        FineTuneConfig(**changes)


def test_patch_must_be_a_multiple_of_the_scale(srvgg, tmp_path):
    with pytest.raises(InputError, match="multiple of the scale 4"):
        _run(_config(srvgg, patch=18), tmp_path / "run")


def test_config_json_round_trip(tmp_path):
    config = FineTuneConfig(
        layer_lrs=train.STUDY_LAYER_LRS, early_stop=3, max_minutes=1.5, intensity="bits:12"
    )
    assert config.to_json()["intensity"] == "bits:12"
    assert FineTuneConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    assert FineTuneConfig().intensity == Intensity("auto")
    old = config.to_json() | {"bit_depth": None}  # written before the intensity setting: range was used
    del old["intensity"]
    assert FineTuneConfig.from_json(old).intensity == Intensity("range")
    with pytest.raises(InputError, match="unknown fine-tuning setting"):
        FineTuneConfig.from_json({"learning_rate": 1e-4})
    with pytest.raises(InputError, match="holds no fine-tuning run"):
        train.read_run_config(tmp_path)


# -- a whole run -----------------------------------------------------------------------------------------


def test_run_yields_events_and_writes_its_folder(srvgg, tmp_path):
    config = _config(srvgg, epochs=3, intensity="percentile")  # recorded for the model's later use
    run_dir = tmp_path / "run"
    result, events = _run(config, run_dir)

    assert result.outcome is Outcome.FINISHED
    assert result.epochs_done == 3
    kinds = [event.kind for event in events]
    assert kinds[:2] == [EventKind.STARTED, EventKind.BASELINE]
    assert kinds[-1] is EventKind.FINISHED
    assert kinds.count(EventKind.EPOCH) == 3
    assert kinds.count(EventKind.CHECKPOINT) == 3
    assert EventKind.STOPPED not in kinds
    steps = [event for event in events if event.kind is EventKind.STEP]
    assert steps
    assert all(e.loss > 0 and e.lr == 1e-3 and e.steps == 12 for e in steps)
    assert [e.step for e in steps] == sorted(e.step for e in steps)
    assert steps[-1].step == 12
    epochs = [event for event in events if event.kind is EventKind.EPOCH]
    assert [e.epoch for e in epochs] == [1, 2, 3]
    assert all(e.val_l1 > 0 and e.val_psnr > 0 for e in epochs)
    assert str(result.model_path) in events[-1].message

    assert {p.name for p in run_dir.iterdir()} == {
        "config.json",
        "checkpoint.pth",
        "history.csv",
        "model.pth",
        "model.json",
        "weight_change.csv",
    }
    assert train.read_run_config(run_dir) == config

    history = read_csv(run_dir / train.HISTORY_FILE)
    assert [row["epoch"] for row in history] == ["0", "1", "2", "3"]
    assert list(history[0]) == list(train.HISTORY_FIELDS)
    assert history[0]["train_l1"] == ""
    for row, event in zip(history[1:], epochs, strict=True):
        assert float(row["train_l1"]) == event.loss
        assert float(row["val_l1"]) == event.val_l1
    assert [row["epoch"] for row in result.history] == [0, 1, 2, 3]

    # Real-ESRGAN's convention: {"params_ema": state_dict} with basicsr keys, loadable strictly.
    weights = _saved_weights(result.model_path)
    loaded = load_model(result.model_path)
    _assert_same_weights(weights, loaded.module.state_dict())
    assert loaded.name == run_dir.name  # outputs made with it are named after the run, not "model"
    assert set(weights) == set(SRVGGNetCompact(num_feat=8, num_conv=2).state_dict())

    info = json.loads((run_dir / "model.json").read_text())["info"]
    provenance = info["provenance"]
    assert provenance["parent"]["sha256"] == file_sha256(srvgg)
    assert provenance["seed"] == 0
    assert provenance["versions"]["torch"] == torch.__version__
    assert sorted(provenance["crops"]["train"] + provenance["crops"]["validation"]) == list(range(len(CROPS)))
    assert len(provenance["crops"]["validation"]) == 2
    assert info["fine_tuning"]["config"] == config.to_json()
    assert [row["epoch"] for row in info["fine_tuning"]["history"]] == [0, 1, 2, 3]
    assert info["fine_tuning"]["config"]["intensity"] == str(config.intensity)
    assert loaded.intensity == config.intensity  # what upscale uses for this model unless told otherwise

    # weight_change.csv: per layer group, the absolute change from the parent weights.
    parent = load_model(srvgg).module.state_dict()
    groups = train.layer_groups(SRVGGNetCompact(num_feat=8, num_conv=2))
    rows = {row["group"]: row for row in read_csv(run_dir / train.WEIGHT_CHANGE_FILE)}
    assert list(rows) == list(train.LAYER_GROUPS)
    for group, row in rows.items():
        change = torch.cat([(weights[k] - parent[k]).abs().flatten() for k in weights if groups[k] == group])
        assert int(row["parameters"]) == change.numel()
        assert float(row["mean_abs_change"]) == pytest.approx(change.mean().item(), rel=1e-5)
        assert float(row["max_abs_change"]) == pytest.approx(change.max().item(), rel=1e-6)
        assert float(row["min_abs_change"]) == pytest.approx(change.min().item(), abs=1e-12)
        assert float(row["max_abs_change"]) > 0


def test_loss_decreases_on_an_easy_task(srvgg, tmp_path):
    result, _ = _run(_config(srvgg, epochs=6, lr=3e-3, batch_size=4), tmp_path / "run")
    train_l1 = [row["train_l1"] for row in result.history[1:]]
    val_l1 = [row["val_l1"] for row in result.history]
    assert train_l1[-1] < 0.75 * train_l1[0]
    assert val_l1[-1] < 0.75 * val_l1[0]  # against the pretrained baseline (epoch 0)


# -- exact resume ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stateful(srvgg):
    """A configuration where every piece of state matters: a decaying schedule, layer-wise rates, EMA."""
    return _config(srvgg, epochs=4, lr_step=1, lr_gamma=0.7, layer_lrs=(1e-3, 2e-3, 4e-3), ema=True)


@pytest.fixture(scope="module")
def straight(stateful, tmp_path_factory):
    """The reference: four epochs in one go."""
    result, _ = _run(stateful, tmp_path_factory.mktemp("straight") / "run")
    return result


def _assert_same_run(result, reference):
    assert result.outcome is Outcome.FINISHED
    assert result.epochs_done == reference.epochs_done
    for row, ref in zip(result.history, reference.history, strict=True):
        for key in ("train_l1", "val_l1", "val_psnr", "lr"):
            expected = None if ref[key] is None else pytest.approx(ref[key], rel=1e-6, abs=1e-9)
            assert row[key] == expected, (row["epoch"], key)
    _assert_same_weights(_saved_weights(result.model_path), _saved_weights(reference.model_path), atol=1e-6)


def test_resume_after_the_last_epoch_continues_exactly(stateful, straight, tmp_path):
    run_dir = tmp_path / "run"
    first, _ = _run(dataclasses.replace(stateful, epochs=2), run_dir)
    assert first.outcome is Outcome.FINISHED
    assert first.epochs_done == 2
    result, events = _run(stateful, run_dir, resume=True)
    assert "resuming at the end of epoch 2" in events[0].message
    assert EventKind.BASELINE not in [e.kind for e in events]
    _assert_same_run(result, straight)


def test_stop_mid_epoch_saves_a_checkpoint_that_resumes_exactly(stateful, straight, tmp_path):
    run_dir, stop = tmp_path / "run", StopFlag()

    def stop_in_second_epoch(event):
        if event.kind is EventKind.STEP and event.epoch == 2:
            stop.set()

    result = drive(train.fine_tune(CROPS, stateful, run_dir, stop=stop), stop_in_second_epoch)
    assert result.outcome is Outcome.STOPPED
    assert result.epochs_done == 1
    assert "stopped on request at epoch 2, step 1" in result.message
    assert result.model_path.is_file()
    assert result.checkpoint_path == run_dir / train.CHECKPOINT_FILE
    progress = _checkpoint(run_dir)["progress"]
    assert (progress["epoch"], progress["step_in_epoch"]) == (1, 1)

    _assert_same_run(drive(train.fine_tune(CROPS, stateful, run_dir, resume=True)), straight)


def test_an_abandoned_run_keeps_a_checkpoint_that_resumes_exactly(stateful, straight, tmp_path):
    run_dir = tmp_path / "run"
    job = train.fine_tune(CROPS, stateful, run_dir)
    for event in job:
        if event.kind is EventKind.STEP and event.epoch == 2:
            break
    job.close()  # what a consumer that drops the job mid-run does (a GUI worker aborted, a loop broken)
    progress = _checkpoint(run_dir)["progress"]
    assert (progress["epoch"], progress["step_in_epoch"]) == (1, 1)
    assert not (run_dir / train.MODEL_FILE).exists()

    _assert_same_run(drive(train.fine_tune(CROPS, stateful, run_dir, resume=True)), straight)


def test_stop_before_the_first_step_keeps_the_parent(srvgg, tmp_path):
    stop = StopFlag()
    stop.set()
    result, events = _run(_config(srvgg), tmp_path / "run", stop=stop)
    assert result.outcome is Outcome.STOPPED
    assert result.epochs_done == 0
    assert [e.kind for e in events][-3:] == [EventKind.CHECKPOINT, EventKind.STOPPED, EventKind.FINISHED]
    _assert_same_weights(_saved_weights(result.model_path), load_model(srvgg).module.state_dict())


# -- options ---------------------------------------------------------------------------------------------


def test_early_stopping_keeps_the_best_epoch(srvgg, tmp_path):
    # With this learning rate the validation L1 falls for six epochs, then rises.
    easy = {"lr": 1e-2, "batch_size": 4}
    result, events = _run(_config(srvgg, epochs=30, early_stop=2, **easy), tmp_path / "early")
    assert result.outcome is Outcome.EARLY_STOPPED
    val_l1 = [row["val_l1"] for row in result.history]
    assert result.best_epoch == int(np.argmin(val_l1)) > 0
    assert result.epochs_done == result.best_epoch + 2
    assert EventKind.STOPPED in [e.kind for e in events]
    assert f"epoch {result.best_epoch}" in result.message
    # The saved weights are those of the best epoch: a run that ends there saves the same weights.
    shorter, _ = _run(_config(srvgg, epochs=result.best_epoch, **easy), tmp_path / "shorter")
    _assert_same_weights(_saved_weights(result.model_path), _saved_weights(shorter.model_path))


def test_layer_wise_learning_rates(rrdb, tmp_path):
    run_dir = tmp_path / "run"
    result, events = _run(_config(rrdb, epochs=1, layer_lrs=train.STUDY_LAYER_LRS), run_dir)
    assert result.outcome is Outcome.FINISHED
    groups = _checkpoint(run_dir)["trainer"]["optimizer"]["param_groups"]
    assert [(g["name"], g["lr"]) for g in groups] == list(
        zip(train.LAYER_GROUPS, train.STUDY_LAYER_LRS, strict=True)
    )
    by_group = list(train.layer_groups(RRDBNet(**RRDB_PARAMS)).values())
    assert [len(g["params"]) for g in groups] == [by_group.count(name) for name in train.LAYER_GROUPS]
    assert all(e.lr == 1e-4 for e in events if e.kind is EventKind.STEP)  # the body's rate is reported


def test_frozen_blocks_keep_their_weights(rrdb, tmp_path):
    run_dir = tmp_path / "run"
    result, _ = _run(_config(rrdb, freeze_blocks=1), run_dir)
    parent, weights = load_model(rrdb).module.state_dict(), _saved_weights(result.model_path)
    for key in weights:
        same = torch.equal(weights[key], parent[key])
        assert same == key.startswith(("conv_first.", "body.0.")), key
    optimizer = _checkpoint(run_dir)["trainer"]["optimizer"]
    trainable = sum(1 for k in weights if not k.startswith(("conv_first.", "body.0.")))
    assert len(optimizer["state"]) == trainable  # frozen weights are not even in the optimiser
    first = next(r for r in read_csv(run_dir / train.WEIGHT_CHANGE_FILE) if r["group"] == "first")
    assert float(first["max_abs_change"]) == 0.0
    assert json.loads((run_dir / "model.json").read_text())["info"]["fine_tuning"]["frozen_parameters"]


def test_ema_is_what_gets_saved(srvgg, tmp_path):
    # decay 0: the average is the last weights; decay 0.999: it lags far behind them.
    for decay in (0.0, 0.999):
        run_dir = tmp_path / f"ema{decay}"
        result, _ = _run(_config(srvgg, ema=True, ema_decay=decay, lr=3e-3), run_dir)
        raw = _checkpoint(run_dir)["trainer"]["model"]
        saved, parent = _saved_weights(result.model_path), load_model(srvgg).module.state_dict()
        if decay == 0.0:
            _assert_same_weights(saved, raw)
        else:
            lag = sum((saved[k] - parent[k]).abs().sum() for k in saved)
            moved = sum((raw[k] - parent[k]).abs().sum() for k in raw)
            assert lag < 0.5 * moved


def test_time_budget_ends_cleanly(srvgg, tmp_path):
    config = _config(srvgg, epochs=10_000, max_minutes=0.03)
    result, events = _run(config, tmp_path / "run")
    assert result.outcome is Outcome.TIME_BUDGET
    assert result.epochs_done < 10_000
    assert "time budget of 0.03 min spent" in result.message
    assert result.model_path.is_file()
    assert result.checkpoint_path.is_file()
    assert [e.kind for e in events][-2:] == [EventKind.STOPPED, EventKind.FINISHED]


# -- failures --------------------------------------------------------------------------------------------


def test_divergence_fails_cleanly_and_keeps_the_last_good_checkpoint(srvgg, tmp_path):
    # One step per epoch; a learning rate of 1e10 moves every weight by ~1e10 in the first step (Adam's
    # steps are about lr in size), so the second epoch's forward pass overflows.
    run_dir = tmp_path / "run"
    config = _config(srvgg, epochs=3, lr=1e10, pairs_per_epoch=2, val_fraction=0.0)
    events = []
    with pytest.raises(TrainingError) as failed:
        drive(train.fine_tune(CROPS, config, run_dir), events.append)
    message = str(failed.value)
    assert events[-1].kind is not EventKind.FINISHED
    assert "training diverged at epoch 2, step 1" in message
    assert "lower the learning rate" in message
    assert "the end of epoch 1" in message
    assert _checkpoint(run_dir)["progress"]["epoch"] == 1
    assert not (run_dir / train.MODEL_FILE).exists()


def test_a_failed_checkpoint_write_keeps_the_previous_one(srvgg, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    real_save, calls = torch.save, []

    def save_then_fail(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 2:
            real_save(obj, f, *args, **kwargs)  # half a file, then the disk is full
            raise OSError(28, "No space left on device")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(TrainingError) as failed:
        _run(_config(srvgg, epochs=3), run_dir)
    assert "No space left on device" in str(failed.value)
    assert "the end of epoch 1" in str(failed.value)
    assert _checkpoint(run_dir)["progress"]["epoch"] == 1
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint.pth", "config.json", "history.csv"]


def test_run_folder_rules(srvgg, rrdb, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingError, match="nothing to resume"):
        train.fine_tune(CROPS, _config(srvgg), run_dir, resume=True)
    _run(_config(srvgg, epochs=1), run_dir)
    with pytest.raises(TrainingError, match="already holds a fine-tuning run"):
        train.fine_tune(CROPS, _config(srvgg), run_dir)
    with pytest.raises(TrainingError, match=r"SRVGGNetCompact\(.*\) \(x4\) but .*RRDBNet\("):
        _run(_config(rrdb), run_dir, resume=True)
    with pytest.raises(TrainingError, match=r"lr 0.001 -> 0.002; seed 0 -> 1"):
        _run(_config(srvgg, lr=2e-3, seed=1), run_dir, resume=True)
    with pytest.raises(TrainingError, match=r"trained on other crops \(8 crop\(s\), .*these 9"):
        drive(train.fine_tune([*CROPS, CROPS[0]], _config(srvgg, epochs=2), run_dir, resume=True))
    changed = [crop.copy() for crop in CROPS]  # the same number of crops, one pixel changed
    changed[3][0, 0, 0] ^= 1
    with pytest.raises(TrainingError, match="trained on other crops"):
        drive(train.fine_tune(changed, _config(srvgg, epochs=2), run_dir, resume=True))
    with pytest.raises(InputError, match="no crops"):
        train.fine_tune([], _config(srvgg), tmp_path / "other")
    holed = [crop.astype(np.float32) for crop in CROPS]
    holed[5][2, 3, 1] = np.nan
    with pytest.raises(InputError, match="crops 5 has 1 NaN/Inf value"):  # named before the split
        train.fine_tune(holed, _config(srvgg), tmp_path / "other")
    result, _ = _run(_config(srvgg, epochs=1, device="auto"), run_dir, resume=True)  # nothing left to train
    assert result.outcome is Outcome.FINISHED
    assert result.epochs_done == 1


@pytest.mark.parametrize("amp", [None, False, True])
def test_cpu_precision_is_bfloat16_where_the_cpu_computes_it(srvgg, tmp_path, amp):
    result, _ = _run(_config(srvgg, epochs=1, amp=amp), tmp_path / "run")
    info = json.loads((tmp_path / "run" / "model.json").read_text())["info"]
    bf16 = amp or (amp is None and cpu_has_native_bf16())
    assert result.outcome is Outcome.FINISHED
    assert info["provenance"]["precision"] == ("torch.bfloat16" if bf16 else "float32")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp", [False, True])
def test_training_on_cuda(srvgg, tmp_path, amp):
    result, _ = _run(_config(srvgg, device="cuda", epochs=3, lr=3e-3, amp=amp), tmp_path / "run")
    info = json.loads((tmp_path / "run" / "model.json").read_text())["info"]
    mixed = "torch.bfloat16" if torch.cuda.is_bf16_supported() else "torch.float16"
    assert result.outcome is Outcome.FINISHED
    assert info["provenance"]["precision"] == (mixed if amp else "float32")
    assert result.history[-1]["val_l1"] < result.history[0]["val_l1"]


def test_the_verdict_compares_the_saved_weights_with_the_pretrained_model(tmp_path):
    def result(history, saved_epoch):
        rows = tuple({"epoch": e, "val_psnr": p} for e, p in history)
        return train.FineTuneResult(
            Outcome.FINISHED, tmp_path, tmp_path / "m.pth", None, 2, 1, rows, "", saved_epoch
        )

    assert result([(0, 22.8), (1, 23.5), (2, 23.1)], 2).verdict() == (
        "validation PSNR 22.80 -> 23.10 dB (+0.30 dB), pretrained -> fine-tuned (epoch 2)"
    )
    assert result([(0, 22.8), (1, 22.1)], 1).verdict().endswith(": no better than the pretrained model")
    assert result([(0, None), (1, None)], 1).verdict() is None  # no validation set
    assert result([(0, 22.8), (1, 23.5)], None).verdict() is None  # weights of no complete epoch
