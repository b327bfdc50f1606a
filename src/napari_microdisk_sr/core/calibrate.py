"""The user's microscope as a degradation profile: PSF, down-sampling, gain/offset, Poisson-Gaussian noise.

:func:`calibrate` fits a :class:`DegradationProfile` to a low-resolution acquisition, and to a registered
high-resolution image of the same field when there is one; fine-tuning then makes its training pairs with
that microscope (``degradation="profile"`` in :func:`.degradation.degrade`) instead of the generic ranges.

The model, in the order light meets it, with LR and HR values in ``[0, 1]`` (mapped as everywhere, see
:func:`.images.value_range`)::

    x  = down-sample(HR * Gaussian(psf_sigma))          area or bicubic, by ``scale``
    LR = offset + gain * x + noise,   Var(noise) = (offset + gain * x) / photons + read_noise**2

- **With a registered HR** (exactly ``scale`` times the LR's size, pixel centres aligned as ``microdisk-sr
  register`` writes it): the PSF sigma and the down-sampling are those whose least-squares fit of
  ``offset + gain * x`` to the LR leaves the smallest residual; the noise is the mean-variance relation of
  that residual.
- **With the LR alone**: the noise is fitted from flat regions (Foi et al. 2008, "Practical
  Poissonian-Gaussian noise modeling and fitting for single-image raw-data"): the finest diagonal wavelet
  detail of 2x2 cells has the noise's variance wherever the signal is locally linear; blocks whose
  horizontal and vertical details vary no more (no edge, no texture) give one (mean, variance) point each,
  and a line through the binned points gives ``1 / photons`` (slope) and ``read_noise**2`` (intercept). The
  PSF cannot be measured without a sharper image: the profile has ``psf_sigma`` and ``downsampling`` None
  (training then draws them from the generic ranges), ``gain`` 1 and ``offset`` 0.

Shot noise is taken on the whole LR value, offset included (a background that is light, as in bright-field):
for a camera whose offset is an electronic bias, ``read_noise`` absorbs the difference, and the fitted
relation still reproduces the measured noise at every intensity seen.
"""

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize

from . import io
from .degradation import DEGRADATIONS, blur_downsample
from .errors import InputError
from .images import image_layout, value_range
from .intensity import RANGE, Intensity

__all__ = [
    "DOWNSAMPLINGS",
    "PROFILE_FORMAT",
    "DegradationProfile",
    "FitQuality",
    "calibrate",
    "profile_for",
    "read_profile",
]

PROFILE_FORMAT = "napari-microdisk-sr degradation profile"
DOWNSAMPLINGS = ("area", "bicubic")
MAX_PHOTONS = 1e6
"""The photons of a profile whose noise shows no shot-noise term (a flat mean-variance relation)."""
MAX_SIGMA = 6.0  # the largest PSF sigma searched, HR pixels

_MARGIN = 4  # LR pixels left out at the border of a pair, where the HR's reflected border is not the field
_BINS = 16  # intensity bins of the mean-variance fit
_BLOCK = 4  # 2x2 cells per side of a block of the LR-only fit (8 LR pixels)
_MIN_BLOCKS = 24  # flat blocks the LR-only fit needs
_FLAT = 1.6  # largest ratio of a flat block's horizontal/vertical detail energy to the noise at its level
_NARROW = 0.35  # the narrowest intensity range over which photons and read noise separate well
_CLIPPED = 0.02  # largest share of clipped pixels (pair) or blocks (LR alone) of a bin that is fitted


@dataclass(frozen=True)
class FitQuality:
    """How well a profile explains the data it was fitted to.

    Attributes
    ----------
    source : {"pair", "lr"}
        Fitted to a registered LR/HR pair, or to the LR alone.
    noise_r2 : float
        R² of the mean-variance line over the intensity bins (weighted as the fit).
    noise_levels : int
        Intensity bins the line was fitted to.
    intensity_range : (float, float)
        The lowest and highest bin mean: the intensities the noise model was measured on.
    residual_rms : float or None
        Pair: RMS of ``LR - (offset + gain * x)``, in ``[0, 1]`` units.
    predicted_noise_rms : float or None
        Pair: the RMS noise the fitted noise model predicts on the same pixels; close to
        ``residual_rms`` when the optics explain the LR up to its noise.
    other_downsampling_rms : float or None
        Pair: the residual RMS of the best fit with the other down-sampling.
    notes : tuple of str
        What could not be measured, or values held at a bound.
    """

    source: str
    noise_r2: float
    noise_levels: int
    intensity_range: tuple[float, float]
    residual_rms: "float | None" = None
    predicted_noise_rms: "float | None" = None
    other_downsampling_rms: "float | None" = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, repr=False)
class DegradationProfile:
    """A microscope's degradation of HR images into its LR ones (see the module notes for the model).

    Attributes
    ----------
    photons : float
        Expected photo-electrons at full scale (an LR value of 1), as :data:`.degradation.PHOTON_RANGE`.
    read_noise : float
        Gaussian noise sigma at zero signal, fraction of full scale.
    psf_sigma : float or None
        Gaussian PSF sigma in HR pixels (0: none); None when it could not be measured (no HR image).
    downsampling : {"area", "bicubic"} or None
        How the camera's pixels sample the blurred image; None when it could not be measured.
    gain, offset : float
        ``LR = offset + gain * x`` before the noise (``x`` the blurred, down-sampled HR).
    scale : int
        HR pixels per LR pixel of the fit.
    fit : FitQuality or None
        How well the profile explains its data (None for a profile written by hand).
    intensity : str or None
        The mapping of the fitted images' values to ``[0, 1]`` (the text form of an
        :class:`.intensity.Intensity`): fine-tuning maps its crops the same way, since the profile's gain,
        offset and noise are in those units. None for a profile that does not say (written by hand).
    """

    photons: float
    read_noise: float
    psf_sigma: "float | None" = None
    downsampling: "str | None" = None
    gain: float = 1.0
    offset: float = 0.0
    scale: int = 4
    fit: "FitQuality | None" = None
    intensity: "str | None" = None

    def __post_init__(self) -> None:
        _positive("photons", self.photons)
        _non_negative("read_noise", self.read_noise)
        if self.psf_sigma is not None:
            _non_negative("psf_sigma", self.psf_sigma)
        if self.downsampling is not None and self.downsampling not in DOWNSAMPLINGS:
            raise InputError(
                f"downsampling must be one of {', '.join(DOWNSAMPLINGS)} or null, got {self.downsampling!r}"
            )
        _positive("gain", self.gain)
        if not _is_number(self.offset) or not math.isfinite(self.offset) or not -1 < self.offset < 1:
            raise InputError(
                f"offset must be a number in (-1, 1) (a fraction of full scale), got {self.offset!r}"
            )
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, np.integer)) or self.scale < 2:
            raise InputError(f"scale must be a whole number of at least 2, got {self.scale!r}")
        if self.fit is not None and not isinstance(self.fit, FitQuality):
            raise InputError(f"fit must be a FitQuality or None, got {type(self.fit).__name__}")
        if self.intensity is not None:
            object.__setattr__(self, "intensity", str(Intensity.parse(self.intensity)))

    def __repr__(self) -> str:
        psf = "unmeasured" if self.psf_sigma is None else f"{self.psf_sigma:.3g}"
        return (
            f"DegradationProfile(psf_sigma={psf}, downsampling={self.downsampling}, gain={self.gain:.4g}, "
            f"offset={self.offset:.4g}, photons={self.photons:.4g}, read_noise={self.read_noise:.4g}, "
            f"intensity={self.intensity})"
        )

    def to_json(self) -> dict[str, Any]:
        """The profile as a JSON-ready dict, its format named first."""
        data = {"format": PROFILE_FORMAT} | dataclasses.asdict(self)
        if self.fit is not None:
            data["fit"]["intensity_range"] = list(self.fit.intensity_range)
            data["fit"]["notes"] = list(self.fit.notes)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "DegradationProfile":
        """Rebuild a profile written by :meth:`to_json`, validating it.

        Raises
        ------
        InputError
            For another format, missing or unknown keys, or invalid values.
        """
        if not isinstance(data, Mapping) or data.get("format") != PROFILE_FORMAT:
            raise InputError(f'not a degradation profile (its "format" is not {PROFILE_FORMAT!r})')
        values = {k: v for k, v in data.items() if k != "format"}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = sorted(set(values) - names), sorted({"photons", "read_noise"} - set(values))
        if unknown or missing:
            what = f"unknown key(s) {', '.join(unknown)}" if unknown else f"no {', '.join(missing)}"
            raise InputError(f"degradation profile has {what}; write it with microdisk-sr calibrate")
        fit = values.get("fit")
        if fit is not None:
            fit_names = {f.name for f in dataclasses.fields(FitQuality)}
            if not isinstance(fit, Mapping) or not set(fit) <= fit_names or "source" not in fit:
                raise InputError('degradation profile\'s "fit" is not a fit quality record')
            fit = dict(fit)
            fit["intensity_range"] = tuple(fit.get("intensity_range", (math.nan, math.nan)))
            fit["notes"] = tuple(fit.get("notes", ()))
            try:
                values["fit"] = FitQuality(**fit)
            except TypeError as exc:
                raise InputError(f'degradation profile\'s "fit" is incomplete: {exc}') from exc
        return cls(**values)


def read_profile(path: "str | os.PathLike[str]") -> DegradationProfile:
    """Read a profile file written by ``microdisk-sr calibrate`` (or :meth:`DegradationProfile.to_json`).

    Raises
    ------
    InputError
        If the file is missing, not JSON, or not a valid profile; the message names the file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError(
            f"degradation profile {path} does not exist; make one with microdisk-sr calibrate"
        ) from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the degradation profile {path}: {exc}") from exc
    try:
        return DegradationProfile.from_json(data)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc


def profile_for(degradation: str) -> "DegradationProfile | None":
    """The profile a degradation setting names: None for a generic one, the file's profile for a path.

    Raises
    ------
    InputError
        For a setting that is neither a degradation's name nor a readable profile (.json) file.
    """
    if degradation in DEGRADATIONS:
        return None
    if not isinstance(degradation, str) or not degradation.lower().endswith(".json"):
        raise InputError(
            f"unknown degradation {degradation!r}; choose one of {', '.join(DEGRADATIONS)}, or give a "
            "profile file (.json) written by microdisk-sr calibrate"
        )
    return read_profile(degradation)


def write_profile(path: "str | os.PathLike[str]", profile: DegradationProfile) -> Path:
    """Write ``profile`` as JSON, atomically; an existing file is never replaced (:class:`OutputError`)."""
    return io.write_json(path, profile.to_json())


def calibrate(
    lr: np.ndarray, hr: "np.ndarray | None" = None, *, scale: int = 4, intensity: Intensity = RANGE
) -> DegradationProfile:
    """Fit the degradation profile of the microscope that acquired ``lr``.

    Parameters
    ----------
    lr : (..., h, w) or (..., h, w, 3|4) ndarray
        The low-resolution acquisition (gray or RGB, stacks allowed; alpha is ignored). Every plane and
        colour channel is taken to come from the same camera.
    hr : ndarray, optional
        A high-resolution image of the same field registered onto the LR's x``scale`` grid: the LR's layout
        with each plane ``(scale * h, scale * w)``. Without it only the noise is fitted.
    scale : int
        HR pixels per LR pixel.
    intensity : Intensity
        How values map to ``[0, 1]`` (see :class:`.intensity.Intensity`). A profile describes a camera on a
        fixed scale, so the default is ``range``, and ``bits:N`` suits an N-bit camera (percentile maps, one
        per image, would fit the gain and offset between two normalised images instead). The profile
        records it, and fine-tuning with the profile maps its crops the same way.

    Returns
    -------
    DegradationProfile
        With a :class:`FitQuality` that says how well it explains the data and what it could not measure,
        and the ``intensity`` of the fit.

    Raises
    ------
    InputError
        For unusable images (shape, dtype, mismatch), or too few flat regions or intensities to fit the noise.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 2:
        raise InputError(f"scale must be a whole number of at least 2, got {scale!r}")
    lr_planes = _unit_planes(lr, "LR image", intensity)
    if hr is None:
        return dataclasses.replace(_fit_lr_alone(lr_planes, int(scale)), intensity=str(intensity))
    hr_planes = _unit_planes(hr, "HR image", intensity)
    expected = (lr_planes.shape[0], lr_planes.shape[1] * scale, lr_planes.shape[2] * scale)
    if hr_planes.shape != expected:
        raise InputError(
            f"the HR image's planes are {hr_planes.shape[1]}x{hr_planes.shape[2]} "
            f"({hr_planes.shape[0]} planes) but the LR's x{scale} grid is {expected[1]}x{expected[2]} "
            f"({expected[0]} planes): give the HR "
            "registered onto the LR, as microdisk-sr register writes it"
        )
    return dataclasses.replace(_fit_pair(lr_planes, hr_planes, int(scale)), intensity=str(intensity))


def _unit_planes(image: np.ndarray, what: str, intensity: Intensity) -> np.ndarray:
    """An image as float32 ``(planes, h, w)`` mapped by ``intensity``, each leading index and colour channel a
    plane."""
    image = np.asarray(image)
    if image.dtype.kind not in "uif":
        raise InputError(f"{what} has dtype {image.dtype}; give an integer or float intensity image")
    layout = image_layout(image.shape)
    if layout.has_alpha:
        image = image[..., :3]
    if not np.isfinite(image).all():
        raise InputError(f"{what} has NaN or infinite values")
    low, high = value_range(image, intensity=intensity)
    unit = (image.astype(np.float64) - low) / (high - low if high > low else 1.0)
    planes = (
        unit.reshape(-1, layout.height, layout.width)
        if layout.is_gray
        else np.moveaxis(unit.reshape(-1, layout.height, layout.width, 3), -1, 1).reshape(
            -1, layout.height, layout.width
        )
    )
    if min(layout.height, layout.width) < 4 * _MARGIN:
        raise InputError(f"{what} is {layout.height}x{layout.width}; calibrate on at least 16x16 pixels")
    return np.ascontiguousarray(planes, dtype=np.float32)


# -- the fit to a registered pair --------------------------------------------------------------------------


def _fit_pair(lr: np.ndarray, hr: np.ndarray, scale: int) -> DegradationProfile:
    interior = np.zeros(lr.shape, dtype=bool)
    interior[:, _MARGIN:-_MARGIN, _MARGIN:-_MARGIN] = True
    clipped = (lr <= 0.0) | (lr >= 1.0)
    fitted = interior & ~clipped
    if fitted.sum() < 100:
        raise InputError(
            "the LR image has fewer than 100 unclipped pixels away from its border: nothing to fit"
        )
    target = lr[fitted].astype(np.float64)

    def residual(sigma: float, area: bool) -> tuple[float, float, float]:
        """(RMS residual, gain, offset) of the least-squares fit of the optics with ``sigma``."""
        x = blur_downsample(hr, sigma=sigma, area=area, scale=scale)[fitted].astype(np.float64)
        design = np.stack([x, np.ones_like(x)], axis=1)
        (gain, offset), *_ = np.linalg.lstsq(design, target, rcond=None)
        return float(np.sqrt(np.mean((target - design @ (gain, offset)) ** 2))), float(gain), float(offset)

    fits = {area: _best_sigma(lambda s, a=area: residual(s, a)[0]) for area in (True, False)}
    area = fits[True][1] <= fits[False][1]
    sigma, rms = fits[area]
    _, gain, offset = residual(sigma, area)
    if gain <= 0:
        raise InputError(
            "the HR image does not explain the LR (the fitted gain is not positive): are they registered "
            "images of the same field?"
        )
    mean = offset + gain * blur_downsample(hr, sigma=sigma, area=area, scale=scale)
    noise = lr - mean
    binned = _bin_by_intensity(mean[interior], noise[interior], clipped[interior], np.var, per_value=True)
    photons, read_noise, r2, notes = _noise_line(*binned)
    if fits[not area][1] <= 1.005 * rms:
        notes.append(
            "area and bicubic down-sampling (each with its best PSF) explain the LR about equally well: "
            "the choice matters little"
        )
    used = interior & ~clipped
    predicted = float(np.sqrt(np.mean(np.maximum(mean[used], 0.0) / photons + read_noise**2)))
    quality = FitQuality(
        source="pair",
        noise_r2=r2,
        noise_levels=len(binned[0]),
        intensity_range=(float(binned[0].min()), float(binned[0].max())),
        residual_rms=rms,
        predicted_noise_rms=predicted,
        other_downsampling_rms=fits[not area][1],
        notes=tuple(notes),
    )
    return DegradationProfile(
        photons=photons,
        read_noise=read_noise,
        psf_sigma=sigma,
        downsampling="area" if area else "bicubic",
        gain=gain,
        offset=offset,
        scale=scale,
        fit=quality,
    )


def _best_sigma(cost: Any) -> tuple[float, float]:
    """The sigma in ``[0, MAX_SIGMA]`` of least ``cost``: a grid, then Brent's method around its best."""
    grid = np.linspace(0.0, MAX_SIGMA, 13)
    costs = [cost(s) for s in grid]
    k = int(np.argmin(costs))
    low, high = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    found = optimize.minimize_scalar(cost, bounds=(low, high), method="bounded", options={"xatol": 1e-3})
    if found.fun < costs[k]:
        return float(found.x), float(found.fun)
    return float(grid[k]), float(costs[k])


# -- the fit to the LR alone -------------------------------------------------------------------------------


def _fit_lr_alone(lr: np.ndarray, scale: int) -> DegradationProfile:
    planes, h, w = lr.shape
    cells = lr[:, : h // 2 * 2, : w // 2 * 2].reshape(planes, h // 2, 2, w // 2, 2)
    a, b, c, d = cells[:, :, 0, :, 0], cells[:, :, 0, :, 1], cells[:, :, 1, :, 0], cells[:, :, 1, :, 1]
    # Haar details of each 2x2 cell, each of the noise's variance for independent pixel noise
    diagonal, horizontal, vertical = (a - b - c + d) / 2, (a + b - c - d) / 2, (a - b + c - d) / 2
    n_y, n_x = h // 2 // _BLOCK, w // 2 // _BLOCK
    if n_y * n_x == 0:
        raise InputError(
            f"the LR image is {h}x{w}; fitting the noise alone needs at least {4 * _BLOCK} pixels a side"
        )

    def blocks(values: np.ndarray) -> np.ndarray:
        """(planes * n_y * n_x, _BLOCK**2) values of each block of cells."""
        values = values[:, : n_y * _BLOCK, : n_x * _BLOCK].reshape(planes, n_y, _BLOCK, n_x, _BLOCK)
        return values.transpose(0, 1, 3, 2, 4).reshape(-1, _BLOCK * _BLOCK)

    clipped_cells = ((cells <= 0.0) | (cells >= 1.0)).any(axis=(2, 4))
    mean = blocks((a + b + c + d) / 4).mean(axis=1)
    noise = (blocks(diagonal) ** 2).mean(axis=1)
    # a linear gradient (illumination) gives constant horizontal and vertical details: their spread is noise
    detail = (blocks(horizontal).var(axis=1) + blocks(vertical).var(axis=1)) / 2
    clipped = blocks(clipped_cells).any(axis=1)
    if len(mean) < _MIN_BLOCKS:
        raise InputError(
            f"the LR image has {len(mean)} regions of {2 * _BLOCK}x{2 * _BLOCK} pixels: fitting the noise "
            f"alone needs at least {_MIN_BLOCKS}; give a larger image, or a registered HR image with --hr"
        )
    # A block is flat when its horizontal and vertical details are no larger than the noise at its level;
    # the level's noise comes from the flat blocks of the pass before (the first pass: every block). The
    # details are independent of the diagonal one, so the choice does not bias the variances kept.
    flat = np.ones(len(mean), dtype=bool)
    for _ in range(3):
        level, variance, _ = _bin_by_intensity(
            mean[flat], noise[flat], clipped[flat], np.median, per_value=False
        )
        flat = detail <= _FLAT * np.interp(mean, level, variance)
        if flat.sum() < _MIN_BLOCKS:
            raise InputError(
                f"only {int(flat.sum())} flat {2 * _BLOCK}x{2 * _BLOCK} regions in the LR image: the noise "
                "cannot be fitted from it alone; give a larger image, or a registered HR image with --hr"
            )
    binned = _bin_by_intensity(mean[flat], noise[flat], clipped[flat], np.mean, per_value=False)
    photons, read_noise, r2, notes = _noise_line(*binned)
    notes.insert(
        0,
        "no HR image: the PSF and the down-sampling were not measured (training draws them from the "
        "generic ranges); gain 1 and offset 0 are relative to an HR image",
    )
    quality = FitQuality(
        source="lr",
        noise_r2=r2,
        noise_levels=len(binned[0]),
        intensity_range=(float(binned[0].min()), float(binned[0].max())),
        notes=tuple(notes),
    )
    return DegradationProfile(photons=photons, read_noise=read_noise, scale=scale, fit=quality)


# -- the mean-variance relation ----------------------------------------------------------------------------


def _bin_by_intensity(
    means: np.ndarray, values: np.ndarray, clipped: np.ndarray, estimate: Any, *, per_value: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group samples into intensity bins of equal counts; a variance per bin, and the bins' sizes.

    ``estimate`` turns a bin's ``values`` into its variance (``per_value``: the values are noise samples;
    else they are variance estimates, one per block). Bins with more than :data:`_CLIPPED` clipped samples
    are left out: clipping at 0 or 1 narrows the noise there.
    """
    least = 30 if per_value else 4
    bins = int(np.clip(len(means) // least, 3, _BINS))
    edges = np.unique(np.quantile(means, np.linspace(0.0, 1.0, bins + 1)))
    which = np.clip(np.searchsorted(edges, means, side="right") - 1, 0, len(edges) - 2)
    level, variance, count = [], [], []
    for k in range(len(edges) - 1):
        inside = which == k
        n = int(inside.sum())
        if n < least or clipped[inside].mean() > _CLIPPED:
            continue
        level.append(float(means[inside].mean()))
        variance.append(float(estimate(values[inside])))
        count.append(n)
    if len(level) < 3:
        raise InputError(
            "fewer than 3 intensity levels without clipping to fit the noise on: the image is nearly uniform "
            "or saturated; calibrate on an image with a range of grey levels"
        )
    return np.asarray(level), np.asarray(variance), np.asarray(count, dtype=np.float64)


def _noise_line(
    level: np.ndarray, variance: np.ndarray, count: np.ndarray
) -> tuple[float, float, float, list[str]]:
    """Fit ``variance = level / photons + read_noise**2``, weighted by each point's precision.

    Returns photons, read noise, the weighted R² and notes on values held at a bound.
    """
    weights = count / np.maximum(variance, 1e-12) ** 2  # a variance estimate's variance grows as its square
    root = np.sqrt(weights)
    design = np.stack([level, np.ones_like(level)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(design * root[:, None], variance * root, rcond=None)
    residual = variance - design @ (slope, intercept)
    centred = variance - np.average(variance, weights=weights)
    total = float(np.sum(weights * centred**2))
    r2 = 1.0 - float(np.sum(weights * residual**2)) / total if total > 0 else 0.0
    notes = []
    if level.max() - level.min() < _NARROW:
        notes.append(
            f"the noise was measured on intensities {level.min():.2f}-{level.max():.2f} only: photons and "
            "read noise trade off there (the noise they give together in that range is what is reliable)"
        )
    if slope > 1.0 / MAX_PHOTONS:
        photons = float(1.0 / slope)
    else:
        photons = MAX_PHOTONS
        notes.append(
            "no shot noise measurable (the variance does not grow with intensity): "
            f"photons held at {MAX_PHOTONS:g}"
        )
    if intercept > 0:
        read_noise = float(math.sqrt(intercept))
    else:
        read_noise = 0.0
        notes.append("the noise at zero signal extrapolates below zero: read_noise held at 0")
    return photons, read_noise, r2, notes


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _positive(name: str, value: Any) -> None:
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{name} must be a positive number, got {value!r}")


def _non_negative(name: str, value: Any) -> None:
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise InputError(f"{name} must be a number >= 0, got {value!r}")
