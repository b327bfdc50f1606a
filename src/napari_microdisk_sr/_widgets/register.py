"""The "Register LR/HR" dock widget: register a low- and a high-magnification layer of one field.

The layers' data is read on the main thread; :func:`~..core.register.register` runs in a worker. The result
comes back as two layers in the LR's world coordinates: the LR cropped to the overlap, and the HR resampled
onto its x4 grid (placed as Super-resolve places an x4 output), the pair that Compare & measure's
low/high-resolution pair mode and ``microdisk-sr crop --lr`` take. The fit and its quality go to the status
line.
"""

from collections.abc import Generator
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, PushButton
from napari.layers import Image
from napari.utils.notifications import show_info

from ..core.errors import InputError, MicrodiskSRError
from ..core.layers import upscaled_geometry
from ..core.register import GRID, MIN_NCC, Registration, register
from ._controls import refuse, status_line
from ._jobs import JobRunner
from ._layers import layer_choices

if TYPE_CHECKING:
    import napari


class RegisterWidget(Container):
    """Register an HR layer onto an LR layer: scale, rotation and shift, then an aligned x4 pair of layers."""

    def __init__(self, viewer: "napari.viewer.Viewer") -> None:
        super().__init__()
        self._viewer = viewer
        self._jobs = JobRunner(self.native, name="Register LR/HR")
        self._lr = ComboBox(label="Low-res. layer", choices=layer_choices(viewer, Image))
        self._hr = ComboBox(label="High-res. layer", choices=layer_choices(viewer, Image))
        self._scale = FloatSpinBox(
            label="Nominal scale",
            value=2.5,
            min=0.1,
            max=100.0,
            step=0.01,
            tooltip="HR pixels per LR pixel (2.5 for 4X -> 10X on one camera); refined by the fit. Set from "
            "the layers' pixel sizes when they differ.",
        )
        self._min_ncc = FloatSpinBox(
            label="Min. correlation",
            value=MIN_NCC,
            min=0.0,
            max=1.0,
            step=0.05,
            tooltip="Fits whose normalised cross-correlation is lower are refused.",
        )
        self._run = PushButton(text="Register")
        self._status = status_line("Choose the low- and high-magnification layers of one field.")
        self.extend([self._lr, self._hr, self._scale, self._min_ncc, self._run, self._status])
        self._lr.changed.connect(self._scale_from_layers)
        self._hr.changed.connect(self._scale_from_layers)
        self._run.changed.connect(self._start)
        self._pick_pair()

    def _pick_pair(self) -> None:
        """Start from the layers of the largest and the smallest pixels, else the first two layers."""
        layers = [layer for layer in self._lr.choices if layer is not None]
        if len(layers) < 2:
            return
        by_pixel = sorted(layers, key=lambda layer: -float(np.mean(layer.scale[-2:])))
        lr, hr = (
            (by_pixel[0], by_pixel[-1]) if by_pixel[0].scale[-1] != by_pixel[-1].scale[-1] else layers[:2]
        )
        self._lr.value, self._hr.value = lr, hr

    def _scale_from_layers(self) -> None:
        """The layers' pixel sizes say the scale when they differ (napari's default scale is 1)."""
        lr, hr = self._lr.value, self._hr.value
        if lr is None or hr is None or lr is hr:
            return
        ratio = float(np.mean(np.asarray(lr.scale[-2:]) / np.asarray(hr.scale[-2:])))
        if not np.isclose(ratio, 1.0):
            self._scale.value = ratio

    def _start(self) -> None:
        lr, hr = self._lr.value, self._hr.value
        try:
            if lr is hr:
                raise InputError("choose two different layers: the low- and the high-magnification one")
            for layer, what in ((lr, "low-resolution"), (hr, "high-resolution")):
                if layer is None:
                    raise InputError(f"choose the {what} layer")
                if layer.multiscale:
                    raise InputError(f"{layer.name!r} is a pyramid; register single-resolution layers")
        except MicrodiskSRError as exc:
            refuse(self._status, str(exc))
            return
        job_args = (np.asarray(lr.data), np.asarray(hr.data), lr.rgb, self._scale.value, self._min_ncc.value)
        started = self._jobs.start(
            lambda _stop: _registering(*job_args),
            on_event=lambda message: setattr(self._status, "value", message),
            on_finished=lambda result: self._add_pair(lr, hr, result),
            on_failed=self._on_failed,
        )
        if started:
            self._run.enabled = False

    def _add_pair(self, lr: Image, hr: Image, result: Registration) -> None:
        """Add the LR crop and the registered HR, placed in ``lr``'s world coordinates."""
        self._run.enabled = True
        y0, x0, y1, x1 = result.lr_box
        translate = list(lr.translate)
        translate[-2] += y0 * lr.scale[-2]
        translate[-1] += x0 * lr.scale[-1]
        common = {"rgb": lr.rgb, "units": tuple(lr.units)}
        self._viewer.add_image(
            result.lr, name=f"{lr.name} registered LR", scale=lr.scale, translate=translate, **common
        )
        scale, shifted = upscaled_geometry(lr.scale, translate, GRID)
        self._viewer.add_image(
            result.hr,
            name=f"{hr.name} registered HR",
            scale=scale,
            translate=shifted,
            metadata={"microdisk_sr_registration": result.to_json()},
            **common,
        )
        t = result.transform
        self._status.value = (
            f"registered: scale {t.scale:.4f} ({100 * (t.scale / result.nominal_scale - 1):+.2f} % from "
            f"{result.nominal_scale:g}), rotation {t.rotation_deg:+.2f} deg, normalised correlation "
            f"{result.ncc:.3f}; overlap LR rows {y0}:{y1}, columns {x0}:{x1}"
        )
        show_info(f"registered {hr.name!r} onto {lr.name!r}: normalised correlation {result.ncc:.3f}")

    def _on_failed(self, message: str) -> None:
        self._run.enabled = True
        self._status.value = f"failed: {message}"


def _registering(
    lr: np.ndarray, hr: np.ndarray, rgb: bool, scale: float, min_ncc: float
) -> Generator[str, None, Registration]:
    """The job: one status line, then the registration."""
    yield f"registering (nominal scale {scale:g})..."
    return register(lr, hr, scale=scale, min_ncc=min_ncc, rgb=rgb)
