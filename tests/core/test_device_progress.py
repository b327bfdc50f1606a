import threading

import pytest
import torch

from napari_microdisk_sr.core import device as device_module
from napari_microdisk_sr.core.device import describe_device, is_device_name, resolve_device
from napari_microdisk_sr.core.errors import InputError
from napari_microdisk_sr.core.progress import StopFlag, drive, relay


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"), [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(device_module, "_mps_available", lambda: mps)
    assert resolve_device("auto").type == expected


def test_explicit_devices_and_description():
    assert resolve_device("CPU") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert describe_device("cpu").startswith("CPU (")


@pytest.mark.parametrize(
    ("name", "valid"),
    [("auto", True), (" CUDA:1 ", True), ("mps", True), ("cuda:x", False), ("cudax", False), ("tpu", False)],
)
def test_device_names_are_checked_by_spelling(name, valid):
    assert is_device_name(name) is valid


def test_unknown_or_unavailable_device_is_a_clear_error(monkeypatch):
    for name in ("tpu", "cuda:x"):
        with pytest.raises(InputError, match="unknown device"):
            resolve_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)
    with pytest.raises(InputError, match="no CUDA GPU"):
        resolve_device("cuda:0")
    with pytest.raises(InputError, match="Apple MPS is not available"):
        resolve_device("mps")


def test_drive_returns_the_generator_result_and_forwards_events():
    def job():
        yield 1
        yield 2
        return "done"

    seen = []
    assert drive(job(), seen.append) == "done"
    assert seen == [1, 2]


def test_stop_flag_is_visible_across_threads():
    flag = StopFlag()
    assert not flag
    thread = threading.Thread(target=flag.set)
    thread.start()
    thread.join()
    assert flag.is_set()
    assert flag


def test_half_precision_is_float16_on_cuda_and_bfloat16_only_on_cpus_that_compute_it(monkeypatch):
    assert device_module.half_dtype(torch.device("cuda")) is torch.float16
    assert device_module.half_dtype(torch.device("mps")) is None
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: True)
    assert device_module.half_dtype(torch.device("cpu")) is torch.bfloat16
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: False)
    assert device_module.half_dtype(torch.device("cpu")) is None


def test_relay_passes_events_on_and_returns_the_result():
    closed = []

    def job():
        try:
            yield 1
            yield 2
            return "done"
        finally:
            closed.append(True)

    seen = []

    def outer():
        result = yield from relay(job(), seen.append)
        yield result

    assert list(outer()) == [1, 2, "done"]
    assert seen == [1, 2]
    assert closed == [True]
    early = relay(job(), seen.append)
    next(early)
    early.close()  # closing the relay closes the job
    assert closed == [True, True]
