"""Form rows that several dock widgets share: model, device and crop-set choices, pickers, status line."""

import enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from magicgui.widgets import ComboBox, FileEdit, Label, Select
from napari.utils.notifications import show_error, show_warning
from qtpy.QtWidgets import QSizePolicy

from ..core.degradation import DEGRADATIONS
from ..core.device import DEVICE_CHOICES, describe_device, resolve_device
from ..core.errors import InputError, MicrodiskSRError
from ..core.images import bit_depth_hint
from ..core.intensity import AUTO, RANGE, Intensity
from ..core.models import DEFAULT_MODEL
from ._session import CropSetRef, Session

WEIGHTS_FILTER = "*.pth *.safetensors *.zip rdf.yaml bioimageio.yaml"
"""Weights files, and BioImage Model Zoo packages (a zip, or an unpacked one's description)."""


def resolved_device(name: str) -> "tuple[torch.device | None, str]":
    """The device ``name`` resolves to and its description, or None and why it cannot be used."""
    try:
        device = resolve_device(name)
    except MicrodiskSRError as exc:
        return None, str(exc)
    return device, describe_device(device)


def device_row(value: str = "auto", *, info_label: str = "") -> tuple[ComboBox, Label]:
    """A "Device" choice and a label under it that always says what the choice resolves to."""
    device = ComboBox(label="Device", choices=DEVICE_CHOICES, value=value)
    info = Label(label=info_label)
    info.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def show() -> None:
        info.value = resolved_device(device.value)[1]

    device.changed.connect(show)
    show()
    return device, info


def status_line(value: str, *, label: str = "") -> Label:
    """A word-wrapped status label that takes the full width, showing ``value`` at first."""
    status = Label(label=label, value=value)
    status.native.setWordWrap(True)
    status.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
    return status


def refuse(status: Label, message: str) -> None:
    """Tell why a job was not started: as an error notification, and in the widget's status line."""
    show_error(message)
    status.value = f"not started: {message}"


BIT_DEPTHS = (8, 10, 12, 14, 16)
"""The bit depths offered: those of microscope cameras."""
MODEL_OWN = "model's own (else auto)"


def intensity_box(*, model_default: bool = False) -> ComboBox:
    """An "Intensity" choice: how image values map to the network's 0-1 and back (see
    :class:`Intensity`). With ``model_default`` it offers, and starts at, None: the mapping the
    chosen model was fine-tuned with, else auto."""
    choices = [
        ("auto (8-bit: range, else percentile)", AUTO),
        ("percentile 1-99.8 (CSBDeep)", Intensity("percentile")),
        ("dtype's full range", RANGE),
        *((f"{bits} bits", Intensity("bits", bits=bits)) for bits in BIT_DEPTHS),
    ]
    if model_default:
        choices.insert(0, (MODEL_OWN, None))
    return ComboBox(
        label="Intensity",
        choices=choices,
        value=None if model_default else AUTO,
        tooltip="How image values map to the network's range and back. auto: 8-bit images by their range, "
        "16-bit and float images by their 1st-99.8th percentiles (keeps a dim image's intensities). "
        "N bits: 0 to 2^N-1, for an N-bit camera writing 16-bit files. Use the same for fine-tuning, "
        "super-resolving and measuring images of one camera.",
    )


def hint_bit_depth(chosen: "Intensity | None", images: "dict[str, np.ndarray]") -> None:
    """Warn when an image mapped by its dtype's full range (under ``chosen``, None for a model's own) seems
    to hold data of fewer bits than its dtype."""
    for name, data in images.items():
        if chosen is None or chosen.for_dtype(data.dtype) != RANGE:
            continue
        hint = bit_depth_hint(
            data, f"{name!r} ({data.dtype})", "set Intensity to {bits} bits (or percentile)"
        )
        if hint is not None:
            show_warning(hint)
            return


def folder_edit(label: str, *, tooltip: "str | None" = None) -> FileEdit:
    """An optional folder picker (empty: None)."""
    return FileEdit(label=label, mode="d", nullable=True, tooltip=tooltip)


def weights_edit(
    label: str = "Weights file", *, multiple: bool = False, visible: "bool | None" = None
) -> FileEdit:
    """An optional picker of one (or, with ``multiple``, several) weights files or model packages."""
    return FileEdit(
        label=label, mode="rm" if multiple else "r", filter=WEIGHTS_FILTER, nullable=True, visible=visible
    )


class ModelChoice(enum.Enum):
    """The model choice that reads the weights file named in the file field."""

    FILE = "file..."


FILE_CHOICE = (ModelChoice.FILE.value, ModelChoice.FILE)
"""The "file..." item of a model choice."""


def model_row(choices: Any) -> tuple[ComboBox, FileEdit]:
    """A "Model" choice of ``choices`` (with :data:`FILE_CHOICE`) and a weights picker shown only for it."""
    model = ComboBox(label="Model", choices=choices, value=DEFAULT_MODEL)
    weights = weights_edit(visible=False)

    def show(value: Any) -> None:
        weights.visible = value is ModelChoice.FILE

    model.changed.connect(show)
    return model, weights


def chosen_model(model: ComboBox, weights: FileEdit) -> "str | Path | None":
    """The model of a :func:`model_row`: a registry name, a run's model or the file (None: no file named)."""
    return weights.value if model.value is ModelChoice.FILE else model.value


class DegradationChoice(enum.Enum):
    """The degradation choice that reads the profile file named in the profile field."""

    PROFILE = "profile file..."


def degradation_row(value: str) -> tuple[ComboBox, FileEdit]:
    """A "Degradation" choice of the generic degradations and a profile file, with a picker shown for it."""
    degradation = ComboBox(
        label="Degradation",
        choices=[
            *((name, name) for name in DEGRADATIONS),
            (DegradationChoice.PROFILE.value, DegradationChoice.PROFILE),
        ],
        value=value,
        tooltip="How LR patches are made from the crops: the study's bicubic, generic blur + camera\n"
        "pixels + sensor noise, or your microscope's profile (.json) written by 'microdisk-sr calibrate'.",
    )
    profile = FileEdit(label="Profile file", mode="r", filter="*.json", nullable=True, visible=False)

    def show(chosen: Any) -> None:
        profile.visible = chosen is DegradationChoice.PROFILE

    degradation.changed.connect(show)
    return degradation, profile


def chosen_degradation(degradation: ComboBox, profile: FileEdit) -> str:
    """The degradation of a :func:`degradation_row`: a generic one's name or the profile file's path."""
    if degradation.value is not DegradationChoice.PROFILE:
        return degradation.value
    if profile.value is None:
        raise InputError("choose a degradation profile (.json) written by 'microdisk-sr calibrate'")
    return str(Path(profile.value).resolve())


def show_rows(select: Select, rows: int) -> None:
    """Make a list about ``rows`` rows high (it scrolls beyond), instead of Qt's tall default."""
    native = select.native
    native.setMaximumHeight(rows * (native.fontMetrics().height() + 4) + 2 * native.frameWidth())


class CropSetChoice(ComboBox):
    """A "Crop set" choice of the session's crop sets that picks each new set as it is added."""

    def __init__(self, session: Session) -> None:
        self._session = session
        super().__init__(label="Crop set", choices=self._choices)
        session.crop_sets_changed.connect(self._follow)
        self._follow()  # the newest set, also when the widget opens after several were made

    def chosen(self) -> CropSetRef:
        """The chosen crop set; :class:`InputError` when the session has none yet."""
        if self.value is None:
            raise InputError("no crop set in this session yet: make one with 'Select & crop microdisks'")
        return self.value

    def _choices(self, _widget: Any) -> list[tuple[str, CropSetRef]]:
        return [(f"{ref.name} ({len(ref.images)} crops)", ref) for ref in self._session.crop_sets]

    def _follow(self) -> None:
        self.reset_choices()
        if self._session.crop_sets:
            self.value = self._session.crop_sets[-1]
