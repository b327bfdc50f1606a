"""The whole path in one viewer, each widget opened through the manifest: sample -> detect -> crop ->
fine-tune -> super-resolve with the fine-tuned run -> measure it; the session links the four widgets."""

from napari.utils.notifications import NotificationSeverity

from napari_microdisk_sr._widgets._controls import ModelChoice
from napari_microdisk_sr._widgets._session import session_for
from napari_microdisk_sr._widgets.measure import _Reference
from napari_microdisk_sr.core.outputs import safe_name
from napari_microdisk_sr.core.train import MODEL_FILE

PLUGIN = "napari-microdisk-sr"
TIMEOUT_MS = 60_000


def _click(qtbot, widget, button):
    button.native.click()
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)


def test_sample_to_measured_fine_tuned_model(make_napari_viewer, qtbot, notes, tiny_model, tmp_path):
    viewer = make_napari_viewer()
    (scene,) = viewer.open_sample(PLUGIN, "microdisk_scene")
    crop, tune, superres, compare = (
        viewer.window.add_plugin_dock_widget(PLUGIN, name)[1]
        for name in ("Select & crop microdisks", "Fine-tune", "Super-resolve", "Compare & measure")
    )
    session = session_for(viewer)

    assert crop._image.value is scene
    _click(qtbot, crop, crop._detect)
    crop._folder.value = tmp_path / "crops"  # the sample came from no file: save its crops here
    _click(qtbot, crop, crop._crop)
    (crop_set,) = session.crop_sets
    assert crop_set.folder.is_relative_to(tmp_path)
    assert crop_set.source_layer == scene.name

    assert tune._crop_set.choices == (crop_set,)
    assert tune._crop_set.value is crop_set
    tune._model.value = ModelChoice.FILE
    tune._weights.value = tiny_model
    tune._epochs.value, tune._patch.value, tune._pairs.value, tune._batch.value = 1, 32, 8, 4
    tune._device.value = "cpu"
    _click(qtbot, tune, tune._start_button)
    (run,) = session.runs
    assert run.model_path == crop_set.folder.parent / f"finetune_{safe_name(crop_set.name)}" / MODEL_FILE
    assert run.model_path.is_file()

    assert run.model_path in superres._model.choices
    superres._model.value = run.model_path
    superres._images.value = [scene]
    superres._device.value = "cpu"
    _click(qtbot, superres, superres._run)
    upscaled = viewer.layers[-1]
    assert upscaled.data.shape == (scene.data.shape[0] * 4, scene.data.shape[1] * 4)
    assert upscaled.metadata["microdisk_sr"]["model_source"] == str(run.model_path)

    assert compare._runs.choices == (str(run.model_path),)
    assert compare._runs.value == [str(run.model_path)]
    compare._reference.value = _Reference.CROP_SET
    assert compare._crop_set.value is crop_set
    compare._pretrained.value = []
    compare._device.value = "cpu"
    _click(qtbot, compare, compare._measure_button)
    table = compare._table
    methods = {table.item(row, 1).text() for row in range(table.rowCount())}
    assert methods == {"bicubic", run.name, "tiny (parent)"}  # the run's parent: its "Δ pretrained"
    assert table.rowCount() == 3 * (len(crop_set.images) + 1)  # each crop and the mean, for each method
    assert (crop_set.folder / "metrics.csv").is_file()
    assert not [n.message for n in notes if n.severity == NotificationSeverity.ERROR]
