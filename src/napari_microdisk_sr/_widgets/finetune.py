"""The "Fine-tune" dock widget: fine-tune a pretrained model on microdisk crops, with live progress.

The crops are gathered here on the main thread (a crop set of the session, the boxes of a Shapes layer cut
from an image layer, or a crops folder) and handed with a frozen :class:`~..core.train.FineTuneConfig` to
:func:`~..core.train.fine_tune`, which runs in a worker. Stop leaves a checkpoint that Resume continues. Every
run that leaves a model is added to the session, so that Super-resolve and Compare & measure list it.
"""

import contextlib
import dataclasses
import enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    ProgressBar,
    PushButton,
    SpinBox,
    Widget,
)
from napari.layers import Image, Shapes
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import QFileDialog
from superqt import QCollapsible

from ..core.crops import CropSet, crop_disks, read_crop_set
from ..core.errors import InputError, MicrodiskSRError
from ..core.export import export_package
from ..core.models import REGISTRY
from ..core.outputs import run_dir_for
from ..core.train import (
    DEFAULT_PATIENCE,
    STUDY_LAYER_LRS,
    EventKind,
    FineTuneConfig,
    FineTuneResult,
    Outcome,
    TrainEvent,
    can_resume,
    fine_tune,
    resume_conflicts,
)
from ._controls import (
    FILE_CHOICE,
    CropSetChoice,
    chosen_degradation,
    chosen_model,
    degradation_row,
    device_row,
    folder_edit,
    hint_bit_depth,
    intensity_box,
    model_row,
    refuse,
    resolved_device,
    status_line,
)
from ._hosted import hosted
from ._jobs import JobRunner
from ._layers import layer_choices, layer_named, layer_path, shape_boxes
from ._loss_plot import LossPlot
from ._scroll import make_scrollable
from ._session import RunRef, session_for
from ._triton import preload_triton

if TYPE_CHECKING:
    import napari

_CPU_MODEL = "realesr-animevideov3"
_CPU_BUDGET_MIN = 15.0
"""What a CPU gets by default: the compact model (~29x cheaper than x4plus) and a time budget."""
_CLOSE_WAIT_S = 60.0
"""How long closing the viewer waits for a run to stop: one more step, then its checkpoint and model."""


class _Source(enum.Enum):
    """Where the crops come from."""

    CROP_SET = "crop set of this session"
    SHAPES = "shapes drawn over an image"
    FOLDER = "crops folder"


@dataclasses.dataclass(frozen=True, eq=False)
class _Crops:
    """Crops gathered on the main thread, with the places that decide where the run folder goes."""

    crops: "CropSet | tuple[np.ndarray, ...]"
    name: str
    folder: "Path | None" = None
    source_path: "Path | None" = None


@dataclasses.dataclass(frozen=True, eq=False)
class _Run:
    """What a run was started with: enough to resume it."""

    crops: "CropSet | tuple[np.ndarray, ...]"
    config: FineTuneConfig
    run_dir: Path


class FineTuneWidget(Container):
    """Fine-tune Real-ESRGAN on microdisk crops; the defaults are the study's recipe."""

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__(labels=False)
        preload_triton()  # before the first optimiser imports it, or it may crash the process
        self._viewer = viewer
        self._session = session_for(viewer)
        self._jobs = JobRunner(self.native, name="Fine-tune", wait_on_close_s=_CLOSE_WAIT_S)
        self._last: _Run | None = None
        self._running = False
        self._finished_epochs = 0  # of the last run, if it finished: Resume needs more epochs than that
        self._position = "the start"  # of the run in progress, for the progress bar once it has ended
        defaults = FineTuneConfig()
        self._form = Container(widgets=[*self._source_part(), *self._recipe_part(defaults)])
        self._advanced = self._advanced_part(defaults)
        self._advanced_box = QCollapsible("Advanced settings")
        self._advanced_box.addWidget(self._advanced.native)
        self._plot = LossPlot()
        self.extend([self._form, hosted(self._advanced_box), *self._run_part(), hosted(self._plot)])
        make_scrollable(self)
        self._update_fields()
        device, _ = resolved_device(defaults.device)
        if device is None or device.type == "cpu":
            self._use_cpu_defaults()

    # -- the form's parts ---------------------------------------------------------------------------------

    def _source_part(self) -> list[Widget]:
        """Where the crops come from: a crop set, shapes over an image, or a folder."""
        self._source = ComboBox(label="Crops from", choices=[(s.value, s) for s in _Source])
        self._crop_set = CropSetChoice(self._session)
        self._image = ComboBox(label="Image", choices=layer_choices(self._viewer, Image))
        self._shapes = ComboBox(label="Shapes", choices=layer_choices(self._viewer, Shapes))
        self._folder = folder_edit("Crops folder")
        self._source.changed.connect(self._update_fields)
        return [self._source, self._crop_set, self._image, self._shapes, self._folder]

    def _recipe_part(self, defaults: FineTuneConfig) -> list[Widget]:
        """The model, the study's recipe, the device and the output folder."""
        self._model, self._weights = model_row([*((name, name) for name in REGISTRY), FILE_CHOICE])
        self._epochs = SpinBox(label="Epochs", value=defaults.epochs, min=1, max=100_000)
        self._lr = FloatSpinBox(label="Learning rate", value=defaults.lr, min=1e-7, max=1.0, step=1e-6)
        batches = [("auto (4 on a GPU, 2 on the CPU)", None), *((str(n), n) for n in (1, 2, 4, 8, 16, 32))]
        self._batch = ComboBox(label="Batch", choices=batches, value=defaults.batch_size)
        self._patch = SpinBox(label="Patch (HR px)", value=defaults.patch, min=16, max=1024, step=16)
        self._pairs = SpinBox(label="Pairs per epoch", value=defaults.pairs_per_epoch, min=1, max=1_000_000)
        self._degradation, self._profile = degradation_row(defaults.degradation)
        self._intensity = intensity_box()
        self._device, self._device_info = device_row(defaults.device)
        self._output = folder_edit(
            "Output folder",
            tooltip="Where the run folder goes. Empty: beside the crops folder, or in the\n"
            "<image>_microdisk_sr folder of the image the crops were cut from.",
        )
        return [
            self._model, self._weights, self._epochs, self._lr, self._batch, self._patch, self._pairs,
            self._degradation, self._profile, self._intensity, self._device, self._device_info, self._output,
        ]  # fmt: skip

    def _advanced_part(self, defaults: FineTuneConfig) -> Container:
        """The study's options: layer-wise rates, frozen blocks, early stopping, validation, EMA, budget."""
        first, body, upsampler = STUDY_LAYER_LRS
        self._layer_lrs = CheckBox(
            text="layer-wise learning rates",
            tooltip=f"the study's: {first:g} for the first convolution, {body:g} for the body, "
            f"{upsampler:g} for the upsampler (instead of one learning rate)",
        )
        self._freeze = SpinBox(label="Frozen blocks", value=defaults.freeze_blocks, min=0, max=1000)
        self._early_stop = CheckBox(text="early stopping", value=defaults.early_stop is not None)
        self._patience = SpinBox(label="Patience (epochs)", value=DEFAULT_PATIENCE, min=1, max=10_000)
        self._val_fraction = FloatSpinBox(
            label="Validation fraction", value=defaults.val_fraction, min=0.0, max=0.9, step=0.05
        )
        self._ema = CheckBox(text="exponential moving average of the weights", value=defaults.ema)
        self._seed = SpinBox(label="Seed", value=defaults.seed, min=0, max=2**31 - 1)
        self._budget_on = CheckBox(text="time budget", value=defaults.max_minutes is not None)
        self._budget = FloatSpinBox(label="Budget (min)", value=60.0, min=0.1, max=100_000.0, step=1.0)
        self._early_stop.changed.connect(self._update_fields)
        self._budget_on.changed.connect(self._update_fields)
        return Container(
            widgets=[
                self._layer_lrs, self._freeze, self._early_stop, self._patience, self._val_fraction,
                self._ema, self._seed, self._budget_on, self._budget,
            ]
        )  # fmt: skip

    def _use_cpu_defaults(self) -> None:
        """The compact model and a time budget: the study's recipe with x4plus takes days on a CPU."""
        self._model.value = _CPU_MODEL
        self._budget_on.value = True
        self._budget.value = _CPU_BUDGET_MIN
        self._status.value = (
            f"On the CPU: the compact model and a {_CPU_BUDGET_MIN:g}-min budget are preselected; "
            "the study's recipe (x4plus) takes days here. Study's recipe: one click."
        )

    def _use_study_recipe(self) -> None:
        """The study's recipe: x4plus, 50 epochs of 500 pairs, Adam at 1e-4, 128 px patches, no budget."""
        recipe = FineTuneConfig()
        self._model.value = recipe.model
        self._epochs.value, self._lr.value = recipe.epochs, recipe.lr
        self._patch.value, self._pairs.value = recipe.patch, recipe.pairs_per_epoch
        self._batch.value, self._degradation.value = recipe.batch_size, "bicubic"
        self._budget_on.value = False
        self._status.value = (
            "the study's recipe: x4plus, 50 epochs of 500 pairs, bicubic pairs (fast on a GPU)"
        )

    def _run_part(self) -> list[Widget]:
        """Start, Stop and Resume, the progress bar and the status line."""
        self._recipe_button = PushButton(
            text="Study's recipe",
            tooltip="x4plus, 50 epochs of 500 pairs, Adam 1e-4 halved every 16 epochs, 128 px patches, the "
            "study's bicubic pairs, no time budget",
        )
        self._recipe_button.changed.connect(self._use_study_recipe)
        self._start_button = PushButton(text="Start")
        self._stop_button = PushButton(
            text="Stop", enabled=False, tooltip="Stop and keep a resumable checkpoint"
        )
        self._resume_button = PushButton(
            text="Resume",
            enabled=False,
            tooltip="Continue the last run (with the epochs and time budget above)",
        )
        self._start_button.changed.connect(self._start)
        self._stop_button.changed.connect(self._stop)
        self._resume_button.changed.connect(self._resume)
        self._epochs.changed.connect(self._update_resume)
        buttons = Container(
            widgets=[self._start_button, self._stop_button, self._resume_button, self._recipe_button],
            layout="horizontal",
            labels=False,
        )
        self._progress = ProgressBar(value=0, min=0, max=1)
        self._status = status_line("Choose the crops and a model, then Start.")
        self._export_button = PushButton(
            text="Export for the Model Zoo...",
            enabled=False,
            tooltip="Write the last run's model as a BioImage Model Zoo package (.zip): for bioimage.io, "
            "deepImageJ in Fiji (TorchScript) and colleagues' napari",
        )
        self._export_button.changed.connect(self._export)
        return [buttons, self._progress, self._status, self._export_button]

    # -- choices ------------------------------------------------------------------------------------------

    def _update_fields(self) -> None:
        source = self._source.value
        self._crop_set.visible = source is _Source.CROP_SET
        self._image.visible = self._shapes.visible = source is _Source.SHAPES
        self._folder.visible = source is _Source.FOLDER
        self._patience.enabled = self._early_stop.value
        self._budget.enabled = self._budget_on.value

    # -- starting -----------------------------------------------------------------------------------------

    def _gather(self) -> _Crops:
        """The crops of the chosen source, read here on the main thread."""
        source = self._source.value
        if source is _Source.CROP_SET:
            ref = self._crop_set.chosen()
            source_path = layer_path(layer_named(self._viewer, ref.source_layer))
            return _Crops(ref.images, ref.name, ref.folder, source_path)
        if source is _Source.FOLDER:
            folder = self._folder.value
            if folder is None:
                raise InputError(
                    "choose a crops folder (written by 'Select & crop microdisks' or 'microdisk-sr crop')"
                )
            return _Crops(read_crop_set(folder), Path(folder).name, Path(folder))
        image, shapes = self._image.value, self._shapes.value
        if image is None or shapes is None:
            raise InputError("choose an image layer and a Shapes layer with boxes drawn over it")
        if image.multiscale or image.ndim != 2:
            raise InputError(f"crop from a single 2D image layer; {image.name!r} is a stack or a pyramid")
        data = np.asarray(image.data)
        boxes = shape_boxes(shapes, image, data.shape[:2])
        if not boxes:
            raise InputError(
                f"no shape of {shapes.name!r} lies over {image.name!r}: draw boxes around the disks"
            )
        crops = crop_disks(data, boxes, source=image.name)
        return _Crops(tuple(crop.image for crop in crops), image.name, source_path=layer_path(image))

    def _config(self) -> FineTuneConfig:
        model = chosen_model(self._model, self._weights)
        if model is None:
            raise InputError("choose a weights file (.pth or .safetensors) for the 'file...' model")
        return FineTuneConfig(
            model=str(model),
            epochs=self._epochs.value,
            lr=self._lr.value,
            batch_size=self._batch.value,
            patch=self._patch.value,
            pairs_per_epoch=self._pairs.value,
            degradation=chosen_degradation(self._degradation, self._profile),
            val_fraction=self._val_fraction.value,
            early_stop=self._patience.value if self._early_stop.value else None,
            layer_lrs=STUDY_LAYER_LRS if self._layer_lrs.value else None,
            freeze_blocks=self._freeze.value,
            ema=self._ema.value,
            device=self._device.value,
            seed=self._seed.value,
            max_minutes=self._budget.value if self._budget_on.value else None,
            intensity=self._intensity.value,
        )

    def _start(self) -> None:
        try:
            crops = self._gather()
            config = self._config()
            run_dir = run_dir_for(
                crops.name,
                output_dir=self._output.value,
                crops_folder=crops.folder,
                source_path=crops.source_path,
            )
        except MicrodiskSRError as exc:
            refuse(self._status, str(exc))
            return
        images = crops.crops.images if isinstance(crops.crops, CropSet) else crops.crops
        hint_bit_depth(config.intensity, {crops.name: max(images, key=np.max)})
        self._launch(_Run(crops.crops, config, run_dir), resume=False)

    def _resume(self) -> None:
        """Continue the last run; only its epochs, time budget and device may change (see ``fine_tune``)."""
        budget = self._budget.value if self._budget_on.value else None
        changes = {"epochs": self._epochs.value, "max_minutes": budget, "device": self._device.value}
        try:
            config = dataclasses.replace(self._last.config, **changes)
        except MicrodiskSRError as exc:
            refuse(self._status, str(exc))
            return
        self._warn_ignored_settings(config)
        self._launch(dataclasses.replace(self._last, config=config), resume=True)

    def _warn_ignored_settings(self, config: FineTuneConfig) -> None:
        """Say which settings changed in the form a resumed run does not take."""
        try:
            form = self._config()
        except MicrodiskSRError:
            return
        ignored = resume_conflicts(config, form)
        if ignored:
            show_warning(
                f"resuming with the run's own {', '.join(ignored)}: a resumed run changes only its epochs, "
                "time budget and device (Start begins a new run with the form's settings)"
            )

    def _launch(self, run: _Run, *, resume: bool) -> None:
        lr_crops = run.crops.lr_images if isinstance(run.crops, CropSet) else None  # a paired set: real LR
        try:
            started = self._jobs.start(
                lambda stop: fine_tune(
                    run.crops, run.config, run.run_dir, stop=stop, resume=resume, lr_crops=lr_crops
                ),
                on_event=self._on_event,
                on_finished=self._on_finished,
                on_failed=self._on_failed,
            )
        except MicrodiskSRError as exc:
            refuse(self._status, str(exc))
            started = False
        if not started:
            if not resume:
                _release(run.run_dir)
            return
        self._last, self._finished_epochs = run, 0
        if not resume:
            self._plot.clear()
        self._progress.value = 0
        self._position = "the start"
        self._progress.native.setFormat("loading the model and the crops...")
        paired = " (paired crop set: learning from its registered LR crops)" if lr_crops is not None else ""
        self._status.value = f"{'resuming' if resume else 'starting'}{paired}: run folder {run.run_dir}"
        self._set_running(True)

    def _stop(self) -> None:
        self._jobs.stop()
        self._stop_button.enabled = False
        self._status.value = "stopping: saving a checkpoint..."

    def _set_running(self, running: bool) -> None:
        self._form.enabled = self._advanced.enabled = not running
        self._start_button.enabled = not running
        self._stop_button.enabled = running
        self._running = running
        self._update_resume()

    def _update_resume(self) -> None:
        """Resume continues a run that stopped, or extends a finished one once more epochs are asked for."""
        self._resume_button.enabled = (
            not self._running
            and self._last is not None
            and can_resume(self._last.run_dir)
            and self._epochs.value > self._finished_epochs
        )

    # -- progress -----------------------------------------------------------------------------------------

    def _on_event(self, event: TrainEvent) -> None:
        self._progress.max = event.steps
        self._progress.value = event.step
        epoch, step, steps = _position(event)
        # as the run's messages say it: steps within the epoch, and its end once its last step is done
        self._position = (
            f"the end of epoch {epoch}" if step == steps else f"epoch {epoch}, step {step}/{steps}"
        )
        eta = "" if event.eta_s is None else f", {_duration(event.eta_s)} left"
        self._progress.native.setFormat(f"epoch {epoch}/{event.epochs}, step {step}/{steps}{eta}")
        if event.kind is EventKind.BASELINE:
            self._plot.set_reference(event.val_l1)
        elif event.kind is EventKind.STEP:
            self._plot.add_train(event.step * event.epochs / event.steps, event.loss)
        elif event.kind is EventKind.EPOCH and event.val_l1 is not None:
            self._plot.add_val(event.epoch, event.val_l1)
        self._status.value = _describe(event)

    def _on_finished(self, result: FineTuneResult) -> None:
        self._set_running(False)
        self._progress.native.setFormat(f"{_ENDINGS[result.outcome]} at {self._position}")
        self._session.add_run(RunRef(result.run_dir.name, result.model_path, result.run_dir))
        self._finished_epochs = result.epochs_done if result.outcome is Outcome.FINISHED else 0
        self._export_button.enabled = True
        self._update_resume()
        verdict = result.verdict()
        self._status.value = result.message if verdict is None else f"{verdict}; {result.message}"
        show_info(f"fine-tuning {result.outcome.value}: {verdict or result.message}")

    def _export(self) -> None:
        """Ask where, then write the last run's model as a zoo package (the core refuses to overwrite)."""
        run_dir = self._last.run_dir
        path, _ = QFileDialog.getSaveFileName(
            self.native, "Export for the Model Zoo", str(run_dir.with_suffix(".zip")), "Model package (*.zip)"
        )
        if not path:
            return
        self._status.value = f"exporting {run_dir.name}..."
        try:
            result = export_package(run_dir, path)
        except MicrodiskSRError as exc:
            refuse(self._status, str(exc))
            return
        self._status.value = f"exported {result.path} ({result.size_bytes / 1e6:.1f} MB)"
        show_info(f"model package written: {result.path}")

    def _on_failed(self, message: str) -> None:
        self._set_running(False)
        _release(self._last.run_dir)
        self._progress.native.setFormat(f"failed at {self._position}")
        self._status.value = f"failed: {message}"


_ENDINGS = {
    Outcome.FINISHED: "finished",
    Outcome.STOPPED: "stopped",
    Outcome.EARLY_STOPPED: "stopped early",
    Outcome.TIME_BUDGET: "time budget reached",
}
"""What the progress bar says once a run has ended (instead of the time left)."""


def _release(run_dir: Path) -> None:
    """Remove a run folder claimed for a run that wrote nothing into it (a refused or failed start)."""
    with contextlib.suppress(OSError):  # not empty: the run's files are kept
        run_dir.rmdir()


def _position(event: TrainEvent) -> tuple[int, int, int]:
    """The epoch of ``event``, its step within that epoch, and the steps of an epoch."""
    steps = event.steps // event.epochs
    return event.epoch, event.step - (event.epoch - 1) * steps if event.epoch else 0, steps


def _describe(event: TrainEvent) -> str:
    return f"training L1 {event.loss:.4f}" if event.kind is EventKind.STEP else event.message


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
