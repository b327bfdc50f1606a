"""The Super-resolve dock widget in a real viewer: alignment, provenance, files, cancel, errors."""

import hashlib
import time

import numpy as np
import pytest
import tifffile
import torch
from napari.utils.notifications import NotificationSeverity

from napari_microdisk_sr._widgets import superresolve
from napari_microdisk_sr._widgets._session import RunRef, session_for
from napari_microdisk_sr._widgets.superresolve import SuperResolveWidget
from napari_microdisk_sr.core import infer, model_cache, models
from napari_microdisk_sr.core.device import cpu_has_native_bf16
from napari_microdisk_sr.core.intensity import RANGE, Intensity
from napari_microdisk_sr.core.io import read_image
from napari_microdisk_sr.core.models import ModelSpec, recorded_intensity_of, save_model
from napari_microdisk_sr.core.sample import make_scene

PLUGIN = "napari-microdisk-sr"
WIDGET = "Super-resolve"
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def nearest_model(tmp_path_factory):
    """A tiny SRVGGNetCompact with zero weights: its output is exactly the nearest-neighbour x4 upscale."""
    spec = ModelSpec("SRVGGNetCompact", {"num_feat": 4, "num_conv": 1, "upscale": 4})
    zeros = {key: torch.zeros_like(value) for key, value in spec.build().state_dict().items()}
    return save_model(zeros, spec, tmp_path_factory.mktemp("models") / "nearest.pth")


@pytest.fixture
def scene():
    return make_scene(seed=3, size=(48, 64), n_disks=4)


def _open(make_napari_viewer, *layers):
    viewer = make_napari_viewer()
    for data, kwargs in layers:
        viewer.add_image(data, **kwargs)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return viewer, widget


def _use_file_model(widget, path):
    widget._model.value = widget._model.choices[2]  # "file..."
    assert not widget._weights.native.isHidden()
    widget._weights.value = path


def _run(qtbot, widget):
    widget._run.native.click()
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)


def _sample(layer, world_points):
    """The layer's pixel values nearest to each world point."""
    index = np.rint([layer.world_to_data(p) for p in world_points]).astype(int)
    return layer.data[index[:, 0], index[:, 1]]


def test_output_is_aligned_written_beside_the_file_and_carries_provenance(
    make_napari_viewer, qtbot, screenshot, tmp_path, nearest_model, scene
):
    source = tmp_path / "field.tif"
    tifffile.imwrite(source, scene.lr)
    viewer = make_napari_viewer(show=True)
    (lr,) = viewer.open(source, plugin="napari")
    lr.scale, lr.translate, lr.units = (0.65, 0.65), (12.0, -30.0), ("um", "um")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert widget._images.value == [lr]
    _use_file_model(widget, nearest_model)
    widget._tile.value = 32
    _run(qtbot, widget)

    out = viewer.layers["field_x4 (nearest)"]
    assert out.data.shape == (4 * 48, 4 * 64)
    assert out.units == lr.units
    np.testing.assert_array_equal(out.data, scene.lr.repeat(4, axis=0).repeat(4, axis=1))
    # Points drawn on the original at the disk centres land on the same disks in the output ...
    centres = viewer.add_points([lr.data_to_world((d.cy, d.cx)) for d in scene.disks_lr])
    for world, disk in zip(centres.data, scene.disks_lr, strict=True):
        hr = disk.rescaled(4)
        np.testing.assert_allclose(out.world_to_data(world), (hr.cy, hr.cx), atol=1e-9)
    # ... and everywhere, both layers show the same pixel at the same place in the world.
    rng = np.random.default_rng(0)
    world = rng.uniform(lr.data_to_world((-0.49, -0.49)), lr.data_to_world((47.49, 63.49)), size=(500, 2))
    np.testing.assert_array_equal(_sample(out, world), _sample(lr, world))

    provenance = out.metadata["microdisk_sr"]
    written = tmp_path / "field_microdisk_sr" / "field_x4_nearest.tif"
    assert provenance["model"] == "nearest"
    assert provenance["model_source"] == str(nearest_model)
    assert provenance["model_sha256"] == hashlib.sha256(nearest_model.read_bytes()).hexdigest()
    assert provenance["tile"] == 32
    assert provenance["device"].startswith("CPU")
    assert provenance["input_layer"] == "field"
    assert provenance["output_path"] == str(written)
    np.testing.assert_array_equal(tifffile.imread(written), out.data)
    pixel_size = read_image(written).pixel_size
    assert (pixel_size.y, pixel_size.x, pixel_size.unit) == (
        pytest.approx(0.1625),
        pytest.approx(0.1625),
        "um",
    )
    assert widget._status.value == f"done: 1 layer(s) super-resolved; written to {written.parent}"
    np.testing.assert_array_equal(tifffile.imread(source), scene.lr)  # the original is untouched

    _run(qtbot, widget)  # a second run never overwrites the first output
    assert (tmp_path / "field_microdisk_sr" / "field_x4_nearest-1.tif").is_file()
    assert "done: 1 layer" in widget._status.value
    assert widget._run.enabled
    assert not widget._cancel.enabled
    screenshot(viewer, tmp_path / "superresolve.png")


def test_cancel_adds_no_layer(make_napari_viewer, qtbot, nearest_model, scene):
    viewer, widget = _open(make_napari_viewer, (scene.lr, {"name": "lr"}))
    _use_file_model(widget, nearest_model)
    widget._tile.value = 16
    widget._run.native.click()
    assert widget._cancel.enabled
    widget._cancel.native.click()
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)
    assert [layer.name for layer in viewer.layers] == ["lr"]
    assert "stopped: 0 of 1" in widget._status.value
    assert widget._progress.value == 0  # not a full bar beside "stopped"
    assert widget._run.enabled
    assert not widget._cancel.enabled


def test_output_is_added_when_the_input_layer_is_deleted_during_the_run(
    make_napari_viewer, qtbot, nearest_model, scene
):
    other = np.zeros((8, 8), np.uint8)
    viewer, widget = _open(make_napari_viewer, (other, {"name": "other"}), (scene.lr, {"name": "lr"}))
    widget._images.value = [viewer.layers["lr"]]
    _use_file_model(widget, nearest_model)
    widget._run.native.click()
    assert widget._jobs.running
    viewer.layers.remove("lr")
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)
    assert [layer.name for layer in viewer.layers] == ["other", "lr_x4 (nearest)"]
    assert viewer.layers["other"].data is other
    np.testing.assert_array_equal(viewer.layers[1].data, scene.lr.repeat(4, axis=0).repeat(4, axis=1))


def test_a_second_run_is_refused_while_one_is_running(make_napari_viewer, qtbot, nearest_model, scene, notes):
    viewer, widget = _open(make_napari_viewer, (scene.lr, {"name": "lr"}))
    _use_file_model(widget, nearest_model)
    widget._run.native.click()
    assert not widget._run.enabled
    widget._run.native.click()  # a disabled button does nothing ...
    widget._start()  # ... and the runner refuses a second job
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)
    assert [layer.name for layer in viewer.layers] == ["lr", "lr_x4 (nearest)"]
    assert any("already running" in note.message for note in notes)


def test_an_error_in_the_worker_is_notified_and_leaves_the_widget_ready(
    make_napari_viewer, qtbot, monkeypatch, nearest_model, scene, notes
):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(infer, "upscale", out_of_memory)
    viewer, widget = _open(make_napari_viewer, (scene.lr, {"name": "lr"}))
    _use_file_model(widget, nearest_model)
    _run(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["lr"]
    assert widget._run.enabled
    assert not widget._cancel.enabled
    assert "CUDA out of memory" in widget._status.value
    errors = [note for note in notes if note.severity == NotificationSeverity.ERROR]
    assert any("CUDA out of memory" in note.message for note in errors)


def test_model_choices_follow_the_session_runs(make_napari_viewer, qtbot, tmp_path, nearest_model, scene):
    viewer, widget = _open(make_napari_viewer, (scene.lr, {"name": "lr"}))
    labels = [widget._model.native.itemText(i) for i in range(widget._model.native.count())]
    assert labels == ["realesrgan-x4plus", "realesr-animevideov3", "file..."]
    assert widget._model.value == "realesrgan-x4plus"
    assert widget._weights.native.isHidden()

    session_for(viewer).add_run(RunRef("disks-1", nearest_model, tmp_path))
    assert widget._model.native.itemText(3) == "run: disks-1"
    widget._model.value = nearest_model
    _run(qtbot, widget)
    assert viewer.layers[-1].name == "lr_x4 (nearest)"


def test_runs_reuse_the_loaded_model_until_its_file_changes(
    make_napari_viewer, qtbot, monkeypatch, tmp_path, scene
):
    loads = []
    real_load = model_cache.load_model
    monkeypatch.setattr(
        model_cache, "load_model", lambda ref, **kw: loads.append(ref) or real_load(ref, **kw)
    )
    spec = ModelSpec("SRVGGNetCompact", {"num_feat": 4, "num_conv": 1, "upscale": 4})
    zeros = {key: torch.zeros_like(value) for key, value in spec.build().state_dict().items()}
    path = save_model(zeros, spec, tmp_path / "retrained.pth")
    viewer, widget = _open(make_napari_viewer, (scene.lr, {"name": "lr"}))
    _use_file_model(widget, path)
    _run(qtbot, widget)
    _run(qtbot, widget)
    assert len(loads) == 1
    ones = {key: value.fill_(1.0) for key, value in zeros.items()}  # the run folder's model is retrained
    save_model(ones, spec, path, overwrite=True)
    _run(qtbot, widget)
    assert len(loads) == 2
    names = [layer.name for layer in viewer.layers]
    assert names[1:] == [f"lr_x4 (retrained){n}" for n in ("", " [1]", " [2]")]
    assert not np.array_equal(viewer.layers[3].data, viewer.layers[1].data)


def test_intensity_is_hinted_at_used_and_recorded(make_napari_viewer, qtbot, notes, nearest_model, scene):
    data = scene.lr.astype(np.uint16) * 16  # 12-bit data in a 16-bit layer
    viewer, widget = _open(make_napari_viewer, (data, {"name": "cam"}))
    assert widget._intensity.native.currentText() == "model's own (else auto)"
    _use_file_model(widget, nearest_model)
    _run(qtbot, widget)
    warnings = [n.message for n in notes if n.severity == NotificationSeverity.WARNING]
    assert not warnings  # auto maps a uint16 layer by its percentiles: nothing to hint at
    assert viewer.layers[-1].metadata["microdisk_sr"]["intensity"] == "auto"
    np.testing.assert_array_equal(viewer.layers[-1].data, data.repeat(4, axis=0).repeat(4, axis=1))

    widget._intensity.value = RANGE
    _run(qtbot, widget)
    warnings = [n.message for n in notes if n.severity == NotificationSeverity.WARNING]
    assert any("if it holds 12-bit data, set Intensity to 12 bits (or percentile)" in m for m in warnings)
    assert viewer.layers[-1].metadata["microdisk_sr"]["intensity"] == "range"

    notes.clear()
    widget._intensity.value = Intensity("bits", bits=12)
    _run(qtbot, widget)
    assert not [n for n in notes if n.severity == NotificationSeverity.WARNING]
    out = viewer.layers[-1]
    assert out.metadata["microdisk_sr"]["intensity"] == "bits:12"
    np.testing.assert_array_equal(out.data, data.repeat(4, axis=0).repeat(4, axis=1))

    eight = viewer.add_image(scene.lr, name="eight")  # a uint8 layer cannot be 12-bit data
    n_layers = len(viewer.layers)
    widget._images.value = [viewer.layers["cam"], eight]
    widget._run.native.click()
    assert not widget._jobs.running  # refused before the first layer is upscaled
    assert len(viewer.layers) == n_layers
    assert widget._status.value.startswith("not started: 'eight': a uint8 image holds at most 8 bits")


def test_model_s_own_mapping_is_checked_before_any_layer_is_upscaled(
    make_napari_viewer, qtbot, tmp_path, scene
):
    spec = ModelSpec("SRVGGNetCompact", {"num_feat": 4, "num_conv": 1, "upscale": 4})
    zeros = {key: torch.zeros_like(value) for key, value in spec.build().state_dict().items()}
    info = {"fine_tuning": {"config": {"intensity": "bits:12"}}}  # as a fine-tuning run records it
    path = save_model(zeros, spec, tmp_path / "twelve.pth", info=info)
    assert str(recorded_intensity_of(path)) == "bits:12"
    cam = (scene.lr.astype(np.uint16) * 16, {"name": "cam"})
    viewer, widget = _open(make_napari_viewer, cam, (scene.lr, {"name": "eight"}))
    _use_file_model(widget, path)
    assert widget._intensity.value is None  # the model's own
    widget._images.value = [viewer.layers["cam"], viewer.layers["eight"]]
    widget._run.native.click()
    assert not widget._jobs.running  # refused before the first layer is upscaled
    assert len(viewer.layers) == 2
    assert widget._status.value.startswith("not started: 'eight': a uint8 image holds at most 8 bits")
    widget._images.value = [viewer.layers["cam"]]
    _run(qtbot, widget)
    assert viewer.layers[-1].metadata["microdisk_sr"]["intensity"] == "bits:12"


def test_device_choice_shows_the_resolved_device_and_half_where_it_pays(make_napari_viewer):
    _, widget = _open(make_napari_viewer)
    widget._device.value = "cpu"
    assert widget._device_info.value.startswith("CPU")
    assert widget._half.enabled == cpu_has_native_bf16()  # bfloat16 on CPUs that compute it natively
    widget._device.value = "cuda"
    assert widget._half.enabled == torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in widget._device_info.value
    assert widget._tile.value == infer.UpscaleConfig().tile


def test_written_outputs_keep_the_input_pixel_size_over_four(
    make_napari_viewer, qtbot, tmp_path, nearest_model
):
    image = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)
    for name in ("plain", "scaled"):
        tifffile.imwrite(tmp_path / f"{name}.tif", image)
    viewer = make_napari_viewer()
    (plain,) = viewer.open(tmp_path / "plain.tif", plugin="napari")
    (scaled,) = viewer.open(tmp_path / "scaled.tif", plugin="napari")
    scaled.scale = (0.65, 0.65)  # a pixel size in the scale, without units: read as micrometres
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    _use_file_model(widget, nearest_model)
    widget._images.value = [scaled]
    assert widget._pixel_size.value == pytest.approx(0.65)  # filled in from the layer's scale
    _run(qtbot, widget)
    written = read_image(tmp_path / "scaled_microdisk_sr" / "scaled_x4_nearest.tif").pixel_size
    assert (written.y, written.x, written.unit) == (pytest.approx(0.1625), pytest.approx(0.1625), "um")

    widget._images.value = [plain]
    assert widget._pixel_size.value == 0  # unknown
    _run(qtbot, widget)
    written = read_image(tmp_path / "plain_microdisk_sr" / "plain_x4_nearest.tif").pixel_size
    assert (written.y, written.x) == (0.25, 0.25)  # a quarter of the input's pixel, which has no unit


def test_the_newest_run_of_the_session_is_preselected(make_napari_viewer, tmp_path, nearest_model):
    viewer = make_napari_viewer()
    session_for(viewer).add_run(RunRef("first", nearest_model, tmp_path))
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert widget._model.value == nearest_model  # a run made before the widget opened
    second = tmp_path / "second.pth"
    second.write_bytes(nearest_model.read_bytes())
    session_for(viewer).add_run(RunRef("second", second, tmp_path))
    assert widget._model.value == second  # and each run finished while it is open


def test_only_a_visible_active_image_layer_is_preselected(make_napari_viewer, scene):
    viewer = make_napari_viewer()
    viewer.add_image(scene.lr, name="hidden", visible=False)  # the active layer, but hidden
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    assert widget._images.value == []
    shown = viewer.add_image(scene.lr, name="shown")
    assert SuperResolveWidget(viewer)._images.value == [shown]


def test_the_lr_consistency_map_is_added_over_the_input_and_written_beside_the_output(
    make_napari_viewer, qtbot, tmp_path, nearest_model, scene
):
    """A nearest-neighbour x4 degraded back by 4x4 averaging is its input again: a map of zeros."""
    source = tmp_path / "field.tif"
    tifffile.imwrite(source, scene.lr)
    viewer = make_napari_viewer()
    (lr,) = viewer.open(source, plugin="napari")
    lr.scale, lr.translate = (0.65, 0.65), (12.0, -30.0)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    _use_file_model(widget, nearest_model)
    widget._consistency.value = True
    _run(qtbot, widget)

    check = viewer.layers["field_x4 (nearest) LR consistency %"]
    assert check.data.shape == scene.lr.shape
    assert check.data.max() < 1e-4  # % of the range: zero up to float32 rounding
    np.testing.assert_allclose(check.scale, lr.scale)
    np.testing.assert_allclose(check.translate, lr.translate)
    assert check.colormap.name == "magma"
    assert viewer.layers["field_x4 (nearest)"].metadata["microdisk_sr"]["lr_consistency_psnr"] > 120.0
    written = tmp_path / "field_microdisk_sr" / "field_x4_nearest_consistency.tif"
    assert tifffile.imread(written).shape == scene.lr.shape


# --- previews -------------------------------------------------------------------------------------------


def _zoomed_viewer(make_napari_viewer, qtbot, tmp_path):
    """A viewer zoomed into part of a layer opened from a file; Super-resolve set to the visible region."""
    scene = make_scene(seed=5, size=(96, 128), n_disks=12)
    source = tmp_path / "field.tif"
    tifffile.imwrite(source, scene.lr)
    viewer = make_napari_viewer(show=True)
    (lr,) = viewer.open(source, plugin="napari")
    lr.scale, lr.translate = (0.5, 0.5), (3.0, -2.0)
    viewer.reset_view()
    viewer.camera.zoom *= 3
    viewer.camera.center = lr.data_to_world((30, 40))
    qtbot.wait(300)  # the canvas draws: the layer's visible corners are known
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget._scope.value = widget._scope.choices[1]  # the visible region
    return viewer, widget, lr, scene


def test_the_visible_region_is_previewed_aligned_and_not_written(
    make_napari_viewer, qtbot, tmp_path, nearest_model
):
    viewer, widget, lr, scene = _zoomed_viewer(make_napari_viewer, qtbot, tmp_path)
    _use_file_model(widget, nearest_model)
    assert widget._images.value == [lr]
    _run(qtbot, widget)

    out = viewer.layers["field preview x4 (nearest)"]
    y0, y1, x0, x1 = out.metadata["microdisk_sr"]["region"]
    assert 0 < y1 - y0 < 96
    assert 0 < x1 - x0 < 128
    assert y0 <= 30 < y1
    assert x0 <= 40 < x1
    assert out.data.shape == (4 * (y1 - y0), 4 * (x1 - x0))
    np.testing.assert_array_equal(out.data, scene.lr[y0:y1, x0:x1].repeat(4, axis=0).repeat(4, axis=1))
    # the preview's pixels lie where the original's are: disk centres drawn on the original land on them
    inside = [d for d in scene.disks_lr if y0 + 1 <= d.cy <= y1 - 2 and x0 + 1 <= d.cx <= x1 - 2]
    assert inside
    for disk in inside:
        world = lr.data_to_world((disk.cy, disk.cx))
        np.testing.assert_allclose(
            out.world_to_data(world), ((disk.cy - y0) * 4 + 1.5, (disk.cx - x0) * 4 + 1.5)
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["field.tif"]  # nothing written
    assert widget._status.value.startswith("preview: 1 region(s) in ")
    assert widget._status.value.endswith("(not written)")


def test_a_preview_of_a_stack_plane_is_mapped_by_the_whole_stack(make_napari_viewer, qtbot, tmp_path):
    spec = ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 4})
    torch.manual_seed(0)
    model_file = save_model(spec.build().state_dict(), spec, tmp_path / "tiny.pth")
    rng = np.random.default_rng(2)
    stack = np.stack([rng.integers(100, 210, (48, 40)), rng.integers(0, 4000, (48, 40))]).astype(np.uint16)
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(stack, name="stack")
    viewer.dims.set_current_step(0, 0)
    qtbot.wait(300)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget._scope.value = widget._scope.choices[1]  # the visible region
    _use_file_model(widget, model_file)
    assert widget._images.value == [layer]
    _run(qtbot, widget)

    out = viewer.layers["stack preview x4 (tiny)"]
    y0, y1, x0, x1 = out.metadata["microdisk_sr"]["region"]
    whole = infer.upscale_array(stack, models.load_model(model_file), device="cpu")
    np.testing.assert_array_equal(out.data[0], whole[0, 4 * y0 : 4 * y1, 4 * x0 : 4 * x1])


def test_following_the_view_cancels_a_preview_under_way_and_previews_the_new_region(
    make_napari_viewer, qtbot, tmp_path, nearest_model, monkeypatch
):
    started, real = [], superresolve.preview

    def slow_preview(plane, model, region, **kwargs):
        started.append(region)
        job = real(plane, model, region, **kwargs)

        def slowed():
            result = None
            try:
                while True:
                    event = next(job)
                    time.sleep(0.3)
                    yield event
            except StopIteration as end:
                result = end.value
            return result

        return slowed()

    monkeypatch.setattr(superresolve, "preview", slow_preview)
    viewer, widget, lr, _ = _zoomed_viewer(make_napari_viewer, qtbot, tmp_path)
    _use_file_model(widget, nearest_model)
    widget._follow.value = True
    viewer.camera.center = lr.data_to_world((20, 30))  # the view moves ...
    qtbot.waitUntil(lambda: widget._jobs.running, timeout=TIMEOUT_MS)  # ... settles: a preview starts
    viewer.camera.center = lr.data_to_world((70, 100))  # and moves on during it
    qtbot.waitUntil(lambda: len(started) == 2, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: not widget._jobs.running, timeout=TIMEOUT_MS)
    out = viewer.layers["field preview x4 (nearest)"]
    y0, y1, x0, x1 = out.metadata["microdisk_sr"]["region"]
    assert (y0, y1, x0, x1) == (started[1].y0, started[1].y1, started[1].x0, started[1].x1)
    assert y0 <= 70 < y1
    assert x0 <= 100 < x1
    assert started[0] != started[1]  # ... after the first one was cancelled
    widget._follow.value = False
    viewer.camera.center = lr.data_to_world((20, 30))
    qtbot.wait(600)
    assert len(started) == 2  # not following any more


def test_each_rectangle_of_a_shapes_layer_is_previewed_in_its_own_layer(
    make_napari_viewer, qtbot, tmp_path, nearest_model, scene
):
    viewer, widget = _open(make_napari_viewer, (scene.lr, {"name": "lr", "scale": (2.0, 2.0)}))
    boxes = viewer.add_shapes(
        [
            np.array([[4, 6], [4, 30], [20, 30], [20, 6]]) * 2.0,
            np.array([[30, 40], [30, 60], [44, 60], [44, 40]]) * 2.0,
        ],
        shape_type="rectangle",
        name="boxes",
    )
    widget._images.value = [viewer.layers["lr"]]
    widget._scope.value = widget._scope.choices[2]
    widget._rectangles.value = boxes
    _use_file_model(widget, nearest_model)
    _run(qtbot, widget)
    first = viewer.layers["lr [4:21, 6:31] x4 (nearest)"]  # the pixels the outline touches
    second = viewer.layers["lr [30:45, 40:61] x4 (nearest)"]
    np.testing.assert_array_equal(first.data, scene.lr[4:21, 6:31].repeat(4, axis=0).repeat(4, axis=1))
    assert second.data.shape == (15 * 4, 21 * 4)
    np.testing.assert_allclose(
        first.data_to_world((0, 0)), viewer.layers["lr"].data_to_world((4 - 0.375, 6 - 0.375))
    )


def test_a_second_model_previews_the_same_region_beside_the_first(
    make_napari_viewer, qtbot, tmp_path, nearest_model, scene
):
    viewer, widget = _open(make_napari_viewer, (scene.lr, {"name": "lr"}))
    boxes = viewer.add_shapes([np.array([[4, 6], [4, 30], [20, 30], [20, 6]])], shape_type="rectangle")
    widget._images.value = [viewer.layers["lr"]]
    widget._scope.value = widget._scope.choices[2]
    widget._rectangles.value = boxes
    _use_file_model(widget, nearest_model)
    other = tmp_path / "other.pth"
    other.write_bytes(nearest_model.read_bytes())
    other.with_suffix(".json").write_bytes(nearest_model.with_suffix(".json").read_bytes())
    session_for(viewer).add_run(RunRef("other", other, tmp_path))
    _use_file_model(widget, nearest_model)  # the new run was preselected as the model
    widget._compare.value = other
    _run(qtbot, widget)
    first, second = (viewer.layers[f"lr [4:21, 6:31] x4 ({name})"] for name in ("nearest", "other"))
    np.testing.assert_array_equal(first.data, second.data)
    np.testing.assert_array_equal(first.translate, second.translate)
    np.testing.assert_array_equal(first.scale, second.scale)


def test_a_closed_widget_stops_following_the_view(make_napari_viewer, qtbot, tmp_path, nearest_model, notes):
    viewer, widget, lr, _ = _zoomed_viewer(make_napari_viewer, qtbot, tmp_path)
    _use_file_model(widget, nearest_model)
    widget._follow.value = True
    viewer.window.remove_dock_widget(widget.native.parent())
    widget.native.deleteLater()
    qtbot.wait(50)
    viewer.camera.center = lr.data_to_world((70, 100))  # nothing calls into the deleted widget
    qtbot.wait(600)
    assert not [n for n in notes if n.severity == NotificationSeverity.ERROR]
    assert not [layer.name for layer in viewer.layers if "preview" in layer.name]


def test_a_layer_is_written_to_ome_zarr_and_shown_lazily(
    make_napari_viewer, qtbot, tmp_path, nearest_model, scene
):
    source = tmp_path / "field.tif"
    tifffile.imwrite(source, scene.lr)
    viewer = make_napari_viewer()
    (lr,) = viewer.open(source, plugin="napari")
    lr.scale = (0.65, 0.65)
    lr.translate = (13.0, 6.5)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    _use_file_model(widget, nearest_model)
    widget._ome_zarr.value = True
    _run(qtbot, widget)

    out = viewer.layers["field_x4 (nearest)"]
    store = tmp_path / "field_microdisk_sr" / "field_x4_nearest.ome.zarr"
    assert out.multiscale
    assert out.metadata["microdisk_sr"]["output_path"] == str(store)
    np.testing.assert_array_equal(np.asarray(out.data[0]), scene.lr.repeat(4, axis=0).repeat(4, axis=1))
    np.testing.assert_allclose(out.scale, (0.1625, 0.1625))
    assert widget._status.value == f"done: 1 layer(s) super-resolved; written to {store.parent}"

    (reopened,) = viewer.open(store, plugin=PLUGIN)  # the multiscale layer goes in as OME-Zarr too
    np.testing.assert_allclose(reopened.scale, out.scale)
    np.testing.assert_allclose(reopened.translate, out.translate)  # the store lies where its layer does
    viewer.layers.selection.active = reopened
    widget._images.value = [reopened]
    _run(qtbot, widget)
    again = (
        tmp_path
        / "field_microdisk_sr"
        / "field_x4_nearest_microdisk_sr"
        / "field_x4_nearest_x4_nearest.ome.zarr"
    )
    assert viewer.layers["field_x4_nearest_x4 (nearest)"].metadata["microdisk_sr"]["output_path"] == str(
        again
    )
    assert viewer.layers["field_x4_nearest_x4 (nearest)"].data[0].shape == (16 * 48, 16 * 64)
