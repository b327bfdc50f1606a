import threading

import pytest
import torch

from napari_microdisk_sr.core.device import describe_device, resolve_device
from napari_microdisk_sr.core.errors import InputError
from napari_microdisk_sr.core.progress import StopFlag, drive


def test_auto_device_prefers_cuda_then_cpu():
    expected = "cuda" if torch.cuda.is_available() else None
    device = resolve_device("auto")
    if expected:
        assert device.type == expected
    else:
        assert device.type in {"mps", "cpu"}
    assert resolve_device("CPU") == torch.device("cpu")
    assert describe_device("cpu").startswith("CPU (")


def test_unknown_or_unavailable_device_is_a_clear_error():
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device("cuda")


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
