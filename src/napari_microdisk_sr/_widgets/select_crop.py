"""The "Select & crop microdisks" dock widget: detect disks, let the user edit them, crop them into a set.

Detection puts one editable shape per disk into a Shapes layer ``<image> disks`` placed over the image in
world coordinates, with each disk's score as a feature. The chosen Shapes layer's disks are listed in a
table (radius, score; selecting a row selects the shape) and counted on the canvas, as they are edited.
Cropping takes the bounding box of every shape in the chosen Shapes layer (detected,
moved, resized or drawn by hand), cuts those boxes out of the image, adds the crops to the session for the
Fine-tune widget, and writes them as a dataset folder when there is a place for it.
"""

import math
import weakref
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    PushButton,
)
from napari.layers import Image, Shapes
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence, QShortcut

from ..core.crops import Crop, crop_disks, write_crop_set
from ..core.detect import DEFAULT_MIN_RADIUS, MIN_RADIUS, POLARITIES, Disk, detect_disks
from ..core.io import output_dir_for
from ..core.outputs import safe_name, unique_name
from ..core.progress import StopFlag
from ..core.shapes import disk_outline
from ._controls import folder_edit, status_line
from ._hosted import hosted
from ._jobs import JobRunner
from ._layers import layer_choices, layer_named, layer_path, shape_boxes
from ._scroll import make_scrollable
from ._session import CropSetRef, session_for
from ._table import NumberItem, fill_sortable, results_table

if TYPE_CHECKING:
    import napari

_SHAPE_TYPES = {"circles": "ellipse", "squares": "rectangle"}
_CROPS_FOLDER = "crops"
_EDGE_COLOR = "yellow"
_EDGE_WIDTH = 0.5  # image pixels: the ring is drawn at least this thin ...
_EDGE_SCREEN_WIDTH = 1.5  # ... or this many screen pixels at the zoom of the detection, so the edge shows
_POLARITY_NAMES = {"either": "dark or bright", "dark": "dark", "bright": "bright"}
_AUTO = "auto"
_UNDER_WAY = {"adding", "removing", "changing"}  # actions of a Shapes data event sent before the edit
_SCORE = "score"  # the Shapes layer's feature that holds each detected disk's score
_DISK_COLUMNS = (
    ("#", "the shape's number in its layer"),
    ("radius (px)", "half the shape's mean width, in pixels of its layer (the image's, for detected disks)"),
    ("score", "detection confidence (rim contrast x fraction of the rim found); empty for drawn shapes"),
)
_RADIUS_SLACK = 0.25  # the range filled in after an automatic detection spans the radii found +- 25 %


class SelectCropWidget(Container):
    """Detect microdisks in an image layer, edit them as shapes, and crop them into a training set."""

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__()
        self._viewer = viewer
        self._session = session_for(viewer)
        self._jobs = JobRunner(self.native, name="Select & crop microdisks")
        self._detected: weakref.WeakKeyDictionary[Shapes, list[np.ndarray]] = weakref.WeakKeyDictionary()

        self._image = ComboBox(label="Image", choices=layer_choices(viewer, Image))
        self._polarity = ComboBox(
            label="Disks are",
            choices=[(_POLARITY_NAMES[p], p) for p in POLARITIES],
            value=POLARITIES[0],
            tooltip="dark: dark bodies, e.g. bright-rimmed microdisks under transmitted light; bright: "
            "bright disks on a darker ground (reflected light, fluorescence); dark or bright: both.",
        )
        self._auto_radius = CheckBox(text="automatic radius range", value=True)
        self._min_radius = FloatSpinBox(
            label="Min radius (px)", value=DEFAULT_MIN_RADIUS, min=MIN_RADIUS, max=10_000
        )
        self._max_radius = FloatSpinBox(label="Max radius (px)", value=50.0, min=MIN_RADIUS, max=10_000)
        self._manual_range = (self._min_radius.value, self._max_radius.value)
        self._sensitivity = FloatSlider(
            label="Sensitivity",
            value=0.5,
            min=0.0,
            max=1.0,
            step=0.05,
            tooltip="0: only clear, complete disks; 1: faint or partly hidden ones too, and more false hits.",
        )
        self._shape_type = ComboBox(label="Draw as", choices=list(_SHAPE_TYPES), value="circles")
        self._detect = PushButton(text="Detect disks")
        self._shapes = ComboBox(label="Disks layer", choices=layer_choices(viewer, Shapes))
        self._disks = results_table(_DISK_COLUMNS, rows=5)
        self._listed: Shapes | None = None  # the layer whose disks the table lists
        QShortcut(
            QKeySequence.StandardKey.Delete,
            self._disks,
            self._delete_shape,
            context=Qt.ShortcutContext.WidgetShortcut,
        )
        self._margin = FloatSpinBox(
            label="Margin (× radius)",
            value=0.25,
            min=0.0,
            max=2.0,
            step=0.05,
            tooltip="Border added around each shape, as a fraction of its radius (half-size).",
        )
        self._skip_border = CheckBox(text="skip disks cut by the image border", value=True)
        self._folder = folder_edit(
            "Save under",
            tooltip="The crop set folder the crops are added to. Default: <image>_microdisk_sr/crops beside "
            "the image file; an image that came from no file keeps its crops in memory.",
        )
        self._crop = PushButton(text="Crop")
        self._status = status_line(
            "Choose an image, Detect disks (or draw shapes), then Crop.", label="Status"
        )

        self._auto_radius.changed.connect(self._on_auto_radius)
        self._on_auto_radius(self._auto_radius.value)
        self._shapes.changed.connect(self._list_disks)
        self._disks.itemSelectionChanged.connect(self._select_shape)
        self._detect.changed.connect(self._start_detection)
        self._crop.changed.connect(self._start_cropping)
        self.extend(
            [
                self._image,
                self._polarity,
                self._auto_radius,
                self._min_radius,
                self._max_radius,
                self._sensitivity,
                self._shape_type,
                self._detect,
                self._shapes,
                hosted(self._disks),
                self._margin,
                self._skip_border,
                self._folder,
                self._crop,
                self._status,
            ]
        )
        make_scrollable(self)

    def _on_auto_radius(self, auto: bool) -> None:
        """Grey the radius boxes out and show "auto" in them, or give back the range last set or suggested."""
        boxes = (self._min_radius, self._max_radius)
        if auto and all(box.enabled for box in boxes):
            self._manual_range = tuple(box.value for box in boxes)
        for box, value in zip(boxes, self._manual_range, strict=True):
            box.enabled = not auto
            box.native.setSpecialValueText(_AUTO if auto else "")  # shown while the value is the minimum
            box.value = box.min if auto else value

    def _set_running(self, running: bool) -> None:
        self._detect.enabled = self._crop.enabled = not running

    def _chosen_image(self) -> "Image | None":
        layer = self._image.value
        if layer is None:
            show_warning("no image layer: open an image (or File > Open Sample > Microdisk scene) first")
            return None
        if layer.multiscale:
            show_warning(f"{layer.name!r} is a multiscale (pyramid) layer; open the full-size image instead")
            return None
        return layer

    def _current_plane(self, layer: Image) -> np.ndarray:
        """The 2D (gray or RGB) plane of ``layer`` on display, read here on the main thread."""
        lead = layer.ndim - 2
        if lead == 0:
            return np.asarray(layer.data)
        position = layer.world_to_data(self._viewer.dims.point)[:lead]
        index = tuple(
            int(np.clip(round(p), 0, n - 1)) for p, n in zip(position, layer.data.shape[:lead], strict=True)
        )
        return np.asarray(layer.data[index])

    # -- detection ---------------------------------------------------------------------------------------

    def _start_detection(self) -> None:
        layer = self._chosen_image()
        if layer is None:
            return
        plane = self._current_plane(layer)
        options = {
            "radius_range": (
                None if self._auto_radius.value else (self._min_radius.value, self._max_radius.value)
            ),
            "sensitivity": self._sensitivity.value,
            "polarity": self._polarity.value,
        }
        target = (layer.name, tuple(layer.scale[-2:]), tuple(layer.translate[-2:]), tuple(layer.units[-2:]))
        if self._jobs.start(
            lambda stop: _detect(plane, options, stop),
            on_event=self._show_status,
            on_finished=lambda disks: self._show_disks(disks, *target),
            on_failed=self._on_failed,
        ):
            self._set_running(True)

    def _show_disks(
        self, disks: "list[Disk] | None", name: str, scale: tuple, translate: tuple, units: tuple
    ) -> None:
        self._set_running(False)
        if disks is None or self._jobs.closed:  # closed while detecting (it may have finished just before)
            self._status.value = "detection stopped: no shapes added"
            return
        if layer_named(self._viewer, name) is None:
            self._status.value = f"{name!r} was removed during the detection: no shapes added"
            return
        if not disks:
            kind = "" if self._polarity.value == "either" else f"{self._polarity.value} "
            self._status.value = f"no {kind}disk found in {name!r}"
            show_warning(
                f"no {kind}disk found in {name!r}: untick 'automatic radius range' and set the disks' radius "
                "range (min/max px), raise the sensitivity, or check 'Disks are'"
            )
            return
        layer_name = f"{name} disks"
        earlier = [
            layer for layer in self._viewer.layers if layer.name == layer_name and isinstance(layer, Shapes)
        ]
        for layer in earlier:  # detecting again replaces the disks found before, unless edited by hand
            if self._untouched(layer):
                self._viewer.layers.remove(layer)
            else:
                show_info(f"{layer.name!r} was edited by hand and is kept; the new detection is a new layer")
        radii = [d.r for d in disks]
        if self._auto_radius.value:  # a starting point for the user who narrows the range by hand
            self._manual_range = (
                max(MIN_RADIUS, math.floor(min(radii) * (1 - _RADIUS_SLACK))),
                math.ceil(max(radii) * (1 + _RADIUS_SLACK)),
            )
        screen_pixel = 1.0 / (self._viewer.camera.zoom * float(np.mean(np.abs(scale))))  # in image pixels
        shapes = self._viewer.add_shapes(
            [disk_outline(disk) for disk in disks],
            shape_type=_SHAPE_TYPES[self._shape_type.value],
            name=layer_name,
            scale=scale,
            translate=translate,
            units=units,
            edge_color=_EDGE_COLOR,
            edge_width=max(_EDGE_WIDTH, _EDGE_SCREEN_WIDTH * screen_pixel),
            face_color="transparent",
            features={_SCORE: [d.score for d in disks]},
            feature_defaults={_SCORE: math.nan},  # shapes drawn by hand have no score
        )
        self._detected[_unwrapped(shapes)] = [np.array(outline, copy=True) for outline in shapes.data]
        shapes.mode = "select"
        self._viewer.layers.selection.active = shapes
        self._shapes.value = shapes
        self._status.value = (
            f"{len(disks)} disks in {name!r} (radius {min(radii):.1f}-{max(radii):.1f} px): check the list "
            "(a row selects its shape, the Delete key removes it), edit the shapes, then Crop"
        )

    # -- the list of disks -------------------------------------------------------------------------------

    def _list_disks(self) -> None:
        """List the chosen Shapes layer's shapes, and follow its edits from now on."""
        layer = self._shapes.value
        layer = None if layer is None else _unwrapped(layer)
        if layer is not self._listed:
            if self._listed is not None:
                self._listed.events.data.disconnect(self._on_edit)
                self._listed.events.visible.disconnect(self._show_count)
            if layer is not None:
                layer.events.data.connect(self._on_edit)
                layer.events.visible.connect(self._show_count)
            self._listed = layer
        self._fill_disks()

    def _on_edit(self, event: Any) -> None:
        if str(getattr(event, "action", "")) not in _UNDER_WAY:  # the edit is done: list the new shapes
            self._fill_disks()

    def _fill_disks(self) -> None:
        """The table and the canvas's count of the listed layer's shapes: number, radius, score."""
        layer = self._listed
        if layer is None or layer_named(self._viewer, layer.name) is None:
            fill_sortable(self._disks, [])
            self._viewer.text_overlay.visible = False
            return
        scores = layer.features[_SCORE] if _SCORE in layer.features else [math.nan] * len(layer.data)
        rows = []
        for i, (vertices, score) in enumerate(zip(layer.data, scores, strict=True)):
            extent = np.ptp(np.asarray(vertices)[:, -2:], axis=0)
            number = NumberItem(i + 1, "{:d}")
            number.setData(Qt.ItemDataRole.UserRole, i)
            rows.append(
                [
                    number,
                    NumberItem(float(extent.mean()) / 2, "{:.1f}"),
                    NumberItem(None if math.isnan(score) else float(score), "{:.3f}"),
                ]
            )
        fill_sortable(self._disks, rows)
        self._viewer.text_overlay.text = f"{layer.name}: {len(rows)} disk{'' if len(rows) == 1 else 's'}"
        self._show_count()

    def _show_count(self, event: Any = None) -> None:
        """The canvas shows the listed layer's disk count while that layer is shown."""
        listed = self._listed
        self._viewer.text_overlay.visible = listed is not None and bool(listed.visible)

    def _select_shape(self) -> None:
        """Select the shape of the table's selected row in its layer, ready to be moved or deleted."""
        layer = self._listed
        selected = self._disks.selectedItems()
        if layer is None or not selected or layer_named(self._viewer, layer.name) is None:
            return
        index = self._disks.item(selected[0].row(), 0).data(Qt.ItemDataRole.UserRole)
        layer.mode = "select"
        layer.selected_data = {index}
        self._viewer.layers.selection.active = layer

    def _delete_shape(self) -> None:
        """Remove the shape of the table's selected row (the Delete key in the table)."""
        if self._listed is not None and self._disks.selectedItems():
            self._listed.remove_selected()

    def _untouched(self, layer: Shapes) -> bool:
        """Whether ``layer`` still holds exactly the shapes this widget's last detection put there."""
        detected = self._detected.get(_unwrapped(layer))
        return (
            detected is not None
            and len(detected) == len(layer.data)
            and all(np.array_equal(a, b) for a, b in zip(detected, layer.data, strict=True))
        )

    # -- cropping ----------------------------------------------------------------------------------------

    def _start_cropping(self) -> None:
        layer = self._chosen_image()
        if layer is None:
            return
        shapes = self._shapes.value
        if shapes is None or len(shapes.data) == 0:
            show_warning("no shapes to crop: Detect disks, or draw circles or rectangles in a Shapes layer")
            return
        plane = self._current_plane(layer)
        skip_border = self._skip_border.value
        boxes = shape_boxes(shapes, layer, plane.shape, margin=self._margin.value, skip_border=skip_border)
        skipped = len(shapes.data) - len(boxes)
        if not boxes:
            hint = "; untick 'skip disks cut by the image border' to keep those on it" if skip_border else ""
            show_warning(f"no shape of {shapes.name!r} lies inside {layer.name!r}{hint}")
            return
        path = layer_path(layer)
        folder = self._folder.value or (output_dir_for(path) / _CROPS_FOLDER if path else None)
        name, stem = layer.name, safe_name(path.stem if path else layer.name)
        source = str(path) if path else name
        if self._jobs.start(
            lambda stop: _crop(plane, boxes, source=source, stem=stem, folder=folder, stop=stop),
            on_event=self._show_status,
            on_finished=lambda cropped: self._add_crop_set(cropped, folder, name=name, skipped=skipped),
            on_failed=self._on_failed,
        ):
            self._set_running(True)

    def _add_crop_set(
        self, cropped: "tuple[list[Crop], int] | None", folder: "Path | None", *, name: str, skipped: int
    ) -> None:
        self._set_running(False)
        if cropped is None:
            self._status.value = "cropping stopped: no crop set made"
            return
        crops, written = cropped
        set_name = unique_name(f"{name} crops", {crop_set.name for crop_set in self._session.crop_sets})
        self._session.add_crop_set(
            CropSetRef(
                set_name,
                tuple(crop.image for crop in crops),
                folder=folder,
                source_layer=name,
                boxes=tuple(crop.box for crop in crops),
            )
        )
        held = f" ({len(crops) - written} were there already)" if written < len(crops) else ""
        where = (
            f"{written} added to {folder}{held}"
            if folder
            else "in memory only: pick a folder under 'Save under' to save them"
        )
        left_out = f"; {skipped} shape(s) on the border or outside left out" if skipped else ""
        self._status.value = f"{len(crops)} crops in {set_name!r}, {where}{left_out}"

    def _show_status(self, text: str) -> None:
        self._status.value = text

    def _on_failed(self, message: str) -> None:
        self._set_running(False)
        self._status.value = f"failed: {message}"


def _detect(
    plane: np.ndarray, options: dict[str, Any], stop: StopFlag
) -> Generator[str, None, "list[Disk] | None"]:
    """Detection as a job: one status event, then the disks (None if stopped meanwhile).

    ``options`` are :func:`~..core.detect.detect_disks`'s keywords.
    """
    yield "detecting disks..."
    disks = detect_disks(plane, **options)
    return None if stop.is_set() else disks


def _crop(
    plane: np.ndarray,
    boxes: list[tuple[int, int, int, int]],
    *,
    source: str,
    stem: str,
    folder: "Path | None",
    stop: StopFlag,
) -> Generator[str, None, "tuple[list[Crop], int] | None"]:
    """Cropping as a job: cut the boxes out of ``plane`` and add them to the crop set in ``folder``.

    Returns the crops and how many of them were written (not those ``folder`` held already), or None if
    stopped before writing.
    """
    yield f"cropping {len(boxes)} disks..."
    crops = crop_disks(plane, boxes, source=source)
    if stop.is_set():
        return None
    if folder is None:
        return crops, 0
    yield f"writing {len(crops)} crops to {folder}..."
    return crops, len(write_crop_set(crops, folder, stem=stem))


def _unwrapped(layer: Shapes) -> Shapes:
    """The layer behind napari's proxy (a plugin's viewer hands out a new proxy object on every access)."""
    return getattr(layer, "__wrapped__", layer)
