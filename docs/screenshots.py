"""Screenshots of the four dock widgets for the README's tour, taken while driving the whole workflow.

Run from the repository root (needs a display; on a server, Xvfb):

    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python docs/screenshots.py

One viewer, used as a user would: a synthetic training scene (high resolution) and a held-out scene pair
(low resolution and its truth) are written to TIFF files in a temporary folder and opened; then

1. Select & crop: detect the disks of the training scene and crop them (``select_crop.png``);
2. Fine-tune: the compact ``realesr-animevideov3`` on those crops with the realistic degradation, for about a
   minute on two CPU cores (``finetune.png``, with the loss plot);
3. Super-resolve: the held-out low-resolution scene with ``realesrgan-x4plus`` and with the fine-tuned run,
   in a grid beside the input and the truth, zoomed in on a few disks (``superresolve.png``); then a preview
   of the visible region with the fine-tuned run beside the pretrained compact model (``preview.png``);
4. Compare & measure: bicubic, both pretrained models and the fine-tuned run on the held-out pair, with the
   error maps of ``realesrgan-x4plus`` and of the fine-tuned run one above the other (``measure.png``).

The widgets are driven through their controls (the magicgui sub-widgets the tests use too), and their jobs
run in napari's workers while the Qt event loop turns. The screenshots go to ``docs/images/``; the training
time and the metric table are printed.
"""

import sys
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
import tifffile
from napari._qt.dialogs.qt_notification import NapariQtNotification
from PIL import Image
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication

from napari_microdisk_sr._widgets.measure import _Reference
from napari_microdisk_sr.core.layers import upscaled_geometry
from napari_microdisk_sr.core.sample import make_scene

PLUGIN = "napari-microdisk-sr"
IMAGES = Path(__file__).resolve().parent / "images"
WINDOW = (1366, 768)  # a laptop screen
SCENE_SIZE = (192, 192)  # low-resolution pixels; the truth is 4x larger
TRAIN_SEED, HELD_OUT_SEED = 1, 102
COMPACT, X4PLUS = "realesr-animevideov3", "realesrgan-x4plus"
# About a minute on two idle CPU cores; the time budget caps it on a busy machine.
EPOCHS, PAIRS_PER_EPOCH, BUDGET_MIN = 12, 180, 3.0
ZOOM_BOX = (34, 128, 96, 192)  # held-out low-resolution pixels (y0, x0, y1, x1) shown in the grids


def _settle(seconds: float = 0.5) -> None:
    """Let Qt process events (repaints, resizes) for a while."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def _click(widget, button, timeout: float = 900.0) -> float:
    """Press a widget's button, process events until its job is over; the seconds it took."""
    started = time.monotonic()
    button.native.click()
    while widget._jobs.running:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{button.text!r} did not finish in {timeout:.0f} s")
        QApplication.processEvents()
        time.sleep(0.02)
    _settle(0.2)
    return time.monotonic() - started


def _print_table(table) -> None:
    columns = range(table.columnCount())
    rows = [[table.horizontalHeaderItem(c).text() for c in columns]]
    rows += [[table.item(r, c).text() for c in columns] for r in range(table.rowCount())]
    widths = [max(len(row[c]) for row in rows) for c in columns]
    for row in rows:
        print("  " + "  ".join(text.rjust(width) for text, width in zip(row, widths, strict=True)))


class Tour:
    """The viewer, its one visible plugin dock, and the files of the tour."""

    def __init__(self, folder: Path) -> None:
        training = make_scene(seed=TRAIN_SEED, size=SCENE_SIZE)
        held_out = make_scene(seed=HELD_OUT_SEED, size=SCENE_SIZE)
        self.training = folder / "training_hr.tif"
        self.held_out_lr = folder / "heldout_lr.tif"
        self.held_out_hr = folder / "heldout_hr.tif"
        tifffile.imwrite(self.training, training.hr)
        tifffile.imwrite(self.held_out_lr, held_out.lr)
        tifffile.imwrite(self.held_out_hr, held_out.hr)
        self.viewer = napari.Viewer(title="napari-microdisk-sr")
        self.viewer.window.show()
        self.viewer.window.resize(*WINDOW)  # after show, which restores the last session's geometry
        self._dock = None
        _settle()

    def open_widget(self, name: str, width: int):
        """Open one of the plugin's widgets as the only plugin dock on the right, ``width`` pixels wide."""
        if self._dock is not None:
            self._dock.hide()
        self._dock, widget = self.viewer.window.add_plugin_dock_widget(PLUGIN, name)
        self.viewer.window._qt_window.resizeDocks([self._dock], [width], Qt.Orientation.Horizontal)
        _settle(0.2)
        self.viewer.reset_view()
        return widget

    def save(self, name: str) -> None:
        """The whole window, without notification toasts or key hints, as an optimised palette PNG."""
        for toast in self.viewer.window._qt_window.findChildren(NapariQtNotification):
            toast.close()
        self.viewer.help = ""
        self.viewer.status = ""
        _settle(0.5)
        shot = Image.fromarray(self.viewer.screenshot(canvas_only=False, flash=False)[..., :3])
        path = IMAGES / name
        shot.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            path, optimize=True
        )
        print(f"wrote {path} ({shot.width}x{shot.height}, {path.stat().st_size // 1024} KiB)")

    def grid(self, layers: list, shape: tuple[int, int] = (-1, -1)) -> None:
        """Only ``layers``, in a grid of ``shape``, each named in its cell, zoomed on the same few disks."""
        for layer in self.viewer.layers:
            layer.visible = layer in layers
            layer.name_overlay.visible = layer in layers
            layer.name_overlay.font_size = 9
            layer.name_overlay.box = True
        grid = self.viewer.canvas.grid
        grid.enabled = True
        grid.shape = shape
        grid.spacing = 4
        _settle(0.3)
        y0, x0, y1, x1 = ZOOM_BOX
        lr = self.viewer.layers[self.held_out_lr.stem]
        corner0 = np.asarray(lr.data_to_world((y0 - 0.5, x0 - 0.5)))
        corner1 = np.asarray(lr.data_to_world((y1 - 0.5, x1 - 0.5)))
        camera = self.viewer.scene.camera
        camera.center = tuple((corner0 + corner1) / 2)
        camera.zoom = float(np.min(self.viewer.canvas.viewbox_size(self.viewer.layers) / (corner1 - corner0)))

    # -- the four steps -----------------------------------------------------------------------------------

    def select_and_crop(self) -> None:
        (training,) = self.viewer.open(self.training, plugin="napari")
        crop = self.open_widget("Select & crop microdisks", 440)
        crop._image.value = training
        _click(crop, crop._detect)
        _click(crop, crop._crop)
        print(f"select & crop: {crop._status.value}")
        self.save("select_crop.png")

    def fine_tune(self) -> None:
        tune = self.open_widget("Fine-tune", 500)
        tune._model.value = COMPACT
        tune._epochs.value = EPOCHS
        tune._pairs.value = PAIRS_PER_EPOCH
        tune._degradation.value = "realistic"
        tune._budget_on.value = True
        tune._budget.value = BUDGET_MIN
        seconds = _click(tune, tune._start_button)
        plot = tune._plot
        print(f"fine-tune: {seconds:.0f} s; {tune._status.value}")
        print(f"  validation L1: pretrained {plot.reference:.4f}; by epoch")
        print("  " + ", ".join(f"{epoch:g}: {loss:.4f}" for epoch, loss in plot.val_points))
        self.save("finetune.png")

    def super_resolve(self) -> None:
        (lr,) = self.viewer.open(self.held_out_lr, plugin="napari")
        (hr,) = self.viewer.open(self.held_out_hr, plugin="napari")
        hr.scale, hr.translate = upscaled_geometry(lr.scale, lr.translate, 4)  # the truth over its input
        sr = self.open_widget("Super-resolve", 420)
        sr._images.value = [lr]
        for model in (X4PLUS, self.run(sr)):
            sr._model.value = model
            seconds = _click(sr, sr._run)
            print(f"super-resolve: {self.viewer.layers[-1].name!r} in {seconds:.0f} s")
        # The widget names the output after the run folder; a shorter label reads better in the picture.
        tuned = self.viewer.layers[-1]
        tuned.name = f"{lr.name}_x4 (fine-tuned)"
        self.viewer.layers.move(self.viewer.layers.index(hr), len(self.viewer.layers))
        self.viewer.layers.selection.active = tuned
        self.grid([lr, self.viewer.layers[f"{lr.name}_x4 ({X4PLUS})"], tuned, hr])
        self.save("superresolve.png")

    def preview(self) -> None:
        """Super-resolve's preview of the visible region: the fine-tuned run beside the pretrained compact."""
        lr = self.viewer.layers[self.held_out_lr.stem]
        sr = self.open_widget("Super-resolve", 420)
        self.viewer.canvas.grid.enabled = False
        for layer in self.viewer.layers:
            layer.visible = layer is lr
            layer.name_overlay.visible = False
        y0, x0, y1, x1 = ZOOM_BOX
        corner0 = np.asarray(lr.data_to_world((y0 - 0.5, x0 - 0.5)))
        corner1 = np.asarray(lr.data_to_world((y1 - 0.5, x1 - 0.5)))
        camera = self.viewer.scene.camera
        camera.center = tuple((corner0 + corner1) / 2)
        camera.zoom = float(np.min(self.viewer.canvas.viewbox_size(self.viewer.layers) / (corner1 - corner0)))
        _settle(0.5)  # the canvas draws the zoomed view: the visible region is known
        sr._scope.value = sr._scope.choices[1]  # the visible region
        sr._images.value = [lr]
        sr._model.value = self.run(sr)
        sr._compare.value = COMPACT
        seconds = _click(sr, sr._run)
        print(f"preview: {seconds:.1f} s; {sr._status.value}")
        previews = [layer for layer in self.viewer.layers if " preview x4 " in layer.name]
        self.grid([lr, *previews], shape=(1, 3))
        self.save("preview.png")

    def measure(self) -> None:
        compare = self.open_widget("Compare & measure", 700)
        compare._reference.value = _Reference.PAIR
        compare._lr_layer.value = self.viewer.layers[self.held_out_lr.stem]
        compare._hr_layer.value = self.viewer.layers[self.held_out_hr.stem]
        compare._pretrained.value = [X4PLUS, COMPACT]
        compare._runs.value = [str(self.run(compare))]
        compare._error_maps.value = True
        seconds = _click(compare, compare._measure_button)
        print(f"compare & measure: {seconds:.0f} s; {compare._status.value}")
        _print_table(compare._table)
        # The widget gives all error maps one contrast range. The pretrained model's errors above the
        # fine-tuned model's; the other maps stay in the layer list.
        hr, run = self.held_out_hr.stem, compare._session.runs[-1].name
        self.grid([self.viewer.layers[f"error % {hr} ({method})"] for method in (X4PLUS, run)], shape=(2, 1))
        self.save("measure.png")

    @staticmethod
    def run(widget) -> Path:
        """The model of the fine-tuning run of this session."""
        runs = widget._session.runs
        if not runs:
            raise RuntimeError("fine-tuning left no model")
        return runs[-1].model_path


def main() -> int:
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="microdisks-") as folder:
        tour = Tour(Path(folder))
        tour.select_and_crop()
        tour.fine_tune()
        tour.super_resolve()
        tour.preview()
        tour.measure()
        tour.viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
