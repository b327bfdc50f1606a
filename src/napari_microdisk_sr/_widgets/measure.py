"""The "Compare & measure" dock widget: PSNR/SSIM of upscaling methods against high-resolution references.

The references are read here on the main thread (image layers, a crop set of the session, or a paired
low/high-resolution layer pair) and scored by :func:`~..core.metrics.evaluate` in a worker. The per-image and
mean table, with gains over bicubic and over the pretrained model, is shown in a sortable table whose rows
centre the viewer on their image; the CSV and JSON go beside the originals. Error maps share one colour
scale per measurement, in percent of the data range. The LR-consistency column needs no reference: each
output, degraded back, against its LR image. With "per-disk table", the disks of each reference are
measured on every output (:mod:`~..core.disk_measures`) into a second table, whose rows centre the viewer on
their disk, and ``<table>_disks.csv``.
"""

import dataclasses
import enum
import math
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, ProgressBar, PushButton, Select
from napari.layers import Image
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QTableWidgetItem

from ..core import metrics
from ..core.comparison_table import BICUBIC, SCALE, EvalResult
from ..core.crops import crop_boxes
from ..core.degradation import DEGRADATIONS
from ..core.errors import InputError, MicrodiskSRError
from ..core.io import ensure_writable_dir
from ..core.models import DEFAULT_MODEL, REGISTRY
from ..core.outputs import metrics_path_for, unique_name
from ._controls import (
    CropSetChoice,
    device_row,
    folder_edit,
    hint_bit_depth,
    intensity_box,
    refuse,
    show_rows,
    status_line,
    weights_edit,
)
from ._hosted import hosted
from ._jobs import JobRunner
from ._layers import layer_choices, layer_named, layer_path
from ._scroll import make_scrollable
from ._session import session_for
from ._table import NumberItem, fill_sortable, results_table

if TYPE_CHECKING:
    import napari

_PRETRAINED = f"the pretrained model (a fine-tuned run's own parent, measured too; else {metrics.PRETRAINED})"
_SCORES = (  # header, key of the result rows, format, tooltip
    ("PSNR", "psnr", "{:.2f}", "PSNR against the reference (dB)"),
    ("SSIM", "ssim", "{:.4f}", "structural similarity with the reference (-1 to 1)"),
    ("Δ bicubic", "gain_vs_bicubic_db", "{:+.2f}", "PSNR gain over bicubic (dB)"),
    ("%", "gain_vs_bicubic_pct", "{:+.1f}", "PSNR gain over bicubic (% of its PSNR)"),
    ("Δ pretrained", "gain_vs_pretrained_db", "{:+.2f}", f"PSNR gain over {_PRETRAINED} (dB)"),
    ("%", "gain_vs_pretrained_pct", "{:+.1f}", f"PSNR gain over {_PRETRAINED} (% of its PSNR)"),
    (
        "LR cons.",
        "lr_consistency_psnr",
        "{:.2f}",
        "LR consistency (dB): the output degraded back (4x4 area averaging) against its LR image; no\n"
        "reference needed. Much lower than the other methods': the network added or removed something.",
    ),
)
_DISK_SCORES = (  # header, key of the per-disk rows, format, tooltip
    ("disk", "disk", "{:d}", "the disk's number in its image"),
    ("r", "r", "{:.2f}", "radius measured on the output (HR pixels)"),
    ("r error", "r_error", "{:+.2f}", "radius on the output minus radius on the reference (HR pixels)"),
    ("edge error", "edge_width_error", "{:+.2f}", "10-90 % edge width on the output minus the reference's"),
    ("PSNR", "psnr", "{:.2f}", "PSNR in the disk's box (dB)"),
)
_UNSCORED = {  # why a gain's cell is empty, by its reference method
    "gain_vs_bicubic": f"empty: tick '{BICUBIC}' to measure this gain",
    "gain_vs_pretrained": f"empty: choose {metrics.PRETRAINED} under Pretrained to measure this gain",
}
_RUN_FILE_STEM = "model"  # a fine-tuning run's weights file is <run folder>/model.pth


_ERROR_MAP_KEY = "microdisk_sr_error_map"
"""Marks the error-map layers this widget adds, which measuring again replaces."""
_OUTPUT_KEYS = (_ERROR_MAP_KEY, "microdisk_sr")  # metadata of the plugin's own outputs (error maps, x4)


class _Reference(enum.Enum):
    """What the high-resolution references are."""

    LAYERS = "image layers (low resolution simulated)"
    CROP_SET = "crop set of this session (low resolution simulated)"
    PAIR = "a low/high-resolution layer pair"


@dataclasses.dataclass(frozen=True)
class _Place:
    """Where an image of the table lies in the viewer: a layer, and a pixel box of it (None: all of it)."""

    layer: str
    box: "tuple[int, int, int, int] | None" = None


@dataclasses.dataclass(frozen=True, eq=False)
class _References:
    """The references as read on the main thread, where they lie, and where their table goes."""

    hr_images: list[np.ndarray]
    lr_images: "list[np.ndarray] | None"  # None: simulated from the HR images
    names: list[str]
    places: dict[str, _Place]  # by image name, where known
    crops_folder: "Path | None" = None
    source_path: "Path | None" = None


@dataclasses.dataclass(frozen=True, eq=False)
class _Measured:
    """A finished evaluation and the CSV it was saved to (None when it has no folder)."""

    result: EvalResult
    csv_path: "Path | None"


class MeasureWidget(Container):
    """Score bicubic, pretrained and fine-tuned models on high-resolution references, in a sortable table."""

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__(labels=False)
        self._viewer = viewer
        self._session = session_for(viewer)
        self._jobs = JobRunner(self.native, name="Compare & measure")
        self._places: dict[str, _Place] = {}  # of the table's images
        self._labels: dict[str, str] = {}  # short names of the table's methods

        self._reference = ComboBox(label="Reference", choices=[(r.value, r) for r in _Reference])
        self._hr_layers = Select(label="High-res. layers", choices=layer_choices(viewer, Image))
        self._crop_set = CropSetChoice(self._session)
        self._lr_layer = ComboBox(label="Low-res. layer", choices=layer_choices(viewer, Image))
        self._hr_layer = ComboBox(label="High-res. layer", choices=layer_choices(viewer, Image))
        self._degradation = ComboBox(label="Degradation", choices=DEGRADATIONS)
        self._intensity = intensity_box(model_default=True)
        self._bicubic = CheckBox(text="bicubic", value=True)
        self._pretrained = Select(label="Pretrained", choices=list(REGISTRY), value=[DEFAULT_MODEL])
        self._runs = Select(label="Fine-tuned runs", choices=self._run_choices)
        self._files = weights_edit("Model files", multiple=True)
        self._device, self._device_info = device_row()
        self._error_maps = CheckBox(text="add error-map layers", value=False)
        self._per_disk = CheckBox(
            text="per-disk table",
            value=False,
            tooltip="Detect the disks of each reference and measure each one on every output: radius,\n"
            "edge width and PSNR; a second table and <table>_disks.csv beside the metrics.",
        )
        self._output = folder_edit(
            "Output folder",
            tooltip="Where metrics.csv goes. Empty: the crops folder, or the <image>_microdisk_sr folder of\n"
            "the high-resolution image file.",
        )
        self._form = Container(
            widgets=[
                self._reference, self._hr_layers, self._crop_set, self._lr_layer, self._hr_layer,
                self._degradation, self._intensity, self._bicubic, self._pretrained, self._runs, self._files,
                self._device, self._device_info, self._error_maps, self._per_disk, self._output,
            ]
        )  # fmt: skip
        self._measure_button = PushButton(text="Measure")
        self._stop_button = PushButton(text="Stop", enabled=False)
        buttons = Container(
            widgets=[self._measure_button, self._stop_button], layout="horizontal", labels=False
        )
        self._progress = ProgressBar(value=0, min=0, max=1)
        self._status = status_line("Choose references and methods, then Measure.")
        self._table = results_table(
            [("image", ""), ("method", ""), *((h, tip) for h, _key, _fmt, tip in _SCORES)], rows=7
        )
        self._disk_table = results_table(
            [("image", ""), ("method", ""), *((h, tip) for h, _key, _fmt, tip in _DISK_SCORES)], rows=5
        )
        self._disk_host = hosted(self._disk_table)
        self._disk_host.visible = False  # shown once filled
        self._disk_rows: list[dict[str, Any]] = []
        self.extend([self._form, buttons, self._progress, self._status, hosted(self._table), self._disk_host])
        make_scrollable(self)

        self._reference.changed.connect(self._update_fields)
        self._measure_button.changed.connect(self._start)
        self._stop_button.changed.connect(self._stop)
        self._table.itemSelectionChanged.connect(self._centre_on_selection)
        self._disk_table.itemSelectionChanged.connect(self._centre_on_disk)
        self._session.runs_changed.connect(self._on_runs_changed)
        show_rows(self._hr_layers, 4)
        show_rows(self._pretrained, 2)
        show_rows(self._runs, 3)
        self._update_fields()
        self._on_runs_changed()  # a widget opened after a run: the newest run is chosen too

    # -- choices ------------------------------------------------------------------------------------------

    def _run_choices(self, _widget: Any) -> list[tuple[str, str]]:
        return [(run.name, str(run.model_path)) for run in self._session.runs]

    def _on_runs_changed(self) -> None:
        chosen = list(self._runs.value)
        self._runs.reset_choices()
        if self._session.runs:
            newest = str(self._session.runs[-1].model_path)
            self._runs.value = [v for v in (*chosen, newest) if v in self._runs.choices]

    def _update_fields(self) -> None:
        reference = self._reference.value
        self._hr_layers.visible = reference is _Reference.LAYERS
        self._crop_set.visible = reference is _Reference.CROP_SET
        self._lr_layer.visible = self._hr_layer.visible = reference is _Reference.PAIR
        self._degradation.visible = reference is not _Reference.PAIR
        if reference is _Reference.PAIR and self._lr_layer.value is self._hr_layer.value:
            self._pick_pair()

    def _pick_pair(self) -> None:
        """Start the pair from two layers whose sizes are in a x4 relation, not outputs of this plugin.

        Of several such pairs, the largest; without one, the smallest and the largest of the layers that are
        not outputs (or of all layers). One layer cannot be both.
        """
        layers = [layer for layer in self._lr_layer.choices if layer is not None]
        inputs = [layer for layer in layers if not any(key in layer.metadata for key in _OUTPUT_KEYS)]
        pairs = [
            (lr, hr)
            for lr in inputs
            for hr in inputs
            if tuple(n * SCALE for n in _plane_shape(lr)) == _plane_shape(hr)
        ]
        if pairs:
            self._lr_layer.value, self._hr_layer.value = max(pairs, key=lambda pair: _area(pair[1]))
            return
        by_size = sorted(inputs if len(inputs) >= 2 else layers, key=_area)
        if len(by_size) >= 2:
            self._lr_layer.value, self._hr_layer.value = by_size[0], by_size[-1]

    # -- running ------------------------------------------------------------------------------------------

    def _methods(self) -> dict[str, str]:
        """The methods to compare (as :func:`~..core.metrics.evaluate` takes them) and their short names, with
        the parents of the chosen runs."""
        labels = {BICUBIC: BICUBIC} if self._bicubic.value else {}
        labels |= {name: name for name in self._pretrained.value}
        labels |= {
            str(run.model_path): run.name
            for run in self._session.runs
            if str(run.model_path) in self._runs.value
        }
        for path in map(Path, self._files.value or ()):
            taken = {label for method, label in labels.items() if method != str(path)}
            labels[str(path)] = unique_name(_file_label(path), taken)
        if not labels:
            raise InputError(
                "choose at least one method to compare: bicubic, a pretrained model, a run or a file"
            )
        for parent in metrics.with_parents(list(labels))[len(labels) :]:  # each run's own pretrained model
            labels[parent] = unique_name(f"{_file_label(Path(parent))} (parent)", set(labels.values()))
        return labels

    def _references(self) -> _References:
        reference = self._reference.value
        if reference is _Reference.CROP_SET:
            ref = self._crop_set.chosen()
            names = [f"{ref.name}:{i + 1:03d}" for i in range(len(ref.images))]
            boxes = list(ref.boxes) or (crop_boxes(ref.folder) if ref.folder is not None else [])
            if len(boxes) != len(names):  # the crops' boxes are unknown: their rows centre nowhere
                boxes = [None] * len(names)
            places = {
                n: _Place(ref.source_layer, b) for n, b in zip(names, boxes, strict=True) if b is not None
            }
            source = layer_path(layer_named(self._viewer, ref.source_layer))
            return _References(list(ref.images), None, names, places, ref.folder, source)
        layers = list(self._hr_layers.value) if reference is _Reference.LAYERS else [self._hr_layer.value]
        if not layers or None in layers:
            raise InputError("choose the high-resolution image layer(s) to compare against")
        lr_images = None
        if reference is _Reference.PAIR:
            lr = self._lr_layer.value
            if lr is None or lr is layers[0]:
                raise InputError(
                    "choose two different layers: the low-resolution one and its high-resolution truth"
                )
            lr_images = [_plane(lr)]
        names = [layer.name for layer in layers]
        places = {name: _Place(name) for name in names}
        return _References(
            [_plane(layer) for layer in layers], lr_images, names, places, source_path=layer_path(layers[0])
        )

    def _start(self) -> None:
        try:
            labels = self._methods()
            refs = self._references()
        except MicrodiskSRError as exc:
            refuse(self._status, str(exc))
            return
        try:
            csv_path = metrics_path_for(
                output_dir=self._output.value, crops_folder=refs.crops_folder, source_path=refs.source_path
            )
        except MicrodiskSRError as exc:
            show_warning(f"{exc}; the table is shown but not saved")
            csv_path = None
        options = {
            "lr_images": refs.lr_images,
            "degradation": self._degradation.value,
            "names": refs.names,
            "device": self._device.value,
            "error_maps": self._error_maps.value,
            "intensity": self._intensity.value,
            "per_disk": self._per_disk.value,
        }
        hint_bit_depth(self._intensity.value, dict(zip(refs.names, refs.hr_images, strict=True)))
        try:
            started = self._jobs.start(
                lambda stop: _measure(
                    metrics.evaluate(refs.hr_images, list(labels), stop=stop, **options), csv_path
                ),
                on_event=lambda event: self._on_event(event, labels),
                on_finished=lambda measured: self._on_finished(measured, labels, refs.places),
                on_failed=self._on_failed,
            )
        except MicrodiskSRError as exc:
            refuse(self._status, str(exc))
            return
        if started:
            self._set_running(True)
            self._progress.value = 0
            self._status.value = f"measuring {len(labels)} method(s) on {len(refs.names)} image(s)..."

    def _stop(self) -> None:
        self._jobs.stop()
        self._stop_button.enabled = False
        self._status.value = "stopping..."

    def _set_running(self, running: bool) -> None:
        self._form.enabled = not running
        self._measure_button.enabled = not running
        self._stop_button.enabled = running

    def _on_event(self, event: metrics.EvalEvent, labels: dict[str, str]) -> None:
        self._progress.max = event.total
        self._progress.value = event.done
        tiles = f" (tile {event.tiles_done}/{event.tiles_total})" if event.tiles_total else ""
        self._status.value = f"{event.done}/{event.total}: {event.image}, {labels[event.method]}{tiles}"

    def _on_finished(
        self, measured: "_Measured | None", labels: dict[str, str], places: dict[str, _Place]
    ) -> None:
        self._set_running(False)
        if measured is None:
            self._status.value = "stopped: nothing measured"
            return
        self._labels, self._places = labels, places
        self._fill_table(measured.result.rows)
        self._fill_disk_table(measured.result.disk_rows)
        top = self._add_error_maps(measured.result.error_maps)
        rows = len(measured.result.rows)
        maps = ""
        if top:
            maps = f"; error maps: |SR - reference| in % of the data range, one colour scale 0-{top:.3g} %"
        if measured.csv_path is None:
            self._status.value = f"done: {rows} rows (not saved: no output folder){maps}"
            return
        where = measured.csv_path
        self._status.value = f"done: {rows} rows, saved as {where.parent.name}/{where.name}{maps}"
        show_info(f"metrics saved to {where}")

    def _on_failed(self, message: str) -> None:
        self._set_running(False)
        self._status.value = f"failed: {message}"

    # -- results ------------------------------------------------------------------------------------------

    def _fill_table(self, rows: list[dict[str, Any]]) -> None:
        """The rows in the order measured (each image's, then the means); a header click sorts them."""
        items = []
        for row in rows:
            method = QTableWidgetItem(self._labels[row["method"]])
            method.setToolTip(row["method"])
            items.append([QTableWidgetItem(str(row["image"])), method])
            for _header, key, fmt, _tooltip in _SCORES:
                cell = NumberItem(row[key], fmt)
                if row[key] is None:
                    cell.setToolTip(_UNSCORED[key.rsplit("_", 1)[0]])
                items[-1].append(cell)
        fill_sortable(self._table, items)

    def _fill_disk_table(self, rows: list[dict[str, Any]]) -> None:
        """The per-disk rows (hidden when not measured); the row's index is kept to centre on its disk."""
        self._disk_rows = rows
        self._disk_host.visible = bool(rows)
        items = []
        for index, row in enumerate(rows):
            image = QTableWidgetItem(str(row["image"]))
            image.setData(Qt.ItemDataRole.UserRole, index)
            items.append([image, QTableWidgetItem(self._labels[row["method"]])])
            items[-1] += [NumberItem(row[key], fmt) for _header, key, fmt, _tooltip in _DISK_SCORES]
        fill_sortable(self._disk_table, items)

    def _add_error_maps(self, maps: dict[tuple[str, str], np.ndarray]) -> float:
        """Add the error maps as layers in percent of the data range, on one shared colour scale.

        Returns
        -------
        float
            The top of the shared scale (0 when there are no maps). The topmost map shows the colour bar.
        """
        if not maps:
            return 0.0
        top = max(100.0 * float(error.max()) for error in maps.values()) or 1.0
        layer = None
        for (image, method), error in maps.items():
            place = self._places.get(image)
            layer = None if place is None else layer_named(self._viewer, place.layer)
            geometry = {}
            if layer is not None:
                origin = (0, 0) if place.box is None else place.box[:2]
                geometry = {"scale": layer.scale[-2:], "translate": layer.data_to_world(origin)[-2:]}
            name = f"error % {image} ({self._labels[method]})"  # % of the data range
            earlier = layer_named(self._viewer, name)
            if earlier is not None and earlier.metadata.get(_ERROR_MAP_KEY):  # measured again: replaced
                self._viewer.layers.remove(earlier)
            layer = self._viewer.add_image(
                100.0 * error,
                name=name,
                colormap="magma",
                contrast_limits=(0.0, top),
                metadata={_ERROR_MAP_KEY: True},
                **geometry,
            )
        layer.colorbar.visible = True
        return top

    def _centre_on_selection(self) -> None:
        selected = self._table.selectedItems()
        if not selected:
            return
        place = self._places.get(self._table.item(selected[0].row(), 0).text())
        layer = None if place is None else layer_named(self._viewer, place.layer)
        if layer is None:
            return
        if place.box is None:
            y0, x0, (y1, x1) = 0, 0, _plane_shape(layer)
        else:
            y0, x0, y1, x1 = place.box
        self._centre(layer, ((y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2))

    def _centre_on_disk(self) -> None:
        """Centre the viewer on the selected row's disk, in its reference's layer (or crop's box)."""
        selected = self._disk_table.selectedItems()
        if not selected:
            return
        row = self._disk_rows[self._disk_table.item(selected[0].row(), 0).data(Qt.ItemDataRole.UserRole)]
        place = self._places.get(row["image"])
        layer = None if place is None else layer_named(self._viewer, place.layer)
        if layer is None or row["cy"] is None:
            return
        y0, x0 = (0, 0) if place.box is None else place.box[:2]
        self._centre(layer, (y0 + row["cy"], x0 + row["cx"]))

    def _centre(self, layer: Image, point: tuple[float, float]) -> None:
        self._viewer.camera.center = layer.data_to_world(point)[-2:]
        self._viewer.layers.selection.active = layer


def _measure(
    job: Generator[metrics.EvalEvent, None, Any], csv_path: "Path | None"
) -> Generator[Any, None, Any]:
    """The job: run the evaluation, then save its table as CSV and JSON (and the per-disk CSV); None when
    stopped."""
    if csv_path is not None:
        ensure_writable_dir(csv_path.parent)
    result = yield from job
    if result is None:
        return None
    if csv_path is not None:
        csv_path = result.save(csv_path)
        if result.disk_rows:
            result.to_disk_csv(csv_path.with_name(f"{csv_path.stem}_disks.csv"))
    return _Measured(result, csv_path)


def _plane_shape(layer: Image) -> tuple[int, ...]:
    """Height and width of a layer's images."""
    return tuple(layer.data.shape[-3:-1] if layer.rgb else layer.data.shape[-2:])


def _area(layer: Image) -> int:
    return math.prod(_plane_shape(layer))


def _file_label(path: Path) -> str:
    """A model file's name in the table: its run's folder for a run's weights, else the file's stem."""
    return path.parent.name if path.stem == _RUN_FILE_STEM and path.parent.name else path.stem


def _plane(layer: Image) -> np.ndarray:
    if layer.multiscale or layer.ndim != 2:
        raise InputError(f"compare 2D image layers; {layer.name!r} is a stack or a pyramid")
    return np.asarray(layer.data)
