"""What Super-resolve's previews need from napari: the region on screen, and a debounced watch of the view."""

from collections.abc import Callable

import numpy as np
from napari.layers import Image
from qtpy.QtCore import QObject, QTimer

from ..core.regions import Region

_SETTLE_MS = 300
"""How long the view must stay still before a "follow the view" preview starts."""


def visible_region(viewer: "object", layer: Image) -> "tuple[tuple[int, ...], Region] | None":
    """The plane of ``layer`` on screen (its index on the leading axes) and the part of it the canvas shows.

    Taken from the corners napari computed for the last draw of the canvas, clipped to the layer; None when
    none of the layer is in view.
    """
    corners = np.asarray(layer.corner_pixels)
    (y0, x0), (y1, x1) = corners[0, -2:], corners[1, -2:]
    height, width = layer.data.shape[-3:-1] if layer.rgb else layer.data.shape[-2:]
    y0, x0 = max(int(y0), 0), max(int(x0), 0)
    y1, x1 = min(int(y1) + 1, height), min(int(x1) + 1, width)
    if y1 <= y0 or x1 <= x0:
        return None
    lead = layer.ndim - 2
    point = layer.world_to_data(viewer.dims.point)[:lead] if lead else ()
    plane = tuple(
        int(np.clip(round(p), 0, n - 1)) for p, n in zip(point, layer.data.shape[:lead], strict=True)
    )
    return plane, Region(y0, y1, x0, x1)


class ViewFollower(QObject):
    """Calls ``on_settled`` once the camera and the sliders have not moved for a moment (debounced)."""

    def __init__(self, viewer: "object", on_settled: Callable[[], None], parent: QObject) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(_SETTLE_MS)
        self._timer.timeout.connect(on_settled)
        self.active = False
        parent.destroyed.connect(self._disconnect)  # the widget is gone: the viewer must not call into it

    def set_active(self, active: bool) -> None:
        if active:
            for event in self._events():
                event.connect(self._moved)
        else:
            self._disconnect()
            self._timer.stop()
        self.active = active

    def _events(self) -> tuple:
        camera, dims = self._viewer.camera, self._viewer.dims
        return camera.events.center, camera.events.zoom, dims.events.current_step

    def _disconnect(self, _obj: object = None) -> None:
        for event in self._events():
            event.disconnect(self._moved)

    def settle_again(self) -> None:
        """Call ``on_settled`` once more after the settling delay (as if the view had just moved)."""
        self._timer.start()

    def _moved(self, _event: object = None) -> None:
        self._timer.start()  # restarted by every move: fires once the view has settled
