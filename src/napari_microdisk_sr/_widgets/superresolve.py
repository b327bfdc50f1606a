"""The "Super-resolve" dock widget: upscale image layers with a registry model, a fine-tuned run or a file.

Each selected layer's data is read here on the main thread and handed to a worker as a plain array; the
worker loads the model, runs :func:`~napari_microdisk_sr.core.infer.upscale` tile by tile and, for a layer
opened from a file, writes the result beside it. Every result becomes a new layer, aligned with its input in
world coordinates, whatever happened to the input layer meanwhile.
"""

import enum
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)
from napari.layers import Image, Shapes

from ..core import infer
from ..core.device import half_dtype, resolve_device
from ..core.errors import InputError, MicrodiskSRError
from ..core.images import Normalization, image_layout, normalizations_for
from ..core.intensity import AUTO
from ..core.layers import region_geometry, upscaled_geometry
from ..core.model_cache import ModelCache
from ..core.models import REGISTRY, recorded_intensity_of
from ..core.preview import PreviewCache, preview
from ..core.progress import StopFlag
from ..core.regions import Region
from ._controls import (
    FILE_CHOICE,
    chosen_model,
    device_row,
    hint_bit_depth,
    intensity_box,
    model_row,
    refuse,
    resolved_device,
    show_rows,
    status_line,
)
from ._jobs import JobRunner
from ._layers import layer_choices, shape_boxes
from ._preview import ViewFollower, visible_region
from ._scroll import make_scrollable
from ._session import session_for
from ._sources import Source, pixel_size_um, read_source
from ._upscale_jobs import Status, Upscaled, upscale_layers, upscale_layers_to_ome_zarr

if TYPE_CHECKING:
    import napari

_MAX_TILE = 4096


class _Scope(enum.Enum):
    """What Super-resolve upscales."""

    WHOLE = "whole layers"
    VISIBLE = "the visible region"
    RECTANGLES = "rectangles of a Shapes layer"


@dataclass(frozen=True, eq=False)
class _Window:
    """A region of one plane of a layer, read on the main thread: what a preview needs."""

    source: Source  # the layer (its data: the plane)
    plane_index: tuple[int, ...]
    region: Region
    name: str  # of the preview layer
    stack: "np.ndarray | None" = None  # the whole stack of an in-memory stack layer: it maps the values


@dataclass(frozen=True, eq=False)
class _Previewed:
    """A finished preview."""

    window: _Window
    result: infer.UpscaleResult
    scale: int


class SuperResolveWidget(Container):
    """Upscale one or more image layers x4 into new, aligned layers, with progress and cancel."""

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__()
        self._viewer = viewer
        self._session = session_for(viewer)
        self._jobs = JobRunner(self.native, name="Super-resolve")
        self._models = ModelCache()
        self._count = 0
        self._written: list[Path] = []

        self._cache = PreviewCache()
        self._pending = False  # the view moved during a preview: preview again when it ends
        self._previewed_view: tuple[Any, ...] = ()  # what the last visible-region preview started with
        self._started = 0.0
        self._scope = ComboBox(label="Upscale", choices=[(scope.value, scope) for scope in _Scope])
        self._rectangles = ComboBox(label="Rectangles", choices=layer_choices(viewer, Shapes))
        self._follow = CheckBox(
            text="follow the view",
            tooltip="Upscale the visible region again whenever panning or zooming stops; blocks already\n"
            "upscaled with the same model and settings are reused.",
        )
        self._follower = ViewFollower(viewer, self._on_view_settled, self.native)
        self._compare = ComboBox(
            label="Compare with",
            choices=self._compare_choices,
            tooltip="A second model previewed on the same regions, as aligned layers beside the first\n"
            "(e.g. the pretrained model against the run just trained).",
        )
        self._images = Select(label="Images", choices=layer_choices(viewer, Image))
        show_rows(self._images, 5)
        self._model, self._weights = model_row(self._model_choices)
        self._pixel_size = FloatSpinBox(
            label="Pixel size (µm)",
            value=0.0,
            min=0.0,
            max=10_000.0,
            step=0.01,
            tooltip="Of the input layers, for the files written (the output's is a quarter of it).\n"
            "Filled in from the first selected layer's scale; 0: unknown (the file then says only that\n"
            "its pixels are a quarter of the input's).",
        )
        self._tile = SpinBox(
            label="Tile (px)",
            value=infer.UpscaleConfig().tile,
            min=0,
            max=_MAX_TILE,
            step=32,
            tooltip="Tile side in input pixels; 0 upscales each image at once (fastest, most memory).",
        )
        self._intensity = intensity_box(model_default=True)
        self._device, self._device_info = device_row(info_label="Runs on")
        self._half = CheckBox(
            text="half precision (fast preview)",
            value=False,
            tooltip="float16 on CUDA, bfloat16 on CPUs that compute it natively (about 2x faster there); "
            "pixels differ slightly from full precision",
        )
        self._consistency = CheckBox(
            text="LR-consistency map",
            value=False,
            tooltip="Also degrade each output back (area averaging of 4x4 pixels) and add\n"
            "|degraded - input|, in % of the data range, as a layer over the input: bright where the\n"
            "network added or removed something. Its PSNR goes into the output's provenance.",
        )
        self._ome_zarr = CheckBox(
            text="write OME-Zarr (large images)",
            value=False,
            tooltip="Write <name>_x4_<model>.ome.zarr beside the layer's file block by block (memory\n"
            "bounded by the block, not the image) with a pyramid, and open it lazily as a multiscale layer:\n"
            "for layers whose result does not fit in memory. Needs a layer opened from a file.",
        )
        self._run = PushButton(text="Super-resolve")
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(label="Progress", value=0, min=0, max=1)
        self._status = status_line("Select image layers and a model.", label="Status")

        self._device.changed.connect(self._on_device_changed)
        self._run.changed.connect(self._start)
        self._cancel.changed.connect(self._stop)
        self._session.runs_changed.connect(self._follow_runs)
        self._images.changed.connect(self._fill_pixel_size)
        buttons = Container(widgets=[self._run, self._cancel], layout="horizontal", labels=False)
        self._scope.changed.connect(self._update_scope)
        self._follow.changed.connect(self._update_scope)
        self.extend(
            [
                self._scope,
                self._rectangles,
                self._follow,
                self._compare,
                self._images,
                self._model,
                self._weights,
                self._pixel_size,
                self._tile,
                self._intensity,
                self._device,
                self._device_info,
                self._half,
                self._consistency,
                self._ome_zarr,
                buttons,
                self._progress,
                self._status,
            ]
        )
        make_scrollable(self)
        self._update_scope()
        self._on_device_changed()
        active = viewer.layers.selection.active
        if isinstance(active, Image) and active.visible:
            self._images.value = [active]
        if self._session.runs:
            self._model.value = self._session.runs[-1].model_path

    # -- choices ------------------------------------------------------------------------------------------

    def _model_choices(self, _widget: Any) -> list[tuple[str, Any]]:
        # Fine-tuned runs come last: a Qt combo box keeps its items' order and appends new ones.
        registry = [(name, name) for name in REGISTRY]
        runs = [(f"run: {run.name}", run.model_path) for run in self._session.runs]
        return [*registry, FILE_CHOICE, *runs]

    def _compare_choices(self, _widget: Any) -> list[tuple[str, Any]]:
        runs = [(f"run: {run.name}", run.model_path) for run in self._session.runs]
        return [("no second model", None), *((name, name) for name in REGISTRY), *runs]

    def _follow_runs(self) -> None:
        """List the session's runs and pick the newest one: the run just trained is what a user tries next."""
        self._compare.reset_choices()
        self._model.reset_choices()
        self._model.value = self._session.runs[-1].model_path

    def _update_scope(self) -> None:
        scope = self._scope.value
        self._rectangles.visible = scope is _Scope.RECTANGLES
        self._follow.visible = scope is _Scope.VISIBLE
        self._pixel_size.visible = scope is _Scope.WHOLE  # previews are not written
        self._ome_zarr.visible = scope is _Scope.WHOLE
        self._compare.visible = scope is not _Scope.WHOLE
        following = scope is _Scope.VISIBLE and self._follow.value
        if following != self._follower.active:
            self._follower.set_active(following)

    def _on_view_settled(self) -> None:
        """The view stopped moving while following it: preview the new region (after the one under way).

        A view that shows what the last preview started with (the sliders' range changes when a preview
        layer is added) starts nothing."""
        layers = list(self._images.value)
        if not layers or self._view_of(layers[0]) == self._previewed_view:
            return
        if self._jobs.running:
            self._pending = True
            self._jobs.stop()
        else:
            self._start()

    def _view_of(self, layer: Image) -> tuple[Any, ...]:
        """What a preview of the visible region of ``layer`` would show, with which models and settings."""
        models = (chosen_model(self._model, self._weights), self._compare.value)
        settings = (self._tile.value, self._half.value, self._intensity.value, self._device.value)
        return (layer.name, visible_region(self._viewer, layer), models, settings)

    def _fill_pixel_size(self) -> None:
        layers = list(self._images.value)
        if layers:
            self._pixel_size.value = pixel_size_um(layers[0]) or 0.0

    def _on_device_changed(self) -> None:
        device, _description = resolved_device(self._device.value)
        self._half.enabled = device is not None and half_dtype(device) is not None
        if not self._half.enabled:
            self._half.value = False

    # -- running ------------------------------------------------------------------------------------------

    def _settings(self) -> "tuple[str | Path, infer.UpscaleConfig] | None":
        """The model and the settings of the form; None (and the reason shown) when they cannot be used."""
        model = chosen_model(self._model, self._weights)
        if model is None:
            refuse(self._status, "choose a weights file (.pth or .safetensors) for the 'file...' model")
            return None
        try:
            config = infer.UpscaleConfig(
                tile=self._tile.value,
                device=self._device.value,
                half=bool(self._half.value),
                intensity=self._intensity.value,
            )
            resolve_device(config.device)
        except MicrodiskSRError as exc:
            refuse(self._status, str(exc))
            return None
        return model, config

    def _start(self) -> None:
        layers = list(self._images.value)
        if not layers:
            refuse(self._status, "select one or more image layers to super-resolve")
            return
        lazy = self._scope.value is _Scope.WHOLE and self._ome_zarr.value
        if not lazy and any(layer.multiscale for layer in layers):
            refuse(
                self._status,
                "multiscale (pyramid) image layers are super-resolved into OME-Zarr: tick 'write OME-Zarr'",
            )
            return
        settings = self._settings()
        if settings is None:
            return
        if lazy:
            self._start_ome_zarr(layers, *settings)
        elif self._scope.value is _Scope.WHOLE:
            self._start_whole(layers, *settings)
        else:
            self._start_preview(layers, *settings)

    def _start_whole(self, layers: list[Image], model: "str | Path", config: infer.UpscaleConfig) -> None:
        sources = [read_source(layer, self._pixel_size.value) for layer in layers]
        try:
            mapping = config.intensity or recorded_intensity_of(model) or AUTO  # None: the model's own
        except MicrodiskSRError as exc:
            refuse(self._status, str(exc))
            return
        for source in sources:  # every layer fits the settings before any is upscaled and written
            try:
                layout = image_layout(source.data.shape, rgb=source.rgb)
                normalizations_for(source.data, layout, intensity=mapping)
            except MicrodiskSRError as exc:
                refuse(self._status, f"{source.name!r}: {exc}")
                return
        hint_bit_depth(mapping, {source.name: source.data for source in sources})
        consistency = self._consistency.value
        self._start_layers(
            len(sources),
            lambda stop: upscale_layers(sources, self._models, model, config, stop, consistency),
            "",
        )

    def _start_ome_zarr(self, layers: list[Image], model: "str | Path", config: infer.UpscaleConfig) -> None:
        """Upscale whole layers block by block into OME-Zarr stores beside their files (see
        :mod:`~napari_microdisk_sr.core.ome_zarr`); their layers are read by the job, block by block."""
        if self._consistency.value:
            refuse(self._status, "the LR-consistency map needs the result in memory: untick it for OME-Zarr")
            return
        sources = [read_source(layer, self._pixel_size.value, lazy=True) for layer in layers]
        for source in sources:
            if source.path is None:
                refuse(
                    self._status, f"{source.name!r} was opened from no file: OME-Zarr is written beside it"
                )
                return
        self._start_layers(
            len(sources),
            lambda stop: upscale_layers_to_ome_zarr(sources, self._models, model, config, stop),
            " into OME-Zarr",
        )

    def _start_layers(
        self, count: int, job: "Callable[[StopFlag], Generator[Any, None, int]]", how: str
    ) -> None:
        """Start a job over ``count`` whole layers, whose results are added (and written) as they finish."""
        started = self._jobs.start(
            job, on_event=self._on_event, on_finished=self._on_finished, on_failed=self._on_failed
        )
        if started:
            self._count, self._written = count, []
            self._set_running(True)
            self._progress.value = 0
            self._status.value = f"starting {count} layer(s){how}"

    def _start_preview(self, layers: list[Image], model: "str | Path", config: infer.UpscaleConfig) -> None:
        refs = [model] if self._compare.value in (None, model) else [model, self._compare.value]
        try:
            windows = self._windows(layers)
        except MicrodiskSRError as exc:
            refuse(self._status, str(exc))
            return
        started = self._jobs.start(
            lambda stop: _preview_windows(windows, self._models, refs, config, self._cache, stop),
            on_event=self._on_event,
            on_finished=self._on_previews_finished,
            on_failed=self._on_failed,
        )
        if started:
            self._count, self._started = len(windows) * len(refs), time.perf_counter()
            if self._scope.value is _Scope.VISIBLE:
                self._previewed_view = self._view_of(layers[0])
            self._set_running(True)
            self._progress.value = 0
            self._status.value = f"previewing {len(windows)} region(s)"

    def _windows(self, layers: list[Image]) -> list[_Window]:
        """The regions to preview, read on the main thread: what is on screen, or the rectangles."""
        windows = []
        for layer in layers if self._scope.value is _Scope.RECTANGLES else layers[:1]:
            visible = visible_region(self._viewer, layer)
            plane_index = () if visible is None else visible[0]
            source = read_source(layer, 0.0, plane_index)
            stack = layer.data if plane_index and isinstance(layer.data, np.ndarray) else None
            if self._scope.value is _Scope.VISIBLE:
                if visible is None:
                    raise InputError(f"no part of {layer.name!r} is on screen: pan or zoom to it")
                name = f"{layer.name} preview x4"
                windows.append(_Window(source, plane_index, visible[1], name, stack))
                continue
            shapes = self._rectangles.value
            if shapes is None:
                raise InputError("choose a Shapes layer with rectangles drawn over the image")
            plane_shape = source.data.shape[:2]
            for y0, x0, y1, x1 in shape_boxes(shapes, layer, plane_shape):
                region = Region(y0, y1, x0, x1)
                windows.append(
                    _Window(source, plane_index, region, f"{layer.name} [{y0}:{y1}, {x0}:{x1}] x4", stack)
                )
        if not windows:
            raise InputError("no rectangle of the Shapes layer lies over the selected images")
        return windows

    def _stop(self) -> None:
        self._jobs.stop()
        self._status.value = "stopping after the current tile..."

    def _set_running(self, running: bool) -> None:
        self._run.enabled = not running
        self._cancel.enabled = running

    def _on_event(self, event: Any) -> None:
        if isinstance(event, Status):
            self._status.value = event.text
            self._progress.value = 0
        elif isinstance(event, infer.TileEvent):
            self._progress.max = event.total
            self._progress.value = event.done
        elif isinstance(event, Upscaled):
            self._add_output(event)
        elif isinstance(event, _Previewed):
            self._add_preview(event)

    def _add_preview(self, done: _Previewed) -> None:
        """Show a preview where the whole result would be, replacing the last preview of that region."""
        window, source = done.window, done.window.source
        model = done.result.provenance["model"]
        name = f"{window.name} ({model})"
        data = done.result.image.reshape((1,) * len(window.plane_index) + done.result.image.shape)
        origin = (*window.plane_index, window.region.y0, window.region.x0)
        scale, translate = region_geometry(source.scale, source.translate, done.scale, origin)
        metadata = {"microdisk_sr": done.result.provenance | {"input_layer": source.name, "preview": True}}
        if name in self._viewer.layers:
            layer = self._viewer.layers[name]
            layer.data, layer.scale, layer.translate, layer.metadata = data, scale, translate, metadata
            return
        self._viewer.add_image(
            data, name=name, rgb=source.rgb, scale=scale, translate=translate, units=source.units,
            metadata=metadata, **source.display,
        )  # fmt: skip

    def _on_previews_finished(self, finished: int) -> None:
        self._set_running(False)
        seconds = time.perf_counter() - self._started
        if finished == self._count:
            self._status.value = f"preview: {finished} region(s) in {seconds:.1f} s (not written)"
        else:
            self._status.value = "preview stopped"
            self._progress.value = 0
        self._preview_again()

    def _preview_again(self) -> None:
        """After a preview that the moving view stopped: the new region, once this job has wound down."""
        if self._pending:
            self._pending = False
            self._follower.settle_again()

    def _add_output(self, out: Upscaled) -> None:
        if out.provenance["output_path"] is not None:
            self._written.append(Path(out.provenance["output_path"]))
        scale, translate = upscaled_geometry(out.source.scale, out.source.translate, out.scale)
        self._viewer.add_image(
            out.data,
            multiscale=isinstance(out.data, list),
            name=out.name,
            rgb=out.source.rgb,
            scale=scale,
            translate=translate,
            units=out.source.units,
            metadata={"microdisk_sr": out.provenance},
            **out.source.display,
        )
        if out.consistency is not None:
            percent = 100.0 * out.consistency
            self._viewer.add_image(
                percent,
                name=f"{out.name} LR consistency %",
                scale=out.source.scale,  # the input's grid (an RGB layer's scale has no channel axis)
                translate=out.source.translate,
                colormap="magma",
                contrast_limits=(0.0, max(float(percent.max()), 1e-6)),
                metadata={"microdisk_sr_consistency": out.provenance.get("lr_consistency_psnr")},
            )

    def _on_finished(self, finished: int) -> None:
        self._set_running(False)
        if finished == self._count:
            folders = sorted({str(path.parent) for path in self._written})
            where = (
                f"; written to {', '.join(folders)}"
                if folders
                else "; not written (no file behind the layer)"
            )
            self._status.value = f"done: {finished} layer(s) super-resolved{where}"
        else:
            self._status.value = f"stopped: {finished} of {self._count} layer(s) done, no partial output"
            self._progress.value = 0  # the tiles of the layer under way were dropped

    def _on_failed(self, message: str) -> None:
        self._set_running(False)
        self._status.value = f"failed: {message}"
        self._preview_again()


def _preview_windows(
    windows: list[_Window],
    models: ModelCache,
    model_refs: "list[str | Path]",
    config: infer.UpscaleConfig,
    cache: PreviewCache,
    stop: StopFlag,
) -> Generator[Any, None, int]:
    """The preview job: each model (loaded, or reused) on each window, block by block; nothing written.

    Returns how many previews finished."""
    done = 0
    for model_ref in model_refs:
        yield Status(f"loading model {model_ref}")
        model = models.load(model_ref)
        mapping = infer.intensity_for(model, config.intensity)
        stacks: dict[int, tuple[Normalization, Normalization | None]] = {}  # by id of the stack array
        for index, window in enumerate(windows):
            yield Status(f"{index + 1}/{len(windows)}: previewing {window.name!r} with {model.name}")
            norms = None
            if window.stack is not None:  # mapped by the whole stack, as its whole result is
                if id(window.stack) not in stacks:
                    layout = image_layout(window.stack.shape, rgb=window.source.rgb)
                    stacks[id(window.stack)] = normalizations_for(window.stack, layout, intensity=mapping)
                norms = stacks[id(window.stack)]
            job = preview(
                window.source.data,
                model,
                window.region,
                config=config,
                cache=cache,
                stop=stop,
                rgb=window.source.rgb,
                normalization=norms,
            )
            result = yield from job
            if result is None:
                return done
            yield _Previewed(window, result, model.spec.scale)
            done += 1
    return done
