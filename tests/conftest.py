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


@pytest.fixture(scope="session")
def magnified_pair():
    """``make(...) -> (lr, hr, truth)``: a 4X-like LR and a 10X-like HR of part of its field, a known fit.

    The world is a synthetic microdisk field (640 px); the LR sees all of it at ``1 / scale``, rotated by
    ``angle`` degrees, blurred, with another gain and offset and Gaussian noise; the HR is the world's box
    ``hr_box``. ``truth`` is the :class:`~napari_microdisk_sr.core.register.Similarity` from HR to LR.
    """
    import cv2
    import numpy as np

    from napari_microdisk_sr.core.register import Similarity
    from napari_microdisk_sr.core.sample import make_scene

    worlds = {}

    def make(
        *, scale=2.5 * 1.015, angle=1.5, hr_box=(200, 150, 440, 400), gain=0.7, offset=20.0, noise=2.0,
        dtype="uint8", seed=3, lr_centre=None,
    ):  # fmt: skip
        if (seed, dtype) not in worlds:
            worlds[seed, dtype] = make_scene(size=(160, 160), scale=4, seed=seed, dtype=dtype).hr
        world = worlds[seed, dtype]
        side = int(world.shape[0] / scale)
        theta = np.radians(angle)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) / scale
        centre_w = np.array(world.shape[::-1]) / 2
        centre_l = np.array([side / 2, side / 2]) if lr_centre is None else np.array(lr_centre[::-1])
        world_to_lr = np.hstack([rot, (centre_l - rot @ centre_w)[:, None]])
        blurred = cv2.GaussianBlur(world.astype(np.float32), (0, 0), 0.45 * scale)
        lr = cv2.warpAffine(blurred, world_to_lr, (side, side), flags=cv2.INTER_LINEAR)
        top = np.iinfo(world.dtype).max
        lr = (
            gain * lr
            + offset * top / 255
            + np.random.default_rng(seed).normal(0, noise * top / 255, lr.shape)
        )
        y0, x0, y1, x1 = hr_box
        shift = world_to_lr[:, :2] @ np.array([x0, y0]) + world_to_lr[:, 2]
        truth = Similarity(scale, angle, (float(shift[1]), float(shift[0])))
        return np.clip(np.rint(lr), 0, top).astype(world.dtype), world[y0:y1, x0:x1].copy(), truth

    return make
