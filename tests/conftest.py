"""Shared test set-up: an isolated weights cache and the basicsr reference (test-only)."""

import os
import shutil
import sys
import tempfile
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
