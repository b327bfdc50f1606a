"""Shared set-up of the widget tests: a tiny model, the notifications shown, a checked screenshot."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from napari.utils.notifications import notification_manager

from napari_microdisk_sr.core.models import ModelSpec, save_model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny SRVGGNetCompact x4 (8 features, 2 convolutions) as a weights file."""
    spec = ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 4})
    return save_model(spec.build(), spec, tmp_path_factory.mktemp("models") / "tiny.pth")


@pytest.fixture
def notes():
    """The notifications shown during the test."""
    seen = []
    notification_manager.notification_ready.connect(seen.append)
    yield seen
    notification_manager.notification_ready.disconnect(seen.append)


@pytest.fixture
def screenshot(qtbot) -> Callable[..., None]:
    """``screenshot(viewer, path)``: save the whole window as ``path`` and check that it is a real picture."""

    def take(viewer, path: Path) -> None:
        """The whole window after a run: a real picture of the viewer, its layers and dock."""
        viewer.reset_view()
        qtbot.wait(200)  # the canvas and the dock repaint
        shot = viewer.screenshot(path=str(path), canvas_only=False, flash=False)
        window = viewer.window._qt_window
        ratio = window.devicePixelRatio()
        assert shot.dtype == np.uint8
        assert shot.shape == (round(window.height() * ratio), round(window.width() * ratio), 4)
        assert min(shot.shape[:2]) >= 400
        assert len(np.unique(shot[..., :3].reshape(-1, 3), axis=0)) > 16  # widgets and data, not a blank grab
        assert path.stat().st_size > 0
        canvas = viewer.screenshot(canvas_only=True, flash=False)
        assert canvas[..., :3].std() > 5  # the layers are drawn, not an empty canvas

    return take
