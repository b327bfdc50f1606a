"""The Register LR/HR dock widget in a real viewer: two layers registered into an aligned x4 pair."""

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity

from napari_microdisk_sr._widgets._session import RunRef, session_for
from napari_microdisk_sr._widgets.measure import _Reference
from napari_microdisk_sr.core import models
from napari_microdisk_sr.core.sample import make_magnified_pair

PLUGIN = "napari-microdisk-sr"
WIDGET = "Register LR/HR"
TIMEOUT_MS = 60_000


def _open(viewer):
    return viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)[1]


def _run(qtbot, widget):
    widget._run.native.click()
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)


def test_registering_two_layers_adds_the_pair_aligned_in_world_coordinates(
    make_napari_viewer, qtbot, screenshot, tmp_path
):
    lr, hr, truth = make_magnified_pair()
    viewer = make_napari_viewer()
    lr_layer = viewer.add_image(lr, name="4x", scale=(1.625, 1.625), translate=(10.0, -5.0))
    viewer.add_image(hr, name="10x", scale=(0.65, 0.65))
    widget = _open(viewer)
    assert (widget._lr.value.name, widget._hr.value.name) == ("4x", "10x")
    assert widget._scale.value == pytest.approx(2.5)  # from the layers' pixel sizes
    _run(qtbot, widget)
    assert "normalised correlation 0.9" in widget._status.value
    crop, grid = viewer.layers["4x registered LR"], viewer.layers["10x registered HR"]
    assert grid.data.shape == (4 * crop.data.shape[0], 4 * crop.data.shape[1])
    y0, x0 = grid.metadata["microdisk_sr_registration"]["lr_box"][:2]
    np.testing.assert_array_equal(crop.data, lr[y0 : y0 + crop.data.shape[0], x0 : x0 + crop.data.shape[1]])
    # HR grid pixel (i, j) lies at LR (y0 + (i + 0.5) / 4 - 0.5, ...) in the LR layer's world
    for i, j in [(0, 0), (17, 42)]:
        expected = lr_layer.data_to_world((y0 + (i + 0.5) / 4 - 0.5, x0 + (j + 0.5) / 4 - 0.5))
        np.testing.assert_allclose(grid.data_to_world((i, j)), expected, atol=1e-9)
    # and shows the HR pixel that the true fit puts there
    i, j = 101, 77
    x, y = truth.lr_to_hr() @ (x0 + (j + 0.5) / 4 - 0.5, y0 + (i + 0.5) / 4 - 0.5, 1.0)
    assert abs(float(grid.data[i, j]) - float(hr[round(y), round(x)])) < 25
    screenshot(viewer, tmp_path / "register.png")


def test_a_pair_of_different_fields_is_refused_and_adds_no_layer(make_napari_viewer, qtbot, notes):
    lr, _, _ = make_magnified_pair()
    _, elsewhere, _ = make_magnified_pair(seed=8)
    viewer = make_napari_viewer()
    viewer.add_image(lr, name="4x")
    viewer.add_image(elsewhere, name="10x")
    widget = _open(viewer)
    widget._scale.value = 2.5
    _run(qtbot, widget)
    assert widget._status.value.startswith("failed: ")
    assert [layer.name for layer in viewer.layers] == ["4x", "10x"]
    assert any(n.severity == NotificationSeverity.ERROR for n in notes)
    assert widget._run.enabled


def test_compare_and_measure_scores_the_registered_pair_and_a_run_against_its_own_parent(
    make_napari_viewer, qtbot, tiny_model, notes, tmp_path
):
    parent = models.load_model(tiny_model)
    run_dir = tmp_path / "compact_run"
    run_dir.mkdir()
    record = {"name": parent.name, "source": parent.source, "sha256": parent.sha256}
    info = {"name": "compact_run", "provenance": {"parent": record}}
    run_model = models.save_model(parent.module, parent.spec, run_dir / "model.pth", info=info)
    lr, hr, _ = make_magnified_pair()
    viewer = make_napari_viewer()
    viewer.add_image(lr, name="4x")
    viewer.add_image(hr, name="10x")
    register = _open(viewer)
    _run(qtbot, register)
    viewer.layers.remove("4x")
    viewer.layers.remove("10x")
    _, measure = viewer.window.add_plugin_dock_widget(PLUGIN, "Compare & measure")
    measure._pretrained.value = []
    measure._device.value = "cpu"
    measure._output.value = tmp_path / "metrics"
    session_for(viewer).add_run(RunRef("compact_run", run_model, run_dir))
    measure._reference.value = _Reference.PAIR
    assert (measure._lr_layer.value.name, measure._hr_layer.value.name) == (
        "4x registered LR",
        "10x registered HR",
    )
    measure._measure_button.native.click()
    qtbot.waitUntil(lambda: not measure._jobs.running, timeout=TIMEOUT_MS)
    assert not [n for n in notes if n.severity == NotificationSeverity.ERROR]
    table = measure._table
    rows = {
        table.item(r, 1).text(): table.item(r, 6).text()
        for r in range(table.rowCount())
        if table.item(r, 0).text() != "mean"
    }
    assert set(rows) == {"bicubic", "compact_run", "tiny (parent)"}
    assert rows["compact_run"] == "+0.00"  # the same weights as its parent: no gain over it
    assert rows["tiny (parent)"] == ""  # x4plus, its own reference, was not measured
