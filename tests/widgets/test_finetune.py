"""The Fine-tune dock widget in a real viewer: sources, run folders, live progress, stop/resume, failures."""

import json
import math

import numpy as np
import pytest
import tifffile
from napari.utils.notifications import NotificationSeverity
from qtpy.QtCore import QTimer

from napari_microdisk_sr._widgets import finetune
from napari_microdisk_sr._widgets._controls import DegradationChoice, ModelChoice
from napari_microdisk_sr._widgets._loss_plot import loss_range
from napari_microdisk_sr._widgets._session import CropSetRef, session_for
from napari_microdisk_sr.core.calibrate import DegradationProfile, write_profile
from napari_microdisk_sr.core.crops import crop_disks, crop_pairs, read_crop_set, write_crop_set
from napari_microdisk_sr.core.detect import disk_box
from napari_microdisk_sr.core.intensity import AUTO, Intensity
from napari_microdisk_sr.core.sample import make_scene
from napari_microdisk_sr.core.train import CHECKPOINT_FILE, HISTORY_FILE, MODEL_FILE, EventKind, TrainEvent
from napari_microdisk_sr.core.train.checkpoint import crops_fingerprint

PLUGIN = "napari-microdisk-sr"
WIDGET = "Fine-tune"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def scene():
    return make_scene(seed=5, size=(48, 48), n_disks=5, radius=(5.0, 7.0))


@pytest.fixture
def crops(scene):
    boxes = [disk_box(disk, scene.hr.shape) for disk in scene.disks_hr]
    return tuple(scene.hr[y0:y1, x0:x1].copy() for y0, x0, y1, x1 in boxes)


def _errors(notes):
    return [n.message for n in notes if n.severity == NotificationSeverity.ERROR]


def _open(viewer):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return widget


def _tiny_settings(widget, model, output, *, epochs=2):
    widget._model.value = ModelChoice.FILE
    assert not widget._weights.native.isHidden()
    widget._weights.value = model
    widget._epochs.value = epochs
    widget._patch.value = 32
    widget._pairs.value = 8
    widget._batch.value = 4
    widget._device.value = "cpu"
    widget._output.value = output


def _assert_idle(widget):
    assert not widget._jobs.running
    assert widget._start_button.enabled
    assert not widget._stop_button.enabled
    assert widget._form.enabled
    assert widget._advanced.enabled


def test_defaults_are_the_studys_and_the_crop_sets_follow_the_session(make_napari_viewer, notes, crops):
    viewer = make_napari_viewer()
    widget = _open(viewer)
    assert (widget._epochs.value, widget._lr.value, widget._patch.value, widget._pairs.value) == (
        50,
        1e-4,
        128,
        500,
    )
    assert widget._batch.value is None  # 4 on a GPU, 2 on the CPU
    assert widget._degradation.value == "realistic"
    assert widget._device_info.value.startswith(("CPU", "CUDA", "Apple"))
    assert not widget._advanced_box.isExpanded()
    assert widget._weights.native.isHidden()  # shown only for the "file..." model

    widget._start_button.native.click()
    assert any("no crop set" in message for message in _errors(notes))
    assert widget._status.value.startswith("not started: no crop set")  # not only in a passing toast
    assert not widget._jobs.running

    session = session_for(viewer)
    session.add_crop_set(CropSetRef("field crops", crops))
    assert widget._crop_set.value is session.crop_sets[-1]
    assert widget._crop_set.choices == (session.crop_sets[-1],)
    session.add_crop_set(CropSetRef("more crops", crops))
    assert _open(viewer)._crop_set.value is session.crop_sets[-1]  # a widget opened later: the newest


def test_a_cpu_gets_the_compact_model_and_a_budget_and_the_study_recipe_is_one_click_away(make_napari_viewer):
    widget = _open(make_napari_viewer())  # this machine has no GPU
    assert widget._model.value == "realesr-animevideov3"
    assert (widget._budget_on.value, widget._budget.value) == (True, 15.0)
    assert "compact model and a 15-min budget" in widget._status.value
    widget._recipe_button.native.click()
    assert widget._model.value == "realesrgan-x4plus"
    assert (widget._epochs.value, widget._pairs.value, widget._patch.value) == (50, 500, 128)
    assert (widget._degradation.value, widget._budget_on.value) == ("bicubic", False)
    assert widget._config().model == "realesrgan-x4plus"


def test_run_stays_responsive_stops_with_a_checkpoint_and_resumes(
    make_napari_viewer, qtbot, notes, screenshot, tiny_model, scene, crops, tmp_path
):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    viewer.add_image(scene.hr, name="field")
    widget = _open(viewer)
    session = session_for(viewer)
    session.add_crop_set(CropSetRef("disks", crops))
    _tiny_settings(widget, tiny_model, tmp_path, epochs=10_000)
    widget._pairs.value = 64
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(widget._jobs.running))
    timer.start(10)

    widget._start_button.native.click()  # training in a viewer also proves that Triton loads safely
    assert widget._jobs.running
    assert not widget._start_button.enabled
    assert widget._stop_button.enabled
    assert not widget._form.enabled
    plot = widget._plot
    qtbot.waitUntil(lambda: len(plot.train_points) >= 3 and len(plot.val_points) >= 1, timeout=TIMEOUT_MS)
    assert sum(ticks) >= 10  # the event loop kept running while the worker trained
    assert plot.reference is not None  # the pretrained model's validation L1
    assert widget._progress.value > 0
    assert widget._progress.max == 10_000 * 16
    assert widget._progress.native.text().endswith("left")  # epoch, step and the time left

    worker = widget._jobs.worker
    widget._start()  # a second run while one is running is refused
    assert widget._jobs.worker is worker
    assert any("already running" in n.message for n in notes)

    widget._stop_button.native.click()
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)
    timer.stop()
    run_dir = tmp_path / "finetune_disks"
    assert (run_dir / CHECKPOINT_FILE).is_file()
    assert [run.run_dir for run in session.runs] == [run_dir]  # the stopped run's model is usable
    assert "stopped" in widget._status.value
    bar = widget._progress.native.text()  # the position as the status says it: within the epoch, or its end
    assert bar.startswith(("stopped at epoch ", "stopped at the end of epoch "))
    assert bar.removeprefix("stopped at ").split("/")[0] in widget._status.value
    assert widget._resume_button.enabled
    _assert_idle(widget)

    epochs_done = len(_history(run_dir)) - 1  # row 0 is the pretrained model
    widget._epochs.value = epochs_done + 1
    widget._lr.value = 0.5  # not a setting a resumed run can change: said, and not used
    widget._resume_button.native.click()
    assert any("resuming with the run's own lr" in n.message for n in notes)
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)
    assert len(_history(run_dir)) == epochs_done + 2
    assert widget._status.value.startswith("validation PSNR ")  # the verdict first
    assert "pretrained -> fine-tuned" in widget._status.value
    assert f"trained {epochs_done + 1} epoch(s)" in widget._status.value
    assert any(n.message.startswith("fine-tuning finished: validation PSNR") for n in notes)
    assert widget._progress.native.text() == f"finished at the end of epoch {epochs_done + 1}"
    assert [run.model_path for run in session.runs] == [run_dir / MODEL_FILE]
    assert widget._plot.val_points[-1][0] == epochs_done + 1
    assert not _errors(notes)
    _assert_idle(widget)
    assert not widget._resume_button.enabled  # finished: nothing to resume ...
    widget._epochs.value = epochs_done + 2
    assert widget._resume_button.enabled  # ... until more epochs are asked for

    widget._advanced_box.expand(animate=False)
    screenshot(viewer, tmp_path / "finetune.png")


def _history(run_dir):
    return (run_dir / HISTORY_FILE).read_text().splitlines()[1:]


def _train_until_a_step(viewer, qtbot, tiny_model, crops, tmp_path):
    widget = _open(viewer)
    session_for(viewer).add_crop_set(CropSetRef("disks", crops))
    _tiny_settings(widget, tiny_model, tmp_path, epochs=10_000)
    assert widget._intensity.value == Intensity("auto")
    widget._intensity.value = Intensity("bits", bits=8)  # the uint8 crops' own depth
    widget._start_button.native.click()
    qtbot.waitUntil(lambda: len(widget._plot.train_points) >= 1, timeout=TIMEOUT_MS)
    return widget, tmp_path / "finetune_disks"


def test_closing_the_dock_stops_the_run_which_keeps_its_checkpoint_and_model(
    make_napari_viewer, qtbot, notes, tiny_model, crops, tmp_path
):
    viewer = make_napari_viewer()
    widget, run_dir = _train_until_a_step(viewer, qtbot, tiny_model, crops, tmp_path)
    viewer.window.remove_dock_widget(widget.native)  # what the dock's close button does
    assert any("Fine-tune was closed" in n.message for n in notes)
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)
    assert (run_dir / CHECKPOINT_FILE).is_file()
    assert (run_dir / MODEL_FILE).is_file()
    assert [run.run_dir for run in session_for(viewer).runs] == [run_dir]  # usable in the other widgets
    assert json.loads((run_dir / "config.json").read_text())["intensity"] == "bits:8"

    again = _open(viewer)  # a new Fine-tune widget is free to start another run
    assert again._start_button.enabled


def test_closing_the_viewer_waits_for_the_run_to_keep_its_checkpoint_and_model(
    make_napari_viewer, qtbot, tiny_model, crops, tmp_path
):
    viewer = make_napari_viewer()
    widget, run_dir = _train_until_a_step(viewer, qtbot, tiny_model, crops, tmp_path)
    viewer.close()
    assert (run_dir / CHECKPOINT_FILE).is_file()
    assert (run_dir / MODEL_FILE).is_file()
    qtbot.wait(200)  # the job's last events reach a widget that is gone: they are dropped, nothing raises
    assert not widget._jobs.running


def test_shapes_over_a_scaled_image_crop_through_world_coordinates_into_the_images_folder(
    make_napari_viewer, qtbot, notes, tiny_model, scene, tmp_path
):
    source = tmp_path / "field.tif"
    tifffile.imwrite(source, scene.hr)
    viewer = make_napari_viewer()
    (image,) = viewer.open(source, plugin="napari")
    image.scale, image.translate = (0.5, 0.5), (10.0, -4.0)
    boxes = [(20, 30, 60, 90), (100, 40, 140, 72)]  # image pixels, end exclusive
    world = [
        [image.data_to_world((y, x)) for y, x in ((y0, x0), (y1 - 1, x1 - 1))] for y0, x0, y1, x1 in boxes
    ]
    viewer.add_shapes([np.array(corners) for corners in world], shape_type="rectangle", name="boxes")
    widget = _open(viewer)
    widget._source.value = finetune._Source.SHAPES
    assert widget._crop_set.native.isHidden()
    assert not widget._shapes.native.isHidden()
    widget._image.value = image
    _tiny_settings(widget, tiny_model, None, epochs=1)

    widget._start_button.native.click()
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)
    assert not _errors(notes)
    run_dir = tmp_path / "field_microdisk_sr" / "finetune_field"
    info = json.loads((run_dir / "model.json").read_text())["info"]
    assert info["provenance"]["crops"]["arrays"] == [[40, 60], [40, 32]]
    assert [run.run_dir for run in session_for(viewer).runs] == [run_dir]


def test_shapes_that_miss_the_image_are_refused(make_napari_viewer, notes, tiny_model, scene):
    viewer = make_napari_viewer()
    image = viewer.add_image(scene.hr, name="field")
    far = np.array([[-500.0, -500.0], [-400.0, -400.0]])
    viewer.add_shapes([far], shape_type="rectangle", name="elsewhere")
    widget = _open(viewer)
    widget._source.value = finetune._Source.SHAPES
    widget._image.value = image
    _tiny_settings(widget, tiny_model, None, epochs=1)
    widget._start_button.native.click()
    assert not widget._jobs.running
    assert any("no shape of 'elsewhere' lies over 'field'" in message for message in _errors(notes))


def test_a_crops_folder_trains_and_its_run_goes_beside_it(
    make_napari_viewer, qtbot, notes, tiny_model, scene, crops, tmp_path
):
    boxes = [disk_box(disk, scene.hr.shape) for disk in scene.disks_hr]
    folder = tmp_path / "field_crops"
    write_crop_set(crop_disks(scene.hr, boxes, source="field"), folder, stem="field")
    widget = _open(make_napari_viewer())
    widget._source.value = finetune._Source.FOLDER
    widget._folder.value = folder
    _tiny_settings(widget, tiny_model, None, epochs=1)

    widget._start_button.native.click()
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)
    assert not _errors(notes)
    info = json.loads((tmp_path / "finetune_field_crops" / "model.json").read_text())["info"]
    assert info["provenance"]["crops"]["folder"] == str(folder)
    assert len(info["provenance"]["crops"]["files"]) == len(crops)


def test_a_profile_file_trains_with_the_calibrated_degradation(
    make_napari_viewer, qtbot, notes, tiny_model, crops, tmp_path
):
    profile = DegradationProfile(photons=300.0, read_noise=0.02, psf_sigma=1.2, gain=0.9, offset=0.05)
    path = write_profile(tmp_path / "microscope.json", profile)
    viewer = make_napari_viewer()
    widget = _open(viewer)
    session_for(viewer).add_crop_set(CropSetRef("disks", crops))
    _tiny_settings(widget, tiny_model, tmp_path, epochs=1)
    assert widget._profile.native.isHidden()  # shown only for "profile file..."
    widget._degradation.value = DegradationChoice.PROFILE
    assert not widget._profile.native.isHidden()

    widget._start_button.native.click()  # no file chosen yet
    assert any("choose a degradation profile" in message for message in _errors(notes))
    assert not widget._jobs.running
    widget._profile.value = path
    widget._start_button.native.click()
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)
    assert len(_errors(notes)) == 1  # the refusal above, nothing since
    config = json.loads((tmp_path / "finetune_disks" / "config.json").read_text())
    assert config["degradation"] == str(path)
    assert config["profile"]["photons"] == 300.0


def test_a_profile_brings_its_intensity_mapping_and_its_bit_depth_hint(
    make_napari_viewer, qtbot, notes, tiny_model, crops, tmp_path
):
    """Dim 12-bit crops in uint16 and a profile fitted under range: auto (the box) trains under range, and
    the hint says what the data look like."""
    profile = DegradationProfile(photons=300.0, read_noise=0.02, intensity="range")
    path = write_profile(tmp_path / "microscope.json", profile)
    dim = tuple((crop.astype(np.uint16) * 16).astype(np.uint16) for crop in crops)  # at most 4080
    viewer = make_napari_viewer()
    widget = _open(viewer)
    session_for(viewer).add_crop_set(CropSetRef("dim", dim))
    _tiny_settings(widget, tiny_model, tmp_path, epochs=1)
    widget._degradation.value = DegradationChoice.PROFILE
    widget._profile.value = path
    assert widget._intensity.value == AUTO
    widget._start_button.native.click()
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)
    assert not _errors(notes)
    assert json.loads((tmp_path / "finetune_dim" / "config.json").read_text())["intensity"] == "range"
    warnings = [n.message for n in notes if n.severity == NotificationSeverity.WARNING]
    assert any("if it holds 12-bit data, set Intensity to 12 bits (or percentile)" in m for m in warnings)


def test_a_runtime_error_in_the_worker_is_reported_and_leaves_the_widget_usable(
    make_napari_viewer, qtbot, notes, monkeypatch, crops, tmp_path
):
    def out_of_memory(crops, config, run_dir, *, stop, resume, lr_crops):
        yield TrainEvent(EventKind.STARTED, 0, config.epochs, 0, 10, message="starting")
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(finetune, "fine_tune", out_of_memory)
    viewer = make_napari_viewer()
    widget = _open(viewer)
    session_for(viewer).add_crop_set(CropSetRef("disks", crops))
    widget._output.value = tmp_path
    for _ in range(2):  # and a second try fails the same way: nothing is stuck
        widget._start_button.native.click()
        qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)
        _assert_idle(widget)
        assert widget._status.value.startswith("failed: RuntimeError: CUDA out of memory")
        assert widget._progress.native.text().startswith("failed at ")
        assert list(tmp_path.iterdir()) == []  # the run folder claimed for it is gone: nothing was written
    assert sum("CUDA out of memory" in message for message in _errors(notes)) == 2
    assert not session_for(viewer).runs


def test_the_loss_axis_is_logarithmic_and_not_set_by_training_spikes():
    train = [0.05] * 50 + [5.0]  # one early spike, a hundred times the rest
    low, high = loss_range(train, val=[0.04, 0.03], reference=0.06)
    assert 10**low < 0.03
    assert 0.06 < 10**high < 0.2
    assert loss_range([], [], None) == (-1.0, 0.0)
    assert loss_range([0.1], [], None)[0] < math.log10(0.1) < loss_range([0.1], [], None)[1]


def test_a_paired_crops_folder_trains_on_its_registered_lr_crops(
    make_napari_viewer, qtbot, notes, tiny_model, scene, tmp_path
):
    folder = tmp_path / "paired_crops"
    write_crop_set(crop_pairs(scene.hr, scene.lr, scene.disks_hr, source="field"), folder, stem="field")
    paired = read_crop_set(folder)
    widget = _open(make_napari_viewer())
    widget._source.value = finetune._Source.FOLDER
    widget._folder.value = folder
    _tiny_settings(widget, tiny_model, None, epochs=1)

    widget._start_button.native.click()
    assert "paired crop set" in widget._status.value
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)
    assert not _errors(notes)
    run_dir = tmp_path / "finetune_paired_crops"
    crops = json.loads((run_dir / "model.json").read_text())["info"]["provenance"]["crops"]
    assert crops["lr_files"] == [row["lr_file"] for row in paired.rows]
    assert crops["sha256"] == crops_fingerprint(paired.images, paired.lr_images)  # trained on them


def test_a_finished_run_exports_as_a_model_zoo_package(
    make_napari_viewer, qtbot, notes, monkeypatch, tiny_model, crops, tmp_path
):
    pytest.importorskip("bioimageio.spec")
    from napari_microdisk_sr.core.models import load_model

    viewer = make_napari_viewer()
    session_for(viewer).add_crop_set(CropSetRef("disks", crops))
    widget = _open(viewer)
    _tiny_settings(widget, tiny_model, tmp_path, epochs=1)
    assert not widget._export_button.enabled
    widget._start_button.native.click()
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)
    assert widget._export_button.enabled
    package = tmp_path / "shared.zip"
    monkeypatch.setattr(finetune.QFileDialog, "getSaveFileName", lambda *a, **k: (str(package), ""))
    widget._export_button.native.click()
    assert not _errors(notes)
    assert load_model(package).spec.arch == "SRVGGNetCompact"
    before = package.read_bytes()
    widget._export_button.native.click()  # the file dialog confirmed a replacement; the export refuses it
    assert any("not overwritten" in message for message in _errors(notes))
    assert package.read_bytes() == before
