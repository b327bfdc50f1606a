"""The Select & crop dock widget in a real viewer: detection into editable shapes, crops into the session."""

import numpy as np
import pytest
import tifffile
from napari.utils.notifications import NotificationSeverity
from qtpy.QtCore import Qt
from skimage import data

from napari_microdisk_sr._widgets._session import session_for
from napari_microdisk_sr.core.crops import read_crop_set
from napari_microdisk_sr.core.detect import Disk
from napari_microdisk_sr.core.sample import make_scene

PLUGIN = "napari-microdisk-sr"
WIDGET = "Select & crop microdisks"
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def scene():
    """Five disks in 128 x 128 pixels, two of them cut by the border."""
    return make_scene(seed=1, size=(128, 128))


def _dock(viewer):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return widget


def _click(qtbot, widget, button):
    button.native.click()
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)


def _world_centres(layer):
    """Centre and radius of each shape of a Shapes layer, in world coordinates."""
    corners = [np.array([layer.data_to_world(v) for v in shape]) for shape in layer.data]
    return np.array([[*(c.min(0) + c.max(0)) / 2, (c.max(0) - c.min(0)).mean() / 2] for c in corners])


def _warnings(notes):
    return [n.message for n in notes if n.severity == NotificationSeverity.WARNING]


def test_detected_disks_are_editable_shapes_over_the_image_in_world_coordinates(
    make_napari_viewer, qtbot, scene
):
    viewer = make_napari_viewer()
    image = viewer.add_image(
        scene.lr, name="field", scale=(0.5, 0.5), translate=(40.0, -7.0), units=("um", "um")
    )
    widget = _dock(viewer)
    assert widget._image.value is image
    _click(qtbot, widget, widget._detect)

    shapes = viewer.layers["field disks"]
    assert shapes.units == image.units  # the image's physical units stay in use
    assert set(shapes.shape_type) == {"ellipse"}
    assert shapes.mode == "select"
    assert viewer.layers.selection.active is shapes
    assert widget._shapes.value is shapes
    found = _world_centres(shapes)
    assert len(found) == len(scene.disks_lr)
    for disk in scene.disks_lr:
        centre = np.array(image.data_to_world((disk.cy, disk.cx)))
        nearest = found[np.argmin(np.hypot(*(found[:, :2] - centre).T))]
        np.testing.assert_allclose(nearest[:2], centre, atol=0.5 * 0.5)  # within half a pixel
        assert nearest[2] == pytest.approx(disk.r * 0.5, abs=0.5 * 0.5)
    assert f"{len(found)} disks in 'field'" in widget._status.value
    boxes = (widget._min_radius, widget._max_radius)
    assert [box.native.text() for box in boxes] == ["auto", "auto"]  # greyed out, no unused number shown
    assert not any(box.enabled for box in boxes)
    widget._auto_radius.value = False  # the range is filled in from the disks found, for editing
    radii = [d.r for d in scene.disks_lr]
    assert 0.6 * min(radii) <= widget._min_radius.value <= min(radii)
    assert max(radii) <= widget._max_radius.value <= 1.4 * max(radii)
    assert all(box.enabled and box.native.text() != "auto" for box in boxes)
    widget._min_radius.value = 4.0  # the user's own range is given back after an automatic detection
    widget._auto_radius.value = True
    assert [box.native.text() for box in boxes] == ["auto", "auto"]
    widget._auto_radius.value = False
    assert widget._min_radius.value == 4.0
    widget._auto_radius.value = True

    widget._shape_type.value = "squares"  # detecting again replaces the disks
    _click(qtbot, widget, widget._detect)
    assert [layer.name for layer in viewer.layers] == ["field", "field disks"]
    assert set(viewer.layers["field disks"].shape_type) == {"rectangle"}


def test_an_image_removed_during_detection_gets_no_shapes(make_napari_viewer, qtbot, scene):
    viewer = make_napari_viewer()
    image = viewer.add_image(scene.lr, name="field")
    widget = _dock(viewer)
    widget._detect.native.click()
    viewer.layers.remove(image)
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)
    assert len(viewer.layers) == 0
    assert "'field' was removed during the detection" in widget._status.value


def test_detecting_again_keeps_shapes_edited_by_hand(make_napari_viewer, qtbot, notes, scene):
    viewer = make_napari_viewer()
    viewer.add_image(scene.lr, name="field")
    widget = _dock(viewer)
    _click(qtbot, widget, widget._detect)
    edited = viewer.layers["field disks"]
    edited.selected_data = {0}
    edited.remove_selected()
    kept = [shape.copy() for shape in edited.data]

    _click(qtbot, widget, widget._detect)
    assert [layer.name for layer in viewer.layers] == ["field", "field disks", "field disks [1]"]
    assert all(np.array_equal(a, b) for a, b in zip(viewer.layers["field disks"].data, kept, strict=True))
    assert len(viewer.layers["field disks [1]"].data) == len(kept) + 1
    assert widget._shapes.value is viewer.layers["field disks [1]"]
    assert any("edited by hand and is kept" in n.message for n in notes)


def test_crops_follow_the_edited_shapes_and_are_written_beside_the_file(
    make_napari_viewer, qtbot, screenshot, tmp_path, scene
):
    source = tmp_path / "field.tif"
    tifffile.imwrite(source, scene.lr)
    viewer = make_napari_viewer(show=True)
    (image,) = viewer.open(source, plugin="napari")
    image.translate = (100.0, 100.0)
    widget = _dock(viewer)
    _click(qtbot, widget, widget._detect)
    shapes = viewer.layers["field disks"]

    inner = [d for d in scene.disks_lr if not d.touches_border]
    assert len(inner) == 3
    # The user deletes every shape, draws a rectangle around one disk (the mouse gives world coordinates),
    # draws a circle beside another disk and drags it onto it.
    shapes.selected_data = set(range(len(shapes.data)))
    shapes.remove_selected()
    first, second = inner[0], inner[1]
    corners = [image.data_to_world((first.cy + d * first.r, first.cx + d * first.r)) for d in (-1, 1)]
    shapes.add_rectangles(np.array([shapes.world_to_data(c) for c in corners]))
    shapes.add_ellipses(np.array([[second.cy + 3, second.cx - 2], [second.r, second.r]]))
    shapes.data = [shapes.data[0], shapes.data[1] + (-3, 2)]
    assert shapes.shape_type == ["rectangle", "ellipse"]
    widget._margin.value = 0.5
    _click(qtbot, widget, widget._crop)

    (crop_set,) = session_for(viewer).crop_sets
    assert crop_set.name == "field crops"
    assert crop_set.source_layer == "field"
    assert crop_set.folder == tmp_path / "field_microdisk_sr" / "crops"
    assert len(crop_set.images) == 2
    for crop, disk in zip(crop_set.images, (first, second), strict=True):
        expected = _box(disk, margin=0.5)
        np.testing.assert_array_equal(crop, scene.lr[expected])
    written = read_crop_set(crop_set.folder)
    assert [row["file"] for row in written.rows] == ["field_disk001.tif", "field_disk002.tif"]
    for ours, theirs in zip(crop_set.images, written.images, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert "2 crops in 'field crops', 2 added to" in widget._status.value
    screenshot(viewer, tmp_path / "select_crop.png")

    _click(qtbot, widget, widget._crop)  # the same shapes again: a crop set, but no copies in the folder
    assert len(read_crop_set(crop_set.folder)) == 2
    assert "2 crops in 'field crops 2', 0 added to" in widget._status.value
    assert "(2 were there already)" in widget._status.value


def test_closing_the_widget_during_detection_adds_no_shapes(make_napari_viewer, qtbot, scene):
    viewer = make_napari_viewer()
    viewer.add_image(scene.lr, name="field")
    widget = _dock(viewer)
    widget._detect.native.click()
    viewer.window.remove_dock_widget(widget.native)
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)
    assert [layer.name for layer in viewer.layers] == ["field"]
    assert widget._status.value == "detection stopped: no shapes added"


def _box(disk: Disk, *, margin: float) -> tuple[slice, slice]:
    """The pixels a disk grown by ``margin`` of its radius touches (pixel i spans [i - 0.5, i + 0.5))."""
    reach = disk.r * (1 + margin)
    rows = slice(int(np.floor(disk.cy - reach - 0.5)) + 1, int(np.ceil(disk.cy + reach + 0.5)))
    cols = slice(int(np.floor(disk.cx - reach - 0.5)) + 1, int(np.ceil(disk.cx + reach + 0.5)))
    return rows, cols


def test_crops_of_an_unsaved_image_stay_in_memory_unless_a_folder_is_picked(
    make_napari_viewer, qtbot, tmp_path, scene
):
    viewer = make_napari_viewer()
    viewer.add_image(scene.lr, name="sample")
    widget = _dock(viewer)
    _click(qtbot, widget, widget._detect)
    _click(qtbot, widget, widget._crop)
    session = session_for(viewer)
    assert len(session.crop_sets[0].images) == 3  # the two disks cut by the border are left out
    assert session.crop_sets[0].folder is None
    for image, (y0, x0, y1, x1) in zip(session.crop_sets[0].images, session.crop_sets[0].boxes, strict=True):
        np.testing.assert_array_equal(image, scene.lr[y0:y1, x0:x1])  # the boxes say where each crop was cut
    assert "in memory only" in widget._status.value
    assert "2 shape(s) on the border" in widget._status.value

    widget._skip_border.value = False
    widget._folder.value = tmp_path
    _click(qtbot, widget, widget._crop)
    assert [crop_set.name for crop_set in session.crop_sets] == ["sample crops", "sample crops 2"]
    assert session.crop_sets[1].folder == tmp_path
    assert len(read_crop_set(tmp_path)) == 5


def test_shapes_drawn_in_a_layer_of_their_own_are_mapped_through_world_coordinates(
    make_napari_viewer, qtbot, scene
):
    viewer = make_napari_viewer()
    image = viewer.add_image(scene.lr, name="field", scale=(2.0, 3.0), translate=(-50.0, 10.0))
    disk = next(d for d in scene.disks_lr if not d.touches_border)
    centre = image.data_to_world((disk.cy, disk.cx))
    radii = (disk.r * 2.0, disk.r * 3.0)  # a circle on screen is an ellipse in this image's pixels
    viewer.add_shapes([np.array([centre, radii])], shape_type="ellipse", name="by hand")
    widget = _dock(viewer)
    widget._shapes.value = viewer.layers["by hand"]
    widget._margin.value = 0.0
    _click(qtbot, widget, widget._crop)
    (crop_set,) = session_for(viewer).crop_sets
    np.testing.assert_array_equal(crop_set.images[0], scene.lr[_box(disk, margin=0.0)])


def test_detection_follows_the_plane_on_display(make_napari_viewer, qtbot, scene):
    stack = np.stack([np.full_like(scene.lr, 128), scene.lr])
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="stack")
    widget = _dock(viewer)
    viewer.dims.set_current_step(0, 1)
    _click(qtbot, widget, widget._detect)
    assert len(viewer.layers["stack disks"].data) == len(scene.disks_lr)


def test_clear_notices_when_there_is_nothing_to_work_on(make_napari_viewer, qtbot, notes):
    viewer = make_napari_viewer()
    widget = _dock(viewer)
    widget._detect.native.click()
    assert "no image layer" in _warnings(notes)[-1]

    viewer.add_image(np.full((64, 64), 7, np.uint8), name="flat")
    _click(qtbot, widget, widget._detect)
    assert "no disk found in 'flat'" in _warnings(notes)[-1]
    assert "radius range" in _warnings(notes)[-1]
    assert "flat disks" not in viewer.layers

    viewer.add_image(np.zeros((5, 5), np.uint8), name="tiny")
    widget._image.value = viewer.layers["tiny"]
    _click(qtbot, widget, widget._detect)  # the detector refuses it: an error, and the widget is ready again
    errors = [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
    assert "too small to hold a disk" in errors[-1]
    assert "too small" in widget._status.value

    widget._crop.native.click()
    assert "no shapes" in _warnings(notes)[-1]
    viewer.add_shapes(name="empty")
    widget._crop.native.click()
    assert "no shapes" in _warnings(notes)[-1]
    assert session_for(viewer).crop_sets == []
    assert widget._detect.enabled
    assert widget._crop.enabled


def test_bright_coins_are_found_listed_counted_and_thinly_outlined(
    make_napari_viewer, qtbot, notes, screenshot, tmp_path
):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(data.coins(), name="coins")  # 24 bright coins on a dark ground
    widget = _dock(viewer)
    assert widget._polarity.value == "either"
    _click(qtbot, widget, widget._detect)
    shapes = viewer.layers["coins disks"]
    assert len(shapes.data) >= 20
    table = widget._disks
    assert table.rowCount() == len(shapes.data)
    radii = [table.item(row, 1).value for row in range(table.rowCount())]
    assert all(15 <= r <= 35 for r in radii)  # no speck among the coins
    scores = [table.item(row, 2).value for row in range(table.rowCount())]
    assert scores == sorted(scores, reverse=True)  # in the detector's order, best first
    assert viewer.text_overlay.visible
    assert viewer.text_overlay.text == f"coins disks: {len(shapes.data)} disks"
    assert max(shapes.edge_width) <= 0.1 * min(radii)  # a thin ring: the coin's edge shows beside it
    screenshot(viewer, tmp_path / "select_crop_coins.png")

    table.sortItems(1)  # sorted by radius: the smallest first, the shape's number kept
    smallest = table.item(0, 0).data(Qt.ItemDataRole.UserRole)
    table.selectRow(0)
    assert shapes.selected_data == {smallest}
    assert viewer.layers.selection.active is shapes
    table.setFocus()
    qtbot.keyClick(table, Qt.Key.Key_Delete)  # an outlier removed from the list
    assert len(shapes.data) == len(radii) - 1
    assert table.rowCount() == len(radii) - 1
    assert viewer.text_overlay.text == f"coins disks: {len(radii) - 1} disks"
    shapes.visible = False  # the count goes with its layer, off the canvas of later work
    assert not viewer.text_overlay.visible
    shapes.visible = True
    assert viewer.text_overlay.visible
    shapes.add_ellipses(np.array([[20.0, 20.0], [10.0, 10.0]]))  # drawn by hand: listed without a score
    assert table.rowCount() == len(radii)
    assert table.item(table.rowCount() - 1, 2).text() == ""

    widget._auto_radius.value = False
    widget._min_radius.value, widget._max_radius.value = 15.0, 45.0
    _click(qtbot, widget, widget._detect)  # the range that found no coin when only dark disks were sought
    assert len(viewer.layers["coins disks [1]"].data) >= 20
    widget._polarity.value = "dark"
    _click(qtbot, widget, widget._detect)
    assert "no dark disk found in 'coins'" in _warnings(notes)[-1]
    assert "'Disks are'" in _warnings(notes)[-1]
