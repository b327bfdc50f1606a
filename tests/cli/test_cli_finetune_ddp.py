"""``torchrun --nproc_per_node 2 -m napari_microdisk_sr.cli finetune`` on the CPU: two processes of batch b
train exactly as one process of batch 2b, rank 0 alone writes, a failing process stops the others, Ctrl-C
stops both after the same step, and a resume needs as many processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import napari_microdisk_sr
from napari_microdisk_sr.cli import main
from napari_microdisk_sr.core import models
from napari_microdisk_sr.core.crops import Crop, write_crop_set
from napari_microdisk_sr.core.io import read_csv
from napari_microdisk_sr.core.sample import make_scene

# 9 pairs in steps of 4: the last step has one pair, and the first process none of it.
_RECIPE = ["--patch", "16", "--pairs-per-epoch", "9", "--device", "cpu", "--no-amp", "--seed", "3"]
_RECIPE += ["--lr", "0.002", "--val-fraction", "0.34", "--ema"]

_DRIVER = """
import atexit, gc, os, sys, tempfile
from pathlib import Path

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from napari_microdisk_sr.cli import main
from napari_microdisk_sr.core.train import trainer

rank = int(os.environ["RANK"])
mode, run_dir, argv = sys.argv[1], Path(sys.argv[2]).resolve(), sys.argv[3:]
real_destroy = dist.destroy_process_group


def destroy(*args, **kwargs):  # a module alive here is freed at exit, where gloo may abort the process
    alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
    if alive:
        raise RuntimeError(f"process {rank} takes its group down under {alive} DistributedDataParallel")
    return real_destroy(*args, **kwargs)


dist.destroy_process_group = destroy
atexit.register(print, "interpreter finalised", file=sys.stderr)  # where gloo's threads may abort it
if mode == "guard" and rank:  # a file made in the run folder by any process but rank 0 fails the run
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == run_dir:
            raise PermissionError(f"process {rank} wrote in the run folder")
        return real_mkstemp(*args, dir=dir, **kwargs)

    tempfile.mkstemp = mkstemp
if mode == "crash" and rank == 1:  # the second step of the second epoch fails in process 1
    real_step, steps = trainer.Trainer.step, []

    def step(self, lq, gt, **kwargs):
        steps.append(1)
        if len(steps) == 5:
            raise RuntimeError("process 1 fails on purpose")
        return real_step(self, lq, gt, **kwargs)

    trainer.Trainer.step = step
sys.exit(main(argv))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Six 40 px crops of a synthetic scene, a tiny x4 model, and the driver of faulty processes."""
    folder = tmp_path_factory.mktemp("finetune-ddp")
    hr = make_scene(seed=3, size=(32, 64)).hr  # 128 x 256
    crops = [Crop(hr[y : y + 40, x : x + 40], (y, x, y + 40, x + 40)) for y in (0, 64) for x in (0, 80, 160)]
    write_crop_set(crops, folder / "crops", stem="scene")
    spec = models.ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2})
    torch.manual_seed(0)
    (folder / "driver.py").write_text(_DRIVER)
    return {
        "crops": str(folder / "crops"),
        "model": str(models.save_model(spec.build(), spec, folder / "tiny.pth")),
        "driver": str(folder / "driver.py"),
    }


def _finetune(files, out, *options):
    return ["finetune", files["crops"], "--out", str(out), "--model", files["model"], *_RECIPE, *options]


def _torchrun(*command, wait=True):
    """``torchrun --standalone --nproc_per_node 2 COMMAND`` (a free port), importing this checkout."""
    source = str(Path(napari_microdisk_sr.__file__).parents[1])
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    process = subprocess.Popen(
        [*launch, *map(str, command)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    if not wait:
        return process
    out, err = process.communicate(timeout=180)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _weights(run):
    """The weights trained (the checkpoint's) and those saved (their moving average)."""
    trained = torch.load(run / "checkpoint.pth", weights_only=True)["trainer"]["model"]
    return trained, torch.load(run / "model.pth", weights_only=True)["params_ema"]


@pytest.fixture(scope="module")
def single(files, tmp_path_factory):
    """The reference: one process of batch 4, two epochs."""
    out = tmp_path_factory.mktemp("single") / "run"
    assert main(_finetune(files, out, "--batch", "4", "--epochs", "2")) == 0
    return out


@pytest.fixture(scope="module")
def parallel(files, tmp_path_factory):
    """Two processes of batch 2: one epoch in which process 1 may not write, then a resume to two epochs by
    ``-m napari_microdisk_sr.cli``."""
    out = tmp_path_factory.mktemp("parallel") / "run"
    first = _torchrun(files["driver"], "guard", out, *_finetune(files, out, "--batch", "2", "--epochs", "1"))
    assert first.returncode == 0, first.stderr
    resumed = _torchrun("-m", "napari_microdisk_sr.cli", *_finetune(files, out, "--resume", "--epochs", "2"))
    assert resumed.returncode == 0, resumed.stderr
    return out, first, resumed


def test_two_processes_train_as_one_process_with_the_double_batch(single, parallel):
    out = parallel[0]
    for weights, reference in zip(_weights(out), _weights(single), strict=True):
        assert weights.keys() == reference.keys()
        for name in reference:
            torch.testing.assert_close(weights[name], reference[name], rtol=0, atol=1e-6)
    rows, reference_rows = read_csv(out / "history.csv"), read_csv(single / "history.csv")
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    for row, expected in zip(rows, reference_rows, strict=True):
        for field in ("train_l1", "val_l1", "val_psnr", "lr"):
            assert (row[field] == "") == (expected[field] == "")
            if row[field]:
                assert float(row[field]) == pytest.approx(float(expected[field]), rel=1e-6)
    info = json.loads((out / "model.json").read_text())["info"]["fine_tuning"]
    assert (info["batch_size"], info["processes"], info["pairs_per_step"]) == (2, 2, 4)


def test_rank_0_alone_writes_and_reports(parallel):
    out, first, resumed = parallel  # the first run failed had process 1 made a file in the run folder
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pth",
        "config.json",
        "history.csv",
        "model.json",
        "model.pth",
        "weight_change.csv",
    ]
    assert "interpreter finalised" not in first.stderr  # each process ends without the finalisation
    for run, epochs in ((first, 1), (resumed, 2)):
        assert run.stdout.count("finished: trained") == 1
        assert run.stderr.count(f"epoch {epochs}/{epochs}: training L1") == 1  # one progress report
        assert "in each of 2 processes (4 pairs a step)" in run.stderr


def test_a_resume_needs_as_many_processes(files, parallel, capsys):
    out = parallel[0]
    assert main(_finetune(files, out, "--resume", "--epochs", "3")) == 2
    assert (
        f"the run in {out} trains with 2 process(es) of batch 2 (4 pairs a step), not 1; resume it with as "
        "many: torchrun --nproc_per_node 2 -m napari_microdisk_sr.cli finetune ... --resume"
    ) in capsys.readouterr().err


def test_a_failing_process_stops_the_other_and_keeps_the_last_checkpoint(files, tmp_path):
    out = tmp_path / "run"
    start = time.monotonic()
    run = _torchrun(files["driver"], "crash", out, *_finetune(files, out, "--batch", "2", "--epochs", "2"))
    assert run.returncode != 0
    assert time.monotonic() - start < 120  # both processes ended: none waits for its lost peer
    assert "takes its group down" not in run.stderr  # the failed run is freed as well
    assert "interpreter finalised" not in run.stderr
    assert (
        "process 1 of 2: training failed: RuntimeError: process 1 fails on purpose; the last good checkpoint "
        f"(the end of epoch 1) is kept in {out / 'checkpoint.pth'}; resume from it"
    ) in run.stderr
    checkpoint = torch.load(out / "checkpoint.pth", weights_only=True)
    assert (checkpoint["progress"]["epoch"], checkpoint["processes"]) == (1, 2)
    assert not (out / "model.pth").exists()


def test_ctrl_c_stops_both_processes_after_the_same_step_and_saves(files, tmp_path):
    out = tmp_path / "run"
    run = _torchrun("-m", "napari_microdisk_sr.cli", *_finetune(files, out, "--epochs", "1000"), wait=False)
    deadline = time.monotonic() + 120
    while not (out / "history.csv").exists() and time.monotonic() < deadline:  # an epoch is done
        time.sleep(0.1)
    run.send_signal(signal.SIGINT)  # torchrun passes it on to both processes
    stdout, stderr = run.communicate(timeout=120)
    assert "stopping after this step and saving" in stderr
    assert stdout.count("stopped: stopped on request at") == 1
    assert "continue with: torchrun --nproc_per_node 2 -m napari_microdisk_sr.cli finetune" in stdout
    checkpoint = torch.load(out / "checkpoint.pth", weights_only=True)
    assert 0 < checkpoint["progress"]["epoch"] < 1000
    assert (out / "model.pth").exists()
