"""The screenshot of a registered pair in napari for the README (``docs/images/register.png``).

Run from the repository root (needs a display; on a server, Xvfb):

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/screenshot_register.py

A synthetic 4X field and a 10X view of part of it (1.5 % off the nominal 2.5x, rotated 1.5 degrees, another
gain and offset, noise: :func:`~napari_microdisk_sr.core.sample.make_magnified_pair`) are opened with their
pixel sizes and registered with the Register LR/HR widget; the registered HR is shown over the 4X field it
was fitted to.
"""

import sys
import time
from pathlib import Path

import napari
from napari._qt.dialogs.qt_notification import NapariQtNotification
from PIL import Image
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication

from napari_microdisk_sr.core.sample import make_magnified_pair

PATH = Path(__file__).resolve().parent / "images" / "register.png"
WINDOW = (1600, 1000)


def _settle(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def main() -> int:
    lr, hr, truth = make_magnified_pair(size=240, hr_box=(300, 260, 660, 700))
    viewer = napari.Viewer(title="napari-microdisk-sr")
    viewer.window.show()
    viewer.window.resize(*WINDOW)
    viewer.add_image(lr, name="field 4X", scale=(1.625, 1.625), units="um")
    viewer.add_image(hr, name="field 10X", scale=(0.65, 0.65), units="um")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-microdisk-sr", "Register LR/HR")
    viewer.window._qt_window.resizeDocks([dock], [460], Qt.Orientation.Horizontal)
    widget._run.native.click()
    while widget._jobs.running:
        _settle(0.1)
    print(widget._status.value)
    print(f"true: scale {truth.scale:.4f}, rotation {truth.rotation_deg:+.2f} deg")
    viewer.layers["field 10X"].visible = False
    viewer.layers["field 4X registered LR"].visible = False
    viewer.layers.move(viewer.layers.index("field 10X registered HR"), len(viewer.layers))
    viewer.reset_view()
    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    viewer.help = viewer.status = ""
    _settle(0.5)
    shot = Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)[..., :3])
    PATH.parent.mkdir(parents=True, exist_ok=True)
    shot.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        PATH, optimize=True
    )
    print(f"wrote {PATH} ({shot.width}x{shot.height}, {PATH.stat().st_size // 1024} KiB)")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
