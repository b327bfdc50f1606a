"""The degradation model: how a low-resolution acquisition is made from a high-resolution image.

``"bicubic"`` is the study's (antialiased bicubic down-sampling); ``"realistic"`` draws a microscope from a
wide family (blur, camera-pixel integration, Poisson-Gaussian noise); ``"profile"`` draws one near a
calibrated :class:`~.calibrate.DegradationProfile` of the user's microscope. :mod:`.pairs` makes training
pairs with these; :mod:`.metrics` makes synthetic LR images for evaluation; :mod:`.calibrate` fits them.
"""

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError

if TYPE_CHECKING:
    from .calibrate import DegradationProfile

__all__ = [
    "ANISOTROPIC_PROBABILITY",
    "AREA_PROBABILITY",
    "BLUR_SIGMA_RANGE",
    "DEGRADATIONS",
    "PHOTON_RANGE",
    "PROFILE",
    "PROFILE_JITTER",
    "READ_NOISE_RANGE",
    "blur_downsample",
    "check_degradation",
    "check_profile",
    "degrade",
    "degrade_patches",
]

DEGRADATIONS = ("bicubic", "realistic")
PROFILE = "profile"
"""The degradation kind of a calibrated :class:`~.calibrate.DegradationProfile` (given beside the kind)."""

# The realistic degradation's ranges (see :func:`degrade` for why these values).
BLUR_SIGMA_RANGE = (0.3, 2.5)  # Gaussian PSF sigma, HR pixels
ANISOTROPIC_PROBABILITY = 0.3  # share of elongated (rotated, two-sigma) PSFs
AREA_PROBABILITY = 0.5  # share of area (camera-pixel) down-sampling; the rest is antialiased bicubic
PHOTON_RANGE = (100.0, 10_000.0)  # expected photo-electrons at full scale, drawn log-uniformly
READ_NOISE_RANGE = (0.001, 0.01)  # Gaussian read-noise sigma, fraction of full scale
PROFILE_JITTER = 0.1  # a profile's fitted values are each drawn within +-10 % (a fit's own uncertainty)


def check_degradation(kind: str) -> None:
    """Raise :class:`InputError` unless ``kind`` is one of :data:`DEGRADATIONS`."""
    if kind not in DEGRADATIONS:
        raise InputError(f"unknown degradation {kind!r}; choose one of {', '.join(DEGRADATIONS)}")


def check_profile(kind: str, profile: "DegradationProfile | None", scale: int) -> None:
    """Raise :class:`InputError` unless ``kind`` is a degradation and ``profile`` is given for it alone."""
    if kind != PROFILE:
        check_degradation(kind)
        if profile is not None:
            raise InputError(
                f"a degradation profile was given but the degradation is {kind!r}, not {PROFILE!r}"
            )
    elif profile is None:
        raise InputError("the profile degradation needs a profile: see microdisk-sr calibrate")
    elif profile.scale != scale:
        raise InputError(
            f"the degradation profile was fitted at x{profile.scale} but the pairs are x{scale}; "
            "calibrate on an LR/HR pair of the model's scale"
        )


class _Degradation(NamedTuple):
    """The random draws of one realistic or profile degradation."""

    kernel: "np.ndarray | None"  # (k, k) float32 HR blur kernel summing to 1, or None
    area: bool  # area (True) or antialiased bicubic (False) down-sampling
    photons: float  # expected photo-electrons at full scale; 0 means no noise
    read_noise: float  # Gaussian read-noise sigma, fraction of full scale
    gain: float = 1.0  # LR = offset + gain * (blurred, down-sampled HR), before the noise
    offset: float = 0.0


_BICUBIC = _Degradation(kernel=None, area=False, photons=0.0, read_noise=0.0)


def degrade(
    hr: np.ndarray,
    *,
    kind: str = "bicubic",
    scale: int = 4,
    rng: "np.random.Generator | None" = None,
    profile: "DegradationProfile | None" = None,
) -> np.ndarray:
    """Make the low-resolution counterpart of a high-resolution image.

    ``"bicubic"`` is the study's degradation: antialiased bicubic down-sampling (the kernel widened by the
    scale, as MATLAB's ``imresize`` and PIL do; ``torch.nn.functional.interpolate(..., antialias=True)``).
    It is deterministic and noise-free.

    ``"realistic"`` models a lower-magnification microscope acquisition of the same field, in the order
    light meets it:

    1. Optical blur, a Gaussian PSF in HR pixels, isotropic (sigma 0.3-2.5) or, for 30 % of images,
       anisotropic (two sigmas in the same range, random orientation: astigmatism, a tilted sample, stage
       drift). Why 0.3-2.5: the LR objective's PSF, less the blur the HR image already has, spans from
       almost nothing (an under-sampled camera, where pixel integration dominates) to about 0.6 LR pixel
       = 2.4 HR pixels (a Nyquist-sampled, lower-NA objective; the synthetic scenes of ``core.sample`` use
       that value).
    2. Down-sampling by ``scale``: area averaging for half the images (a camera pixel integrates the light
       over its area; exact binning for an integer scale), antialiased bicubic for the others (LR images
       that were resampled digitally, and the study's convention).
    3. Poisson-Gaussian sensor noise at LR resolution: photon shot noise with 100-10,000 expected
       photo-electrons at full scale (drawn log-uniformly: a signal-to-noise ratio of 10 to 100 at white,
       from dim fluorescence to a well-exposed bright-field on an 8- to 16-bit camera), plus Gaussian read
       noise with sigma 0.1-1 % of full scale (0.3-2.6 grey levels at 8 bits: read noise, dark current and
       quantisation). Colour channels get independent noise; a gray image one noise field.

    ``"profile"`` is the same chain with the values of a microscope's :class:`~.calibrate.DegradationProfile`
    (:mod:`.calibrate` fits them): its Gaussian PSF, its down-sampling, then ``offset + gain * x`` and
    Poisson-Gaussian noise whose variance is ``value / photons + read_noise**2``. Each fitted value is
    drawn within :data:`PROFILE_JITTER` (+-10 %) of the profile's, so that a model does not learn one exact
    blur; a PSF or a down-sampling the profile could not measure (None) is drawn as for ``"realistic"``.

    The result is clipped to ``[0, 1]``.

    Parameters
    ----------
    hr : (H, W) or (H, W, C) ndarray
        Float values in ``[0, 1]``; ``H`` and ``W`` multiples of ``scale``. Pass gray images as ``(H, W)``
        so that the noise is the same in every channel they are later replicated to.
    kind : {"bicubic", "realistic", "profile"}
        The degradation.
    scale : int
        Down-sampling factor, at least 2.
    rng : numpy.random.Generator, optional
        Source of the random draws of the realistic and profile degradations (required for them; unused by
        ``"bicubic"``).
    profile : DegradationProfile, optional
        The microscope of ``kind="profile"`` (required for it, refused for the others).

    Returns
    -------
    (H // scale, W // scale) or (H // scale, W // scale, C) float32 ndarray
        In ``[0, 1]``.

    Raises
    ------
    InputError
        For an unknown ``kind``, a missing ``rng`` or ``profile``, a bad shape, or a size not divisible by
        ``scale``.
    """
    check_profile(kind, profile, scale)
    if kind != "bicubic" and rng is None:
        raise InputError(f"the {kind} degradation is random: pass rng=np.random.default_rng(seed)")
    hr = np.asarray(hr)
    if hr.ndim not in (2, 3) or hr.dtype.kind not in "uif":
        raise InputError(f"expected an (H, W) or (H, W, C) image, got shape {hr.shape} of {hr.dtype}")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 2:
        raise InputError(f"scale must be an integer of at least 2, got {scale!r}")
    if hr.shape[0] % scale or hr.shape[1] % scale or hr.shape[0] == 0 or hr.shape[1] == 0:
        raise InputError(
            f"image size {hr.shape[:2]} must be non-zero multiples of the scale {scale}; crop it first"
        )
    chw = hr[None] if hr.ndim == 2 else np.moveaxis(hr, -1, 0)
    chw = np.ascontiguousarray(chw, dtype=np.float32)
    (lr,) = degrade_patches([chw], kind=kind, scale=scale, rngs=[rng], profile=profile)
    return lr[0] if hr.ndim == 2 else np.moveaxis(lr, 0, -1)


def degrade_patches(
    patches: Sequence[np.ndarray],
    *,
    kind: str,
    scale: int,
    rngs: Sequence["np.random.Generator | None"],
    profile: "DegradationProfile | None" = None,
) -> list[np.ndarray]:
    """Degrade same-sized ``(c, H, W)`` float32 patches, each with its own random stream.

    Blur and noise run per patch (each has its own PSF and noise level); the down-sampling runs on all
    planes at once.
    """
    if kind == PROFILE:
        draws = [_draw_profile(rng, profile) for rng in rngs]
    else:
        draws = [_draw_degradation(rng) if kind == "realistic" else _BICUBIC for rng in rngs]
    planes = np.concatenate([_blur(patch, draw.kernel) for patch, draw in zip(patches, draws, strict=True)])
    area = np.concatenate(
        [np.full(len(patch), draw.area) for patch, draw in zip(patches, draws, strict=True)]
    )
    small = _downsample(planes, area, scale)
    bounds = np.cumsum([0, *(len(patch) for patch in patches)])
    out = []
    for draw, rng, start, stop in zip(draws, rngs, bounds[:-1], bounds[1:], strict=True):
        lr = small[start:stop]
        if draw.gain != 1.0 or draw.offset != 0.0:
            lr = np.maximum(draw.offset + draw.gain * lr, 0.0)
        if draw.photons:
            lr = rng.poisson(lr * draw.photons) / draw.photons + rng.normal(0.0, draw.read_noise, lr.shape)
            lr = np.clip(lr, 0.0, 1.0).astype(np.float32)
        out.append(lr)
    return out


def _draw_degradation(rng: np.random.Generator) -> _Degradation:
    kernel = _draw_kernel(rng)
    area = bool(rng.random() < AREA_PROBABILITY)
    photons = float(np.exp(rng.uniform(*np.log(PHOTON_RANGE))))
    read_noise = float(rng.uniform(*READ_NOISE_RANGE))
    return _Degradation(kernel, area, photons, read_noise)


def _draw_kernel(rng: np.random.Generator) -> np.ndarray:
    """A PSF of the realistic degradation's range: isotropic, or elongated and rotated."""
    low, high = BLUR_SIGMA_RANGE
    if rng.random() < ANISOTROPIC_PROBABILITY:
        sigmas = rng.uniform(low, high, size=2)
        angle = rng.uniform(0.0, math.pi)
    else:
        sigmas = np.full(2, rng.uniform(low, high))
        angle = 0.0
    return _gaussian_kernel(sigmas, angle)


def _draw_profile(rng: np.random.Generator, profile: "DegradationProfile") -> _Degradation:
    """A degradation within :data:`PROFILE_JITTER` of ``profile``'s values (generic where it has none)."""

    def near(value: float) -> float:
        return value * float(rng.uniform(1.0 - PROFILE_JITTER, 1.0 + PROFILE_JITTER))

    if profile.psf_sigma is None:
        kernel = _draw_kernel(rng)
    else:
        sigma = near(profile.psf_sigma)
        kernel = _gaussian_kernel(np.full(2, sigma), 0.0) if sigma > 0 else None
    if profile.downsampling is None:
        area = bool(rng.random() < AREA_PROBABILITY)
    else:
        area = profile.downsampling == "area"
    return _Degradation(
        kernel,
        area,
        near(profile.photons),
        near(profile.read_noise),
        near(profile.gain),
        near(profile.offset),
    )


def _gaussian_kernel(sigmas: np.ndarray, angle: float) -> np.ndarray:
    """A ``(k, k)`` Gaussian kernel with principal sigmas ``sigmas`` rotated by ``angle``, summing to 1."""
    radius = math.ceil(3.0 * float(sigmas.max()))
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    inverse_cov = rotation @ np.diag(1.0 / sigmas**2) @ rotation.T
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    yy, xx = np.meshgrid(offsets, offsets, indexing="ij")
    points = np.stack([xx, yy], axis=-1)
    kernel = np.exp(-0.5 * np.einsum("...i,ij,...j->...", points, inverse_cov, points))
    return (kernel / kernel.sum()).astype(np.float32)


def blur_downsample(planes: np.ndarray, *, sigma: float, area: bool, scale: int) -> np.ndarray:
    """The noise-free optics of a degradation: a Gaussian PSF of ``sigma`` HR pixels, then down-sampling.

    Parameters
    ----------
    planes : (N, H, W) float32 ndarray
        HR planes in ``[0, 1]``, ``H`` and ``W`` multiples of ``scale``.
    sigma : float
        The PSF's sigma in HR pixels; 0 for none.
    area : bool
        Area averaging (a camera pixel's integration), else antialiased bicubic.
    scale : int
        Down-sampling factor.

    Returns
    -------
    (N, H // scale, W // scale) float32 ndarray
    """
    if sigma > 0:  # the isotropic kernel of _gaussian_kernel, applied as two 1D passes
        radius = math.ceil(3.0 * sigma)
        line = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        line = (line / line.sum()).astype(np.float32)
        planes = np.stack(
            [cv2.sepFilter2D(plane, -1, line, line, borderType=cv2.BORDER_REFLECT_101) for plane in planes]
        )
    return _downsample(planes, np.full(len(planes), area), scale)


def _blur(patch: np.ndarray, kernel: "np.ndarray | None") -> np.ndarray:
    if kernel is None:
        return patch
    return np.stack([cv2.filter2D(plane, -1, kernel, borderType=cv2.BORDER_REFLECT_101) for plane in patch])


def _downsample(planes: np.ndarray, area: np.ndarray, scale: int) -> np.ndarray:
    """Down-sample ``(N, H, W)`` planes by ``scale``: area averaging where ``area``, else bicubic."""
    n, h, w = planes.shape
    src = torch.from_numpy(planes).unsqueeze(1)
    out = torch.empty((n, 1, h // scale, w // scale), dtype=torch.float32)
    area_t = torch.from_numpy(area)
    if area.any():
        out[area_t] = F.avg_pool2d(src[area_t], scale)
    if not area.all():
        cubic = F.interpolate(
            src[~area_t], size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False
        )
        out[~area_t] = cubic.clamp_(0.0, 1.0)
    return out.squeeze(1).numpy()
