"""The Compare & measure dock widget in a real viewer: references, methods, table, centring, files, errors."""

import csv
import json

import numpy as np
import pytest
import tifffile
from napari.utils.notifications import NotificationSeverity
from qtpy.QtCore import Qt

from napari_microdisk_sr._widgets import measure
from napari_microdisk_sr._widgets._session import CropSetRef, RunRef, session_for
from napari_microdisk_sr.core.crops import crop_disks, write_crop_set
from napari_microdisk_sr.core.intensity import Intensity
from napari_microdisk_sr.core.layers import upscaled_geometry
from napari_microdisk_sr.core.models import ModelSpec, save_model
from napari_microdisk_sr.core.sample import make_scene

PLUGIN = "napari-microdisk-sr"
WIDGET = "Compare & measure"
TIMEOUT_MS = 60_000
SPEC = ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 4})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny SRVGGNetCompact x4 weights files: a "run" and a plain model file."""
    folder = tmp_path_factory.mktemp("models")
    (folder / "finetune_disks").mkdir()
    return save_model(SPEC.build(), SPEC, folder / "finetune_disks" / "model.pth"), save_model(
        SPEC.build(), SPEC, folder / "other.pth"
    )


@pytest.fixture(scope="module")
def scene():
    return make_scene(seed=7, size=(40, 48), n_disks=3, radius=(5.0, 6.0))


def _errors(notes):
    return [n.message for n in notes if n.severity == NotificationSeverity.ERROR]


def _open(viewer):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget._pretrained.value = []  # x4plus is too slow for a test; tiny models stand in
    widget._device.value = "cpu"
    return widget


def _run(qtbot, widget):
    widget._measure_button.native.click()
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)


def _table(widget):
    """The table's rows as shown: texts."""
    table = widget._table
    return [[table.item(r, c).text() for c in range(table.columnCount())] for r in range(table.rowCount())]


def test_paired_layers_with_runs_and_files_fill_a_sortable_table_and_a_csv_beside_the_hr_file(
    make_napari_viewer, qtbot, notes, screenshot, models, scene, tmp_path
):
    run_model, other_model = models
    hr_path = tmp_path / "truth.tif"
    tifffile.imwrite(hr_path, scene.hr)
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    lr = viewer.add_image(scene.lr, name="field (LR)")
    (hr,) = viewer.open(hr_path, plugin="napari")
    hr.scale, hr.translate = upscaled_geometry(lr.scale, lr.translate, 4)
    widget = _open(viewer)
    session_for(viewer).add_run(RunRef("finetune_disks", run_model, run_model.parent))
    assert widget._runs.value == [str(run_model)]  # a new run is chosen as it arrives
    assert _open(viewer)._runs.value == [str(run_model)]  # and by a widget opened after it
    widget._reference.value = measure._Reference.PAIR
    assert widget._hr_layers.native.isHidden()
    assert widget._degradation.native.isHidden()
    assert (widget._lr_layer.value, widget._hr_layer.value) == (lr, hr)  # the small and the large layer
    widget._runs.value = []
    widget._files.value = (run_model, other_model)  # a run's model.pth is named by its folder
    assert widget._intensity.value is None  # each model its own mapping, the scores by auto
    widget._intensity.value = Intensity("bits", bits=8)  # uint8 data, all 8 bits: the same scores, recorded

    _run(qtbot, widget)
    assert not _errors(notes)
    rows = _table(widget)
    assert [row[:2] for row in rows] == [  # one image: no mean rows repeating its rows
        ["truth", "bicubic"],
        ["truth", "finetune_disks"],
        ["truth", "other"],
    ]
    assert rows[0][4] == "+0.00"  # bicubic's gain over itself
    assert rows[0][6] == ""  # no pretrained model measured: no gain over it, and the cell says why
    assert "choose realesrgan-x4plus under Pretrained" in widget._table.item(0, 6).toolTip()
    table = widget._table  # at the dock's width every column can be scrolled into view
    qtbot.wait(50)
    area = widget.native.layout().itemAt(0).widget()
    assert table.width() <= area.viewport().width()
    header = table.horizontalHeader()
    assert header.length() <= table.viewport().width() + table.horizontalScrollBar().maximum()
    assert all(header.sectionSize(c) > 0 for c in range(table.columnCount()))
    with (tmp_path / "truth_microdisk_sr" / "metrics.csv").open() as fh:
        saved = list(csv.DictReader(fh))
    assert [row["method"] for row in saved] == ["bicubic", str(run_model), str(other_model)]
    assert float(saved[0]["psnr"]) == pytest.approx(float(rows[0][2]), abs=0.005)
    assert json.loads((tmp_path / "truth_microdisk_sr" / "metrics.json").read_text())["intensity"] == "bits:8"

    widget._table.sortItems(4, Qt.SortOrder.DescendingOrder)  # by gain over bicubic: numbers, not texts
    texts = [row[4] for row in _table(widget)]
    assert [float(t) for t in texts] == sorted((float(t) for t in texts), reverse=True)
    assert texts != sorted(texts, reverse=True)  # as texts, "-5.68" would come before "+0.00"

    viewer.camera.center = (0.0, 0.0)
    row = next(i for i, r in enumerate(_table(widget)) if r[0] == "truth")
    widget._table.selectRow(row)
    centre = hr.data_to_world(((hr.data.shape[0] - 1) / 2, (hr.data.shape[1] - 1) / 2))
    np.testing.assert_allclose(viewer.camera.center[-2:], centre)
    assert viewer.layers.selection.active is hr

    _run(qtbot, widget)  # never overwrites: the second table gets the next free name
    assert (tmp_path / "truth_microdisk_sr" / "metrics-1.csv").is_file()
    screenshot(viewer, tmp_path / "measure.png")


def test_a_crop_set_rows_centre_on_their_crops_and_error_maps_overlay_them_on_one_scale(
    make_napari_viewer, qtbot, notes, screenshot, models, scene, tmp_path
):
    viewer = make_napari_viewer(show=True)
    source = viewer.add_image(scene.hr, name="field", scale=(0.5, 0.5), translate=(3.0, -2.0))
    boxes = [(20, 24, 76, 80), (90, 100, 150, 160)]
    crops = crop_disks(scene.hr, boxes, source="field")
    folder = tmp_path / "crops"
    write_crop_set(crops, folder, stem="field")
    session_for(viewer).add_crop_set(
        CropSetRef("field crops", tuple(c.image for c in crops), folder, "field")
    )
    widget = _open(viewer)
    widget._reference.value = measure._Reference.CROP_SET
    assert widget._crop_set.value.name == "field crops"
    widget._error_maps.value = True
    widget._files.value = (models[1],)  # a random model: far larger errors than bicubic's

    _run(qtbot, widget)
    assert not _errors(notes)
    assert (folder / "metrics.csv").is_file()  # the table goes into the crops folder
    second = next(i for i, row in enumerate(_table(widget)) if row[0] == "field crops:002")
    widget._table.selectRow(second)
    np.testing.assert_allclose(viewer.camera.center[-2:], source.data_to_world((119.5, 129.5)))

    error = viewer.layers["error % field crops:002 (bicubic)"]
    np.testing.assert_allclose(error.scale, source.scale)
    np.testing.assert_allclose(error.data_to_world((0, 0)), source.data_to_world((90, 100)))
    assert error.data.shape == (60, 60)
    maps = [layer for layer in viewer.layers if layer.name.startswith("error % ")]
    assert len(maps) == 4  # two crops, two methods
    top = max(float(layer.data.max()) for layer in maps)
    assert 0 < top <= 100  # percent of the data range
    assert all(tuple(layer.contrast_limits) == pytest.approx((0.0, top)) for layer in maps)  # one scale
    assert float(error.data.max()) < top / 2  # so bicubic's smaller errors look darker than the model's
    assert maps[-1].colorbar.visible
    assert f"one colour scale 0-{top:.3g}" in widget._status.value
    screenshot(viewer, tmp_path / "measure_error_maps.png")

    n_layers = len(viewer.layers)
    _run(qtbot, widget)  # measuring again replaces its error maps, instead of piling up "[1]" copies
    assert len(viewer.layers) == n_layers
    assert "error % field crops:002 (bicubic) [1]" not in viewer.layers


def test_the_pair_is_two_layers_in_a_x4_relation_and_never_an_output_of_the_plugin(make_napari_viewer, scene):
    viewer = make_napari_viewer()
    hr = viewer.add_image(scene.hr, name="truth")
    lr = viewer.add_image(scene.lr, name="field")
    viewer.add_image(np.zeros((50, 50), np.uint8), name="unrelated")
    viewer.add_image(  # the largest layer: a super-resolved output, as in a real session
        np.zeros((4 * scene.hr.shape[0], 4 * scene.hr.shape[1]), np.uint8),
        name="truth_x4 (realesrgan-x4plus)",
        metadata={"microdisk_sr": {}},
    )
    widget = _open(viewer)
    widget._reference.value = measure._Reference.PAIR
    assert (widget._lr_layer.value, widget._hr_layer.value) == (lr, hr)


def test_rows_of_a_crop_set_kept_in_memory_centre_on_their_crops(make_napari_viewer, qtbot, notes, scene):
    viewer = make_napari_viewer()
    source = viewer.add_image(scene.hr, name="field", scale=(0.5, 0.5))
    boxes = ((20, 24, 76, 80), (90, 100, 150, 160))
    crops = crop_disks(scene.hr, list(boxes), source="field")
    session_for(viewer).add_crop_set(
        CropSetRef("field crops", tuple(c.image for c in crops), None, "field", boxes=boxes)
    )
    widget = _open(viewer)
    widget._reference.value = measure._Reference.CROP_SET
    _run(qtbot, widget)
    assert not _errors(notes)
    first = next(i for i, row in enumerate(_table(widget)) if row[0] == "field crops:001")
    widget._table.selectRow(first)
    np.testing.assert_allclose(viewer.camera.center[-2:], source.data_to_world((47.5, 51.5)))


def test_a_runtime_error_in_the_worker_is_reported_and_leaves_the_widget_usable(
    make_napari_viewer, qtbot, notes, monkeypatch, scene
):
    def out_of_memory(hr_images, methods, *, stop, **options):
        yield measure.metrics.EvalEvent(0, 1, "field", "bicubic")
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(measure.metrics, "evaluate", out_of_memory)
    viewer = make_napari_viewer()
    hr = viewer.add_image(scene.hr, name="field")
    widget = _open(viewer)
    widget._hr_layers.value = [hr]
    for _ in range(2):  # and a second try fails the same way: nothing is stuck
        _run(qtbot, widget)
        assert widget._measure_button.enabled
        assert not widget._stop_button.enabled
        assert widget._form.enabled
        assert widget._status.value.startswith("failed: RuntimeError: CUDA out of memory")
    assert sum("CUDA out of memory" in message for message in _errors(notes)) == 2
    assert any("not saved" in n.message for n in notes)  # an unsaved layer: the table has no folder


def test_wrong_choices_are_explained_and_a_second_run_is_refused(make_napari_viewer, qtbot, notes, scene):
    viewer = make_napari_viewer()
    widget = _open(viewer)
    widget._bicubic.value = False
    widget._measure_button.native.click()
    assert any("choose at least one method" in message for message in _errors(notes))
    widget._bicubic.value = True
    widget._measure_button.native.click()
    assert any("high-resolution image layer" in message for message in _errors(notes))

    hr = viewer.add_image(np.tile(scene.hr, (4, 4)), name="big")
    widget._hr_layers.value = [hr]
    widget._measure_button.native.click()
    assert widget._jobs.running
    worker = widget._jobs.worker
    widget._start()
    assert widget._jobs.worker is worker
    assert any("already running" in n.message for n in notes)
    widget._stop_button.native.click()
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)
    assert widget._measure_button.enabled


def test_the_per_disk_table_measures_each_disk_and_its_rows_centre_on_the_disk(
    make_napari_viewer, qtbot, notes, scene, tmp_path
):
    hr_path = tmp_path / "truth.tif"
    tifffile.imwrite(hr_path, scene.hr)
    viewer = make_napari_viewer()
    (hr,) = viewer.open(hr_path, plugin="napari")
    hr.scale, hr.translate = (0.25, 0.25), (5.0, -7.0)
    widget = _open(viewer)
    widget._hr_layers.value = [hr]
    assert widget._disk_host.native.isHidden()  # no per-disk rows yet
    widget._per_disk.value = True
    _run(qtbot, widget)
    assert not _errors(notes)
    rows = _table(widget)
    assert rows[0][:2] == ["truth", "bicubic"]
    assert float(rows[0][-1]) > 20.0  # the LR-consistency column, in dB
    saved = list(csv.DictReader((tmp_path / "truth_microdisk_sr" / "metrics_disks.csv").open()))
    table = widget._disk_table
    assert not widget._disk_host.native.isHidden()  # shown once filled
    assert table.rowCount() == len(saved) >= 1
    assert [table.item(r, 1).text() for r in range(table.rowCount())] == ["bicubic"] * len(saved)
    assert all(abs(float(row["r_error"])) < 2.0 for row in saved)

    widget._disk_table.selectRow(0)
    disk = saved[int(table.item(0, 2).text()) - 1]
    np.testing.assert_allclose(
        viewer.camera.center[-2:], hr.data_to_world((float(disk["cy"]), float(disk["cx"]))), atol=1e-6
    )
