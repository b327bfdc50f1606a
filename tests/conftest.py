"""Shared test set-up: an isolated weights cache, the basicsr reference (test-only), processes run at once."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

# One converted copy of the embedded weights per test session, never the user's own cache.
_SESSION_CACHE = Path(tempfile.mkdtemp(prefix="microdisk-sr-test-cache-"))
os.environ["MICRODISK_SR_CACHE"] = str(_SESSION_CACHE)


def pytest_unconfigure(config):
    """Remove the session's cache (tens of MB of converted weights) when the test run ends."""
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def basicsr_archs():
    """basicsr 1.4.2's architectures (the reference implementation), or skip when it is not installed.

    basicsr imports ``torchvision.transforms.functional_tensor``, which current torchvision no longer has;
    the module's functions live in ``torchvision.transforms.functional``.
    """
    pytest.importorskip("torchvision")
    import torchvision.transforms.functional as tv_functional

    sys.modules.setdefault("torchvision.transforms.functional_tensor", tv_functional)
    rrdbnet_arch = pytest.importorskip("basicsr.archs.rrdbnet_arch")
    srvgg_arch = pytest.importorskip("basicsr.archs.srvgg_arch")
    return rrdbnet_arch.RRDBNet, srvgg_arch.SRVGGNetCompact


_AT_ONCE = """
import pathlib, sys, time
{setup}
pathlib.Path(sys.argv[1]).touch()
while not pathlib.Path(sys.argv[2]).exists():
    time.sleep(0.001)
{body}
"""


@pytest.fixture
def run_at_once(tmp_path) -> Callable[..., list[subprocess.CompletedProcess]]:
    """``run_at_once(setup, body, argvs)``: one Python process per ``argvs`` entry, all released together.

    Each process runs ``setup`` (imports: slow, and not the same length everywhere), says it is ready, waits
    for the others, then runs ``body`` with its own ``sys.argv[3:]``. They import this checkout of the
    package. Returns their completed processes (exit code, stdout, stderr), in order.
    """

    import napari_microdisk_sr

    def run(setup: str, body: str, argvs: Sequence[Sequence[str]], timeout: float = 300) -> list:
        signals = tmp_path / "at-once-signals"
        signals.mkdir()
        go = signals / "go"
        env = os.environ | {
            "PYTHONPATH": os.pathsep.join(
                [str(Path(napari_microdisk_sr.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
            ),
            "OMP_NUM_THREADS": "1",  # several processes on few cores
        }
        code = _AT_ONCE.format(setup=setup, body=body)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(signals / f"ready{i}"), str(go), *map(str, argv)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for i, argv in enumerate(argvs)
        ]
        deadline = time.monotonic() + timeout
        while len(list(signals.glob("ready*"))) < len(procs) and time.monotonic() < deadline:
            if any(proc.poll() is not None for proc in procs):
                break
            time.sleep(0.01)
        go.touch()
        results = []
        for proc, argv in zip(procs, argvs, strict=True):
            out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
            results.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
        shutil.rmtree(signals)
        return results

    return run
