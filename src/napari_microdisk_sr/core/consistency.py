"""LR consistency: does a super-resolved image, degraded back, reproduce its low-resolution input?

Without a high-resolution truth, an SR result can still be checked against the one thing known for sure: the
LR image it was made from. Degrading the SR image back with the acquisition's degradation must give the LR
image again, up to the camera's noise. Where it does not, the network added or removed something: a bright
speck it invented, an edge it moved, texture that averages to the wrong level.

The degradation back is, in this order:

- with a calibrated profile (the JSON that ``microdisk-sr calibrate`` writes; see :func:`read_profile`):
  its noise-free optics (:func:`.degradation.blur_downsample`: a Gaussian PSF of ``psf_sigma`` HR pixels, then
  ``area`` averaging or antialiased ``bicubic`` down-sampling by 4), then ``offset + gain * x``; the
  profile's noise (``photons``, ``read_noise``) gives the consistency that noise alone would leave
  (:attr:`Consistency.noise_psnr`);
- without one: area averaging of each 4 x 4 block (what a camera pixel does), no blur, no noise model.

Values are compared as fractions of the LR image's data range, the span that maps to ``[0, 1]`` at
inference (see :class:`.intensity.Intensity`: the dtype's range, a bit depth, the min-max or the percentiles;
the SR image is mapped by the LR's span, the same affine map): the map is ``|degrade(SR) - LR|`` averaged
over colour channels, and the consistency is the PSNR of the degraded SR against the LR with data range 1.
"""

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import calibrate
from .calibrate import DOWNSAMPLINGS
from .degradation import blur_downsample
from .errors import InputError
from .images import image_layout, normalizations_for, validate_image
from .intensity import AUTO, Intensity

SCALE = 4
"""The resolution ratio checked."""


@dataclass(frozen=True)
class BackDegradation:
    """How an SR image is degraded back to its LR grid.

    Attributes
    ----------
    psf_sigma : float
        Gaussian PSF sigma in HR pixels (0: no blur).
    downsampling : {"area", "bicubic"}
        Down-sampling by :data:`SCALE`.
    gain, offset : float
        ``LR = offset + gain * x``, in fractions of the data range.
    photons, read_noise : float or None
        The profile's Poisson-Gaussian noise (photo-electrons at full scale; read-noise sigma as a fraction
        of full scale); None without a profile.
    source : str or None
        The profile file it was read from; None for the default.
    """

    psf_sigma: float = 0.0
    downsampling: str = "area"
    gain: float = 1.0
    offset: float = 0.0
    photons: "float | None" = None
    read_noise: "float | None" = None
    source: "str | None" = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.psf_sigma) and self.psf_sigma >= 0):
            raise InputError(f"psf_sigma must be a number >= 0 (HR pixels), got {self.psf_sigma!r}")
        if self.downsampling not in DOWNSAMPLINGS:
            raise InputError(
                f"downsampling must be one of {', '.join(DOWNSAMPLINGS)}, got {self.downsampling!r}"
            )
        if not (math.isfinite(self.gain) and self.gain > 0 and math.isfinite(self.offset)):
            raise InputError(
                f"gain must be positive and offset finite, got {self.gain!r} and {self.offset!r}"
            )

    def describe(self) -> str:
        """The degradation in words, for the command line, provenance and tooltips."""
        down = f"{'area' if self.downsampling == 'area' else 'antialiased bicubic'} down-sampling x{SCALE}"
        if self.source is None:
            return down
        return (
            f"profile {Path(self.source).name}: Gaussian PSF sigma {self.psf_sigma:.3g} HR px, {down}, "
            f"gain {self.gain:.4g}, offset {self.offset:.4g}"
        )

    def apply(self, sr: np.ndarray) -> np.ndarray:
        """Degrade ``sr``, an ``(H, W)`` or ``(H, W, C)`` float image in ``[0, 1]`` units, to its LR grid.

        ``H`` and ``W`` must be multiples of :data:`SCALE`; returns float32 ``(H / 4, W / 4[, C])``.
        """
        sr = np.asarray(sr, dtype=np.float32)
        planes = np.ascontiguousarray(sr[None] if sr.ndim == 2 else np.moveaxis(sr, -1, 0))
        x = blur_downsample(planes, sigma=self.psf_sigma, area=self.downsampling == "area", scale=SCALE)
        x = x[0] if sr.ndim == 2 else np.moveaxis(x, 0, -1)
        return (self.offset + self.gain * x).astype(np.float32)


AREA = BackDegradation()
"""The default degradation back: area averaging of 4 x 4 blocks."""


def read_profile(path: "str | os.PathLike[str]") -> BackDegradation:
    """The degradation back of a calibrated profile (:func:`.calibrate.read_profile` reads and checks it).

    A profile fitted from LR images alone has ``psf_sigma`` and ``downsampling`` null (unmeasured): it is
    then taken as no blur and area down-sampling.

    Raises
    ------
    InputError
        When the file is not a valid profile (the message names the file), or is not for x4.
    """
    profile = calibrate.read_profile(path)
    if profile.scale != SCALE:
        raise InputError(
            f"degradation profile {path} is for x{profile.scale}; the consistency check is x{SCALE}"
        )
    return BackDegradation(
        psf_sigma=profile.psf_sigma or 0.0,
        downsampling=profile.downsampling or "area",
        gain=profile.gain,
        offset=profile.offset,
        photons=profile.photons,
        read_noise=profile.read_noise,
        source=str(path),
    )


@dataclass(frozen=True, eq=False)
class Consistency:
    """How well an SR image, degraded back, reproduces its LR image.

    Attributes
    ----------
    map : (..., h, w) float32 ndarray
        ``|degrade(SR) - LR|`` at the LR's size, in fractions of the data range, averaged over channels.
    psnr : float
        PSNR of the degraded SR against the LR, in dB (data range 1); ``inf`` when they are identical.
    degradation : str
        How the SR image was degraded back, in words.
    noise_psnr : float or None
        The PSNR that the profile's noise alone would leave (a consistent SR image scores about this);
        None without a profile.
    """

    map: np.ndarray
    psnr: float
    degradation: str
    noise_psnr: "float | None" = None

    def provenance(self) -> dict[str, Any]:
        """The values to record beside an output (infinity as the string ``"inf"``)."""
        record = {"lr_consistency_psnr": self.psnr if math.isfinite(self.psnr) else "inf"}
        return record | {"lr_consistency_degradation": self.degradation}


def consistency_of(
    sr_unit: np.ndarray, lr_unit: np.ndarray, degradation: BackDegradation = AREA
) -> Consistency:
    """:func:`lr_consistency` of images already in ``[0, 1]`` units of one data range.

    Parameters
    ----------
    sr_unit, lr_unit : (..., H, W[, C]) and (..., H / 4, W / 4[, C]) float ndarray
        Planes with the same leading axes and channels; gray planes have no channel axis.
    degradation : BackDegradation
    """
    sr_unit, lr_unit = np.asarray(sr_unit, np.float32), np.asarray(lr_unit, np.float32)
    # A colour axis has the same length in both; a gray plane's last axis (columns) is 4x longer in the SR.
    color = lr_unit.shape[-1] == sr_unit.shape[-1]
    planes = lr_unit.shape[: lr_unit.ndim - (3 if color else 2)]
    back = np.empty_like(lr_unit)
    for index in np.ndindex(*planes):
        back[index] = degradation.apply(sr_unit[index])
    diff = back - lr_unit
    error = np.abs(diff).mean(axis=-1) if color else np.abs(diff)
    mse = float(np.mean(np.square(diff, dtype=np.float64)))
    noise = None
    if degradation.photons is not None and degradation.read_noise is not None:
        noise_mse = float(np.mean(np.clip(back, 0.0, None) / degradation.photons)) + degradation.read_noise**2
        noise = _db(noise_mse)
    return Consistency(error.astype(np.float32), _db(mse), degradation.describe(), noise)


def _db(mse: float) -> float:
    return math.inf if mse == 0.0 else -10.0 * math.log10(mse)


def lr_consistency(
    sr: np.ndarray,
    lr: np.ndarray,
    *,
    degradation: BackDegradation = AREA,
    intensity: Intensity = AUTO,
) -> Consistency:
    """Degrade an SR image back to its LR grid and measure how well it reproduces the LR image.

    Parameters
    ----------
    sr : (..., 4h, 4w) or (..., 4h, 4w, C) ndarray
        The super-resolved image, of the LR image's dtype (as :func:`.infer.upscale` returns it).
    lr : (..., h, w) or (..., h, w, C) ndarray
        The low-resolution input; gray, RGB or RGBA (alpha is ignored), with optional leading axes.
    degradation : BackDegradation
        :data:`AREA` by default, or a profile's (:func:`read_profile`).
    intensity : Intensity
        The value mapping the SR image was made with (see :class:`.intensity.Intensity`); default ``auto``.

    Returns
    -------
    Consistency

    Raises
    ------
    InputError
        For images that are not an x4 pair of one dtype and the same channels.
    """
    sr, lr = np.asarray(sr), np.asarray(lr)
    for image, what in ((sr, "SR image"), (lr, "LR image")):
        try:
            validate_image(image)
        except InputError as exc:
            raise InputError(f"{what}: {exc}") from exc
    layout = image_layout(lr.shape)
    if sr.dtype != lr.dtype:
        raise InputError(
            f"the SR image is {sr.dtype} but the LR image is {lr.dtype}; give the upscale of this LR"
        )
    if sr.shape != layout.output_shape(SCALE):
        raise InputError(
            f"the SR image {sr.shape} is not the x{SCALE} of the LR image {lr.shape}: "
            "give the upscale of this LR"
        )
    norm, _alpha = normalizations_for(lr, layout, intensity=intensity)
    if layout.has_alpha:
        sr, lr = sr[..., :3], lr[..., :3]
    return consistency_of(norm.to_unit(sr), norm.to_unit(lr), degradation)
