"""Upscaling files as tasks on a dask.distributed LocalCluster: the bits of one process, the model loaded once
per worker, a killed worker's task recomputed, bad input and bad schedulers refused.

One cluster of 2 worker processes serves the module (starting one takes seconds).
"""

import json
import os
import signal
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_microdisk_sr.cli import main
from napari_microdisk_sr.core import batch, distributed, distributed_blocks, infer, models, unfinished
from napari_microdisk_sr.core.errors import InputError, MicrodiskSRError
from napari_microdisk_sr.core.io import read_image, read_tiff_description, write_tiff
from napari_microdisk_sr.core.weights import file_sha256

pytest.importorskip("distributed")

FIELDS = 8


@pytest.fixture(scope="module")
def client():
    with distributed.connect(distributed.Scheduler(local_workers=2)) as client:
        yield client


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny random SRVGGNetCompact x4 saved like a fine-tuned model."""
    spec = models.ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 4})
    torch.manual_seed(0)
    return models.save_model(spec.build(), spec, tmp_path_factory.mktemp("model") / "tiny.pth")


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    """A folder of small uint16 fields and a gray RGB one."""
    folder = tmp_path_factory.mktemp("plate")
    for index in range(FIELDS - 1):
        image = np.random.default_rng(index).integers(0, 4000, (48, 40)).astype(np.uint16)
        write_tiff(folder / f"field{index}.tif", image)
    write_tiff(folder / "rgb.tif", np.random.default_rng(99).integers(0, 255, (32, 36, 3)).astype(np.uint8))
    return folder


@pytest.fixture(scope="module")
def one_process(plate, model_file, tmp_path_factory):
    """The single-process command line's outputs for the plate: {input name: output path}."""
    out = tmp_path_factory.mktemp("one-process")
    assert (
        main(["upscale", str(plate), "--out", str(out), "--model", str(model_file), "--device", "cpu"]) == 0
    )
    return {path.name.replace("_x4", ""): path for path in out.iterdir()}


def jobs_for(plate, model_file, out, **settings):
    """The jobs of the command line's run (its settings, and every input to do)."""
    model = models.load_model(model_file)
    config = infer.UpscaleConfig(device="cpu", **settings)
    made_with = batch.output_settings(model, config, torch.device("cpu"))
    return [
        batch.FileJob(
            path, out / f"{path.stem}_x4.tif", made_with | {"input_sha256": file_sha256(path)}, config
        )
        for path in batch.expand_inputs([plate])
    ]


def assert_same_outputs(written, one_process):
    """Same pixels and the same provenance, but for where it ran (device, and the model's absolute path)."""
    assert sorted(path.name.replace("_x4", "") for path in written) == sorted(one_process)
    for path in written:
        reference = one_process[path.name.replace("_x4", "")]
        np.testing.assert_array_equal(read_image(path).data, read_image(reference).data)
        ours, theirs = read_tiff_description(path), read_tiff_description(reference)
        differ = {key for key in ours.keys() | theirs.keys() if ours.get(key) != theirs.get(key)}
        assert differ <= {"device", "model_source"}, differ


def test_two_workers_write_the_bits_of_one_process_and_load_the_model_once_each(
    client, plate, model_file, one_process, tmp_path
):
    started = time.time()
    jobs = jobs_for(plate, model_file, tmp_path)
    sha256 = file_sha256(model_file)
    files = distributed.upscale_files(client, jobs, str(model_file), sha256)
    seen = list(files)
    assert sorted(done.path for done in seen) == [job.path for job in jobs]
    assert all(done.seconds is not None for done in seen)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(job.target.name for job in jobs)
    assert_same_outputs(list(tmp_path.iterdir()), one_process)

    loads = distributed.model_loads(client, since=started)
    workers = [load["worker"] for load in loads]
    assert len(workers) == len(set(workers)) <= 2  # once per worker, for 8 tasks
    assert {load["sha256"] for load in loads} == {sha256}

    again = time.time()
    (tmp_path / "again").mkdir()
    rerun = list(
        distributed.upscale_files(
            client, jobs_for(plate, model_file, tmp_path / "again"), str(model_file), sha256
        )
    )
    assert len(rerun) == FIELDS
    assert distributed.model_loads(client, since=again) == []  # the workers kept it


def test_a_worker_killed_mid_run_costs_its_task_not_the_run(client, plate, model_file, one_process, tmp_path):
    jobs = jobs_for(plate, model_file, tmp_path)
    files = distributed.upscale_files(client, jobs, str(model_file), file_sha256(model_file))
    seen = [next(files)]
    busy = [address for address, keys in client.processing().items() if keys]
    assert busy, "every task finished before the kill: use more or larger fields"
    pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
    os.kill(pid, signal.SIGKILL)
    seen += list(files)

    assert sorted(done.path for done in seen) == [job.path for job in jobs]
    assert busy[0] not in client.scheduler_info(n_workers=-1)["workers"]
    # Every output once, none numbered twice; a worker killed while writing leaves its hidden temporary file
    # (.<stem>.*.tmp.tif), which inputs never include, and no partial output.
    written = [path for path in tmp_path.iterdir() if not path.name.startswith(".")]
    assert_same_outputs(written, one_process)
    assert all(path.name.endswith(".tmp.tif") for path in tmp_path.glob(".*"))
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker for the next tests


def test_a_lost_cluster_stops_the_run_and_a_rerun_does_the_rest(
    client, plate, model_file, one_process, tmp_path
):
    jobs = jobs_for(plate, model_file, tmp_path)
    sha256 = file_sha256(model_file)
    with distributed.connect(distributed.Scheduler(local_workers=1)) as doomed:
        files = distributed.upscale_files(doomed, jobs, str(model_file), sha256)
        first = next(files)
        doomed.cluster.close()
        with pytest.raises(MicrodiskSRError, match=r"lost the dask cluster .* run the same command again"):
            list(files)
    rest = [job for job in jobs if batch.is_done(job) is None]
    assert first.path not in [job.path for job in rest]
    assert 0 < len(rest) < FIELDS
    assert len(list(distributed.upscale_files(client, rest, str(model_file), sha256))) == len(rest)
    assert_same_outputs(list(tmp_path.iterdir()), one_process)


def _torch_setup() -> tuple[int, "str | None"]:
    return torch.get_num_threads(), os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_a_local_worker_gets_its_share_of_the_cores_and_no_malloc_trim_threshold():
    with distributed.connect(distributed.Scheduler(local_workers=1)) as alone:
        assert list(alone.run(_torch_setup).values()) == [(len(os.sched_getaffinity(0)), None)]
        assert "1 dask worker(s) (1 task(s) at once)" in distributed.describe(alone)


def test_a_task_finds_the_output_an_earlier_attempt_wrote(client, plate, model_file, tmp_path):
    jobs = jobs_for(plate, model_file, tmp_path)
    written = batch.upscale_file(jobs[0], models.load_model(model_file))
    mtime = written.output.stat().st_mtime_ns
    seen = list(distributed.upscale_files(client, jobs[:1], str(model_file), file_sha256(model_file)))
    assert seen == [batch.FileDone(jobs[0].path, written.output)]  # found, not computed again
    assert [path.name for path in tmp_path.iterdir()] == [written.output.name]
    assert written.output.stat().st_mtime_ns == mtime


def test_bad_inputs_are_refused_before_any_task_computes(client, plate, model_file, tmp_path):
    bad = tmp_path / "bad.tif"
    write_tiff(bad, np.full((20, 20), np.nan, np.float32))
    jobs = jobs_for(plate, model_file, tmp_path / "out") + jobs_for(bad, model_file, tmp_path / "out")
    with pytest.raises(InputError, match=r"bad\.tif: .*NaN"):
        list(distributed.upscale_files(client, jobs, str(model_file), file_sha256(model_file)))
    assert not (tmp_path / "out").exists()


def test_workers_with_other_weights_refuse(client, plate, model_file, tmp_path):
    jobs = jobs_for(plate, model_file, tmp_path)[:1]
    with pytest.raises(MicrodiskSRError, match="other weights"):
        list(distributed.upscale_files(client, jobs, str(model_file), "0" * 64))
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """Images upscaled block by block: a gray field of 2 x 3 blocks, a float stack of 2 planes."""
    folder = tmp_path_factory.mktemp("large")
    write_tiff(
        folder / "mosaic.tif", np.random.default_rng(5).integers(0, 60000, (300, 520)).astype(np.uint16)
    )
    write_tiff(folder / "stack.tif", np.random.default_rng(6).random((2, 140, 270)).astype(np.float32))
    return folder


@pytest.fixture(scope="module")
def one_process_stores(large, model_file, tmp_path_factory):
    """The single-process command line's OME-Zarr outputs of ``large``."""
    out = tmp_path_factory.mktemp("one-process-stores")
    argv = ["upscale", str(large), "--format", "ome-zarr", "--out", str(out), "--model", str(model_file)]
    assert main([*argv, "--device", "cpu"]) == 0
    return out


def store_jobs(large, model_file, out):
    return [
        replace(job, target=out / f"{job.path.stem}_x4.ome.zarr") for job in jobs_for(large, model_file, out)
    ]


def assert_same_stores(folder, reference):
    zarr = pytest.importorskip("zarr")
    assert sorted(path.name for path in folder.iterdir()) == sorted(path.name for path in reference.iterdir())
    for path in reference.iterdir():
        ours, theirs = (
            zarr.open_group(str(folder / path.name), mode="r"),
            zarr.open_group(str(path), mode="r"),
        )
        assert sorted(ours.array_keys()) == sorted(theirs.array_keys())
        for key in theirs.array_keys():
            np.testing.assert_array_equal(ours[key][:], theirs[key][:])
        ours, theirs = dict(ours.attrs), dict(theirs.attrs)
        assert ours["ome"] == theirs["ome"]
        made = ours.pop("microdisk_sr"), theirs.pop("microdisk_sr")
        assert {key for key in made[0].keys() | made[1].keys() if made[0].get(key) != made[1].get(key)} <= {
            "device",
            "model_source",
        }


def test_blocks_are_tasks_that_write_the_stores_of_one_process(
    client, large, model_file, one_process_stores, tmp_path
):
    jobs = store_jobs(large, model_file, tmp_path)
    events = list(distributed_blocks.upscale_stores(client, jobs, str(model_file), file_sha256(model_file)))
    # mosaic: 6 blocks, 2 pyramid levels of 2 and 1 blocks; stack: 2 planes of 2 blocks and 1 level of 1 block
    assert [event.done for event in events] == list(range(1, 16))
    assert {event.total for event in events} == {15}
    finished = [event.finished for event in events if event.finished is not None]
    assert sorted(path.name for path, _ in finished) == ["mosaic.tif", "stack.tif"]
    assert all(result.path.parent == tmp_path for _, result in finished)
    assert_same_stores(tmp_path, one_process_stores)
    assert all(batch.is_done(job) is not None for job in jobs)  # a rerun skips them


def test_a_worker_killed_among_blocks_costs_its_blocks_not_the_store(
    client, large, model_file, one_process_stores, tmp_path
):
    jobs = store_jobs(large, model_file, tmp_path)
    events = distributed_blocks.upscale_stores(client, jobs, str(model_file), file_sha256(model_file))
    next(events)
    busy = [address for address, keys in client.processing().items() if keys]
    assert busy, "every block finished before the kill"
    os.kill(client.run(os.getpid, workers=busy[:1])[busy[0]], signal.SIGKILL)
    assert list(events)[-1].done == 15
    assert_same_stores(tmp_path, one_process_stores)  # no hidden temporary store left either
    client.wait_for_workers(2, timeout=60)


def test_a_failed_block_leaves_its_store_hidden_and_a_rerun_resumes_it(
    client, large, model_file, one_process_stores, tmp_path
):
    jobs = store_jobs(large, model_file, tmp_path)
    with pytest.raises(MicrodiskSRError, match="other weights"):
        list(distributed_blocks.upscale_stores(client, jobs, str(model_file), "0" * 64))
    left = sorted(tmp_path.iterdir())
    assert len(left) == 2
    assert all(path.name.startswith(".") and path.name.endswith(".tmp") for path in left)
    events = list(distributed_blocks.upscale_stores(client, jobs, str(model_file), file_sha256(model_file)))
    assert events[-1].done == 15
    assert_same_stores(tmp_path, one_process_stores)  # the hidden stores were taken over and put in place


def test_an_interrupted_run_is_resumed_without_the_blocks_it_wrote(
    client, large, model_file, one_process_stores, tmp_path
):
    jobs = store_jobs(large, model_file, tmp_path)
    sha256 = file_sha256(model_file)
    events = distributed_blocks.upscale_stores(client, jobs, str(model_file), sha256)
    for _ in range(5):
        next(events)
    events.close()  # as when the client is killed: its other tasks are cancelled
    deadline = time.time() + 60
    while any(client.processing().values()) and time.time() < deadline:
        time.sleep(0.05)
    left = sorted(tmp_path.iterdir())
    assert all(path.name.startswith(".") for path in left)  # closed after 5 of 15 blocks: none put in place
    assert sum(len(unfinished.done_blocks(path)) for path in left) >= 5

    events = list(distributed_blocks.upscale_stores(client, jobs, str(model_file), sha256))
    reused = sum(event.finished[1].reused for event in events if event.finished is not None)
    assert reused >= 5
    dones = [event.done for event in events]
    assert [done for done in dones if done > reused] == list(range(reused + 1, 16))  # only the others ran
    assert all(done == reused for done in dones if done <= reused)  # a store written whole: put in place
    assert_same_stores(tmp_path, one_process_stores)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("local:3", distributed.Scheduler(local_workers=3)),
        ("tcp://node12:8786", distributed.Scheduler(address="tcp://node12:8786")),
        ("node12:8786", distributed.Scheduler(address="tcp://node12:8786")),
    ],
)
def test_scheduler_specs_are_parsed(text, expected):
    assert distributed.Scheduler.parse(text) == expected


def test_a_scheduler_file_is_taken_when_it_holds_an_address(tmp_path):
    path = tmp_path / "scheduler.json"
    path.write_text(json.dumps({"address": "tcp://10.0.0.3:8786", "type": "Scheduler"}))
    assert distributed.Scheduler.parse(str(path)) == distributed.Scheduler(scheduler_file=path)
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(InputError, match="not a dask scheduler file"):
        distributed.Scheduler.parse(str(tmp_path / "other.json"))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("local", "local:N with N worker processes"),
        ("local:0", "local:N with N worker processes"),
        ("local:two", "local:N with N worker processes"),
        ("http://node12:8786", "PROTOCOL://HOST:PORT"),
        ("tcp://", "PROTOCOL://HOST:PORT"),
        ("missing.json", "is not local:N, an address (tcp://HOST:PORT) or an existing scheduler file"),
    ],
)
def test_bad_scheduler_specs_say_what_is_accepted(text, fragment):
    with pytest.raises(InputError) as error:
        distributed.Scheduler.parse(text)
    assert fragment in str(error.value)


def test_an_unreachable_scheduler_is_a_clear_error():
    dask = pytest.importorskip("dask")
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(
            MicrodiskSRError, match=r"cannot reach the dask scheduler tcp://127\.0\.0\.1:9 .*running"
        ),
        distributed.connect(distributed.Scheduler.parse("127.0.0.1:9")),
    ):
        pass
