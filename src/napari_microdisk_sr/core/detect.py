"""Find microdisks in a 2D image: centres and radii, without being told the radius.

A microdisk under the microscope is a dark body ringed by a bright diffraction rim, on a substrate that may
be lighter (bright-field, back-lit) or darker (reflected light) than the body. The detector looks for that
shape at every scale, then measures each disk it finds:

1. **Scale search.** The image (gray, its 0.5-99.5 percentile range mapped to [0, 1]) is correlated with
   ring-matched filters: the mean of a thin ring of radius ``rho`` minus the mean of the disk inside it. A
   microdisk gives a sharp maximum at its centre for ``rho`` near its radius, whatever the substrate's level.
   Radii follow a geometric ladder (8 per octave); radii above 6 px are searched on an image pyramid where
   they are 3 to 6 px again, so the whole search costs about as much as its first octave. Candidates are the
   local maxima that stand out from the noise and whose ring is bright all round (each quarter of the ring
   responds): a filter ring that merely touches a disk's rim from outside fails that test.
2. **Rim fit** (:mod:`.rim_fit`). Strongest first, and skipping the candidates that lie on the rim of a disk
   already found: along 64 rays from the candidate's centre, the body's edge is the steepest rise from the
   dark body to the bright rim, kept where it rises clearly above the noise. A circle fitted to these points
   (algebraic least squares, refitted without outliers, twice) gives the centre to a small fraction of a
   pixel. The radius comes from the mean radial profile: the edge of a blurred step (body to substrate) with
   a rim on it, fitted to the profile. (Once the optics blur a disk, the rim's maximum moves outwards and
   the steepest rise inwards, each by up to a pixel.)
3. **Checks.** A disk is kept when its centre is in the image, its edge is found on enough of the rays that
   lie in the image (support), its rim is brighter than its body by enough times the noise, it does not
   overlap a disk found before, and its radius is in the searched range.

Bright disks on a darker ground (reflected light, fluorescence, coins) are the same shape in the inverted
image: a dark body whose edge rises to a brighter surround. By default both the image and its inverse are
searched, and where a disk is found in both the better-scoring one is kept. Unless a minimum radius is given,
disks far smaller than the typical one found are left out (specks of texture, not disks).

Coordinates are pixel centres: pixel ``(i, j)`` spans ``[i - 0.5, i + 0.5) x [j - 0.5, j + 0.5)``.
"""

import logging
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import InputError
from .rim_fit import Rim, edge_radius, fit_rim

log = logging.getLogger(__name__)

MIN_RADIUS = 2.0
"""The smallest radius, in pixels, that can be searched for."""
DEFAULT_MIN_RADIUS = 3.0
"""The smallest radius searched for when ``radius_range`` does not say."""
POLARITIES = ("either", "dark", "bright")
"""What :func:`detect_disks` looks for: disks of either polarity (the default), dark or bright ones."""

_NORMALISE_PERCENTILES = (0.5, 99.5)
_NOISE_FLOOR = 5e-3  # noise level assumed for noise-free images, as a fraction of the normalised range
# Scale search
_STEPS_PER_OCTAVE = 8
_OCTAVE_BASE = 3.0  # radii from _OCTAVE_BASE * 2**o up to twice that are searched on pyramid level o
_RING_SIGMA = 0.6  # px of the pyramid level: Gaussian width of the matched filter's ring
_ISOTROPY = 0.5  # each quarter of a candidate's ring responds at least this fraction of the whole ring
_QUARTER_DIRECTIONS = np.array([(0, 1), (1, 0), (0, -1), (-1, 0)])  # (dy, dx): right, down, left, up
_CANDIDATE_SNR_RATIO = 1.5  # see _thresholds
# Rim fit (the rest of its settings are in rim_fit)
_SMOOTH_SIGMA = 0.7  # px: smoothing of the image in which the rays locate the edge
_EDGE_SNR = 4.0  # an edge must rise by this many times the noise (see rim_fit)
# Overlaps
_CANDIDATE_SEPARATION = 0.5  # of the larger radius: closer candidates of alike radii are one
_CANDIDATE_SCALE_RATIO = math.log(1.5)  # radii are alike within this (log) ratio
_DISK_SEPARATION = 0.75  # of the sum of the radii: closer disks overlap
_ECHO_REACH = 0.5  # of its radius: a candidate this close to a disk's rim echoes it
# Small outliers, when no minimum radius is given
_FLOOR_FRACTION = 0.4  # of the typical radius: smaller disks are left out ...
_FLOOR_POPULATION = 3  # ... when at least this many disks are found


@dataclass(frozen=True)
class Disk:
    """A microdisk found in (or drawn into) an image.

    Attributes
    ----------
    cy, cx : float
        Centre, in pixels (row, column; pixel centres are integers).
    r : float
        Radius of the body's edge (the middle of the bright rim), in pixels.
    score : float
        Detection confidence: the rim's contrast over the body (as a fraction of the image's robust range)
        times the fraction of the rim found; higher is better. 1.0 for disks not found by the detector.
    touches_border : bool
        Whether the disk crosses the image border (part of it is outside the image).

    Raises
    ------
    InputError
        For a non-finite value or a radius that is not positive.
    """

    cy: float
    cx: float
    r: float
    score: float = 1.0
    touches_border: bool = False

    def __post_init__(self) -> None:
        values = (self.cy, self.cx, self.r, self.score)
        if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in values) or self.r <= 0:
            raise InputError(f"a disk needs a finite centre and score and a positive radius, not {values}")
        for name, value in zip(("cy", "cx", "r", "score"), values, strict=True):
            object.__setattr__(self, name, float(value))
        object.__setattr__(self, "touches_border", bool(self.touches_border))

    def rescaled(self, factor: int) -> "Disk":
        """The same disk in the image resampled ``factor`` times finer (for a x4 upscale, ``factor=4``).

        Each pixel becomes ``factor`` x ``factor`` pixels, so the centre of pixel ``y`` moves to
        ``factor * y + (factor - 1) / 2``.
        """
        shift = (factor - 1) / 2
        return Disk(
            self.cy * factor + shift,
            self.cx * factor + shift,
            self.r * factor,
            self.score,
            self.touches_border,
        )


def reaches_border(cy: float, cx: float, r: float, shape: Sequence[int]) -> bool:
    """Whether a disk of centre ``(cy, cx)`` and radius ``r`` crosses the border of an image of ``shape``."""
    h, w = shape[:2]
    return bool(cy - r < -0.5 or cx - r < -0.5 or cy + r > h - 0.5 or cx + r > w - 0.5)


def disk_box(disk: Disk, shape: Sequence[int], *, margin: float = 0.25) -> tuple[int, int, int, int]:
    """The square box around ``disk``, ``margin`` times its radius wider, clipped to the image.

    Parameters
    ----------
    disk : Disk
    shape : sequence of int
        Shape of the image, ``(H, W)`` or ``(H, W, C)``.
    margin : float
        Extra border around the disk, as a fraction of its radius (>= 0).

    Returns
    -------
    (y0, x0, y1, x1) : tuple of int
        Rows ``y0:y1`` and columns ``x0:x1``. Unclipped, the box is ``2 * ceil(r * (1 + margin)) + 1`` pixels
        wide, centred on the pixel nearest the disk's centre.

    Raises
    ------
    InputError
        For a negative or non-finite margin, or a disk entirely outside the image.
    """
    if not (math.isfinite(margin) and margin >= 0):
        raise InputError(f"margin must be a number >= 0, not {margin!r}")
    h, w = shape[:2]
    half = math.ceil(disk.r * (1.0 + margin))
    iy, ix = round(disk.cy), round(disk.cx)
    box = (max(0, iy - half), max(0, ix - half), min(h, iy + half + 1), min(w, ix + half + 1))
    if box[0] >= box[2] or box[1] >= box[3]:
        raise InputError(f"disk at ({disk.cy:.1f}, {disk.cx:.1f}) lies outside the {h}x{w} image")
    return box


def detect_disks(
    image: np.ndarray,
    *,
    radius_range: "Sequence[float | None] | None" = None,
    sensitivity: float = 0.5,
    max_disks: "int | None" = None,
    polarity: str = "either",
) -> list[Disk]:
    """Find microdisks in one image and measure their centres and radii.

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray
        Gray, RGB or RGBA (alpha ignored), of any integer or float type; its intensity range does not matter.
    radius_range : (float or None, float or None), optional
        Smallest and largest radius to look for, in pixels; ``None`` for a bound means ``DEFAULT_MIN_RADIUS``
        (3 px) or half the image's smaller side. Narrow it when disks are missed or other round things are
        found.
    sensitivity : float
        From 0 (only clear, complete disks) to 1 (faint or partly hidden ones too, and more false finds).
    max_disks : int, optional
        Keep at most this many disks, the best-scoring ones.
    polarity : {"either", "dark", "bright"}
        Which disks to look for: ``"dark"`` bodies (bright-rimmed microdisks under transmitted light),
        ``"bright"`` ones on a darker ground (reflected light, fluorescence, coins), or ``"either"`` (both
        searches; where they overlap, the better-scoring disk is kept).

    Returns
    -------
    list of Disk
        Best score first; empty when no disk is found. Disks that cross the image border are included, with
        ``touches_border=True``. Unless ``radius_range`` gives a minimum, disks under ``0.4`` times the
        typical radius of those found (the score-weighted median, of 3 disks or more) are left out: a few
        tiny hits among larger disks are specks, not disks.

    Raises
    ------
    InputError
        For an image that is not 2D gray/RGB(A), is too small, boolean or complex, or has NaN/Inf values;
        for a ``radius_range`` that is not ``2 <= min <= max`` (or whose minimum exceeds half the image), a
        ``sensitivity`` outside [0, 1], a ``max_disks`` below 1 or an unknown ``polarity``.
    """
    gray = _normalised_gray(image)
    r_min, r_max = _radius_bounds(radius_range, gray.shape)
    if not (isinstance(sensitivity, numbers.Real) and 0 <= sensitivity <= 1):
        raise InputError(f"sensitivity must be a number from 0 to 1, not {sensitivity!r}")
    if max_disks is not None and not (isinstance(max_disks, numbers.Integral) and max_disks >= 1):
        raise InputError(f"max_disks must be a whole number >= 1, not {max_disks!r}")
    if polarity not in POLARITIES:
        raise InputError(f"polarity must be one of {', '.join(POLARITIES)}, not {polarity!r}")
    if not gray.any():
        log.info("the image is flat: no disk in it")
        return []
    noise = _noise_level(gray)
    views = [gray, 1.0 - gray] if polarity == "either" else [1.0 - gray if polarity == "bright" else gray]
    disks = _separated(
        [disk for view in views for disk in _find(view, r_min, r_max, noise=noise, sensitivity=sensitivity)]
    )
    if radius_range is None or radius_range[0] is None:
        disks = _above_floor(disks)
    log.info("%d %s disks (radius %.3g to %.3g px)", len(disks), polarity, r_min, r_max)
    return disks[:max_disks]


def _find(gray: np.ndarray, r_min: float, r_max: float, *, noise: float, sensitivity: float) -> list[Disk]:
    """The dark-bodied disks of a normalised gray image (see the module notes), best first."""
    response_snr_min, support_min, snr_min = _thresholds(sensitivity)
    smooth = cv2.GaussianBlur(gray, (0, 0), _SMOOTH_SIGMA)
    candidates = _ring_candidates(gray, r_min, r_max, noise=noise, snr_min=response_snr_min)
    rims: list[Rim] = []
    circles = np.empty((len(candidates), 3))  # cy, cx, r of the rims found so far
    for cy, cx, r in candidates:  # strongest first: many candidates echo the rim of a disk found before
        distance = np.hypot(circles[: len(rims), 0] - cy, circles[: len(rims), 1] - cx)
        if (distance < circles[: len(rims), 2] + _ECHO_REACH * r).any():
            continue
        rim = fit_rim(smooth, cy, cx, r, min_rise=_EDGE_SNR * noise)
        if rim is None or rim.support < support_min or rim.contrast < snr_min * noise:
            continue
        distance = np.hypot(circles[: len(rims), 0] - rim.cy, circles[: len(rims), 1] - rim.cx)
        if not (distance < _DISK_SEPARATION * (circles[: len(rims), 2] + rim.r)).any():
            circles[len(rims)] = rim.cy, rim.cx, rim.r
            rims.append(rim)
    disks = []
    for rim in rims:
        radius = edge_radius(gray, rim)
        if r_min <= radius <= r_max:
            touches = reaches_border(rim.cy, rim.cx, radius, gray.shape)
            disks.append(Disk(rim.cy, rim.cx, radius, rim.support * rim.contrast, touches))
    log.debug("%d disks of %d candidates", len(disks), len(candidates))
    return disks


def _separated(disks: list[Disk]) -> list[Disk]:
    """``disks`` best first, without those that overlap a better one (a disk seen in both polarities)."""
    kept: list[Disk] = []
    for disk in sorted(disks, key=lambda d: -d.score):
        if all(math.hypot(d.cy - disk.cy, d.cx - disk.cx) >= _DISK_SEPARATION * (d.r + disk.r) for d in kept):
            kept.append(disk)
    return kept


def _above_floor(disks: list[Disk]) -> list[Disk]:
    """``disks`` without the small outliers: those under ``_FLOOR_FRACTION`` of the typical radius.

    The typical radius is the median radius of the disks weighted by their scores (the many weak, tiny false
    hits of a lenient search weigh little); it needs ``_FLOOR_POPULATION`` disks at least.
    """
    if len(disks) < _FLOOR_POPULATION:
        return disks
    radii = np.array([d.r for d in disks])
    weights = np.cumsum(np.array([d.score for d in disks])[np.argsort(radii)])
    typical = float(np.sort(radii)[np.searchsorted(weights, weights[-1] / 2)])
    floor = _FLOOR_FRACTION * typical
    kept = [d for d in disks if d.r >= floor]
    if len(kept) < len(disks):
        log.info(
            "%d disks under %.3g px left out: far smaller than the others", len(disks) - len(kept), floor
        )
    return kept


def _normalised_gray(image: np.ndarray) -> np.ndarray:
    """``image`` as float32 gray, its 0.5-99.5 percentile range mapped to [0, 1] (all zeros if flat)."""
    image = np.asarray(image)
    if image.dtype == bool or not (
        np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)
    ):
        raise InputError(f"cannot detect disks in an image of type {image.dtype}; use integers or floats")
    rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
    if image.ndim != 2 and not rgb:
        raise InputError(
            f"detection needs one 2D gray or RGB(A) image, not an array of shape {image.shape}; "
            "pick one plane of a stack"
        )
    if min(image.shape[:2]) < 2 * DEFAULT_MIN_RADIUS + 1:
        raise InputError(f"an image of shape {image.shape} is too small to hold a disk")
    gray = image[..., :3].mean(axis=-1, dtype=np.float32) if rgb else image.astype(np.float32)
    bad = np.count_nonzero(~np.isfinite(gray))
    if bad:
        raise InputError(f"the image has {bad} NaN or infinite pixel values; replace them first")
    lo, hi = np.percentile(gray, _NORMALISE_PERCENTILES)
    if hi <= lo:
        return np.zeros_like(gray)
    return (gray - np.float32(lo)) / np.float32(hi - lo)


def _radius_bounds(
    radius_range: "Sequence[float | None] | None", shape: tuple[int, int]
) -> tuple[float, float]:
    """``radius_range`` validated, its ``None`` bounds filled in and its maximum capped at half the image."""
    largest = min(shape) / 2
    if radius_range is None:
        return DEFAULT_MIN_RADIUS, largest
    usage = (
        f"radius_range must be (min, max) in pixels with {MIN_RADIUS:g} <= min <= max, not {radius_range!r}"
    )
    if isinstance(radius_range, (str, bytes)) or np.ndim(radius_range) != 1 or len(radius_range) != 2:
        raise InputError(usage)
    lo, hi = radius_range
    try:
        r_min = DEFAULT_MIN_RADIUS if lo is None else float(lo)
        r_max = largest if hi is None else float(hi)
    except (TypeError, ValueError):
        raise InputError(usage) from None
    if not (math.isfinite(r_min) and math.isfinite(r_max)) or r_min < MIN_RADIUS:
        raise InputError(usage)
    if r_min > largest:
        raise InputError(
            f"a disk of radius {r_min:g} px does not fit in a {shape[0]}x{shape[1]} image; "
            f"the minimum radius can be {largest:g} px at most"
        )
    if r_max < r_min:
        raise InputError(usage)
    return r_min, min(r_max, largest)


def _thresholds(sensitivity: float) -> tuple[float, float, float]:
    """For a sensitivity: the least signal-to-noise ratio of a candidate's ring response, support of a
    rim, and contrast of a rim over the noise.

    A disk's ring response is about its rim's contrast, and the filter averages the noise down by 3 or
    more, so a candidate is asked ``_CANDIDATE_SNR_RATIO`` times the contrast asked of its rim.
    """
    snr = 12.0 - 8.0 * sensitivity
    return _CANDIDATE_SNR_RATIO * snr, 0.9 - 0.4 * sensitivity, snr


def _noise_level(gray: np.ndarray) -> float:
    """Robust standard deviation of the pixel noise, from the residual of a 3x3 median filter."""
    residual = gray - cv2.medianBlur(gray, 3)
    return max(1.4826 * float(np.median(np.abs(residual))), _NOISE_FLOOR)


def _ring_kernels(rho: float) -> np.ndarray:
    """Matched filters of a bright ring of radius ``rho`` around a dark disk, one per quarter of the ring.

    Returns
    -------
    (4, K, K) float32 ndarray
        Kernel ``i`` gives the mean of the ring's quarter ``i`` (centred on the directions right, down, left,
        up) minus the mean of the disk inside the ring; their mean is the filter of the whole ring.
    """
    half = math.ceil(rho + 3 * _RING_SIGMA)
    dy, dx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    q = np.hypot(dy, dx)
    ring = np.exp(-0.5 * ((q - rho) / _RING_SIGMA) ** 2)
    inner = np.clip(rho - 2.5 * _RING_SIGMA + 0.5 - q, 0.0, 1.0)
    quarter = np.round(np.arctan2(dy, dx) / (np.pi / 2)).astype(int) % 4  # as in _QUARTER_DIRECTIONS
    rings = np.stack([np.where(quarter == i, ring, 0.0) for i in range(4)])
    return (rings / rings.sum(axis=(1, 2), keepdims=True) - inner / inner.sum()).astype(np.float32)


def _ring_candidates(
    gray: np.ndarray, r_min: float, r_max: float, *, noise: float, snr_min: float
) -> np.ndarray:
    """Local maxima of the ring-filter responses over position and radius, strongest response first.

    A maximum is a candidate when its response is ``snr_min`` times its noise (the pixel ``noise``, averaged
    down by the pyramid and the filter) and every quarter of the ring responds at least ``_ISOTROPY`` times
    the whole ring: this rejects the many maxima where a ring of the filter touches the rim of a disk from
    outside. Candidates are ordered by response (the ring's contrast), which compares across scales.

    Returns
    -------
    (N, 3) ndarray
        ``cy, cx, r`` of each candidate; of candidates of alike radii (``_CANDIDATE_SCALE_RATIO``) closer than
        ``_CANDIDATE_SEPARATION`` times the larger radius, only the strongest.
    """
    n_steps = math.ceil(math.log2(r_max / r_min) * _STEPS_PER_OCTAVE)
    radii = np.geomspace(r_min, r_max, n_steps + 1)
    octaves = np.maximum(0, np.floor(np.log2(radii / _OCTAVE_BASE))).astype(int)
    found = []
    level = gray
    for octave in range(octaves.max() + 1):
        if octave:  # halve the level, dropping an odd last row/column so pixels map exactly
            h, w = level.shape[0] // 2, level.shape[1] // 2
            level = cv2.resize(level[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_AREA)
        rhos = radii[octaves == octave] / 2**octave
        if rhos.size == 0:
            continue
        kernels = [_ring_kernels(rho) for rho in rhos]
        responses = np.stack(
            [cv2.filter2D(level, -1, k.mean(axis=0), borderType=cv2.BORDER_REFLECT) for k in kernels]
        )
        level_noise = noise / 2**octave  # white noise averaged over 2**octave x 2**octave pixels
        snr = (
            responses
            / np.array([level_noise * np.linalg.norm(k.mean(axis=0)) for k in kernels])[:, None, None]
        )
        best = snr.max(axis=0)
        window = np.ones((2 * max(1, int(rhos[0] / 2)) + 1,) * 2, np.uint8)
        ys, xs = np.nonzero((best >= snr_min) & (best >= cv2.dilate(best, window)))
        which = snr[:, ys, xs].argmax(axis=0)
        keep = _isotropic(level, kernels, rhos, ys, xs, which)
        ys, xs, which = ys[keep], xs[keep], which[keep]
        scale, shift = 2**octave, (2**octave - 1) / 2
        found.append(
            np.column_stack(
                [ys * scale + shift, xs * scale + shift, rhos[which] * scale, responses[which, ys, xs]]
            )
        )
    found = np.concatenate(found)
    found = found[np.argsort(-found[:, 3], kind="stable")]
    kept = np.empty((len(found), 3))
    n = 0
    for cy, cx, r, _ in found:
        near = np.hypot(kept[:n, 0] - cy, kept[:n, 1] - cx) < _CANDIDATE_SEPARATION * np.maximum(
            kept[:n, 2], r
        )
        alike = np.abs(np.log(kept[:n, 2] / r)) < _CANDIDATE_SCALE_RATIO
        if not (near & alike).any():
            kept[n] = cy, cx, r
            n += 1
    return kept[:n]


def _isotropic(
    level: np.ndarray,
    kernels: list[np.ndarray],
    rhos: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    which: np.ndarray,
) -> np.ndarray:
    """Whether every quarter of ring ``which`` at ``(ys, xs)`` responds like the whole ring.

    Quarters whose outermost point falls outside the image are not asked: the reflected image there does
    not continue the disk.
    """
    pad = kernels[-1].shape[-1] // 2
    padded = cv2.copyMakeBorder(level, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    keep = np.zeros(ys.size, bool)
    for k, quarters in enumerate(kernels):
        at = np.flatnonzero(which == k)
        size = quarters.shape[-1]
        corner = pad - size // 2
        windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size))
        responses = np.einsum("nij,qij->nq", windows[ys[at] + corner, xs[at] + corner], quarters)
        tip_y = ys[at, None] + rhos[k] * _QUARTER_DIRECTIONS[:, 0]
        tip_x = xs[at, None] + rhos[k] * _QUARTER_DIRECTIONS[:, 1]
        inside = (tip_y >= 0) & (tip_y <= level.shape[0] - 1) & (tip_x >= 0) & (tip_x <= level.shape[1] - 1)
        whole = responses.mean(axis=1)
        weakest = np.where(inside, responses, np.inf).min(axis=1)
        keep[at] = (whole > 0) & (weakest >= _ISOTROPY * whole)
    return keep
