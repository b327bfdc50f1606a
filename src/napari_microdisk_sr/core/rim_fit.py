"""The rim fit of :mod:`.detect`: a circle fitted to a disk's edge, and the radius of the body's edge.

Along rays from a candidate centre, the body's edge is the steepest rise from the dark body to the bright
rim; a circle fitted to these edge points (algebraic least squares, refitted without outliers) gives the
centre (:func:`fit_rim`). The radius comes from the mean radial profile along the rays that lie on the
circle: a blurred step with a rim on it, fitted to the profile (:func:`edge_radius`).

Coordinates are pixel centres, as in :mod:`.detect`.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, special

__all__ = ["Rim", "edge_radius", "fit_rim"]

_ANGLES = np.linspace(0.0, 2 * np.pi, 64, endpoint=False)  # the rays
_RAY_SPAN = (0.5, 1.4)  # along each ray, the edge is looked for between these fractions of the radius
_RAY_SAMPLES = 33
_RISE_SPAN = 1.0  # px: an edge's rise is measured this far on either side of it
_FIRST_TOLERANCE_FRACTION = 0.2  # first fit: edge points within this fraction of their median distance
_RIM_TOLERANCE = 0.5  # px: then a point is on the circle within this distance ...
_RIM_TOLERANCE_FRACTION = 0.06  # ... or this fraction of the radius, whichever is larger
_FIT_ROUNDS = 2
_MIN_RIM_POINTS = 8
_BODY_SPAN = 0.6  # the body's level is measured inside this fraction of the radius
# Radius from the radial profile
_PROFILE_REACH = 3.0  # px: the profile spans the edge circle's radius +- this ...
_PROFILE_REACH_FRACTION = 0.35  # ... or this fraction of it, whichever is larger
_PROFILE_STEP = 0.25  # px
_EDGE_REACH = 1.6  # px: edge radii are tried within this of the edge circle's radius ...
_EDGE_REACH_FRACTION = 0.08  # ... or this fraction of it, whichever is larger ...
_EDGE_STEPS = 17  # ... at this many radii
_EDGE_WIDTHS = np.array([0.4, 0.6, 0.8, 1.1, 1.5])  # px: blur of the step
_RIM_WIDTH_RATIOS = np.array([1.0, 1.4, 2.0])  # the rim's width relative to the step's blur


@dataclass(frozen=True)
class Rim:
    """A circle fitted to a disk's edge points, and how well they describe a disk."""

    cy: float
    cx: float
    r: float  # of the edge circle (inside the true edge when the optics blur it)
    support: float  # fraction of the rays in the image whose edge lies on the circle
    contrast: float  # the rim's level over the body's, in the normalised image
    angles: np.ndarray  # of the rays whose edge lies on the circle


def fit_rim(smooth: np.ndarray, cy: float, cx: float, r: float, *, min_rise: float) -> "Rim | None":
    """Fit a circle to the edge of the disk near a candidate; None when no disk is there.

    Along each ray from the centre the edge is the steepest rise of the smoothed image (dark body to bright
    rim), where it rises by ``min_rise`` at least. The circle is refitted from its own centre and radius.
    """
    h, w = smooth.shape
    fractions = np.linspace(*_RAY_SPAN, _RAY_SAMPLES)
    for _ in range(_FIT_ROUNDS):
        rho = r * fractions
        ys = cy + np.sin(_ANGLES)[:, None] * rho
        xs = cx + np.cos(_ANGLES)[:, None] * rho
        inside = ((ys >= 0) & (ys <= h - 1) & (xs >= 0) & (xs <= w - 1)).all(axis=1)  # rays in the image
        if inside.sum() < _MIN_RIM_POINTS:
            return None
        profiles = ndimage.map_coordinates(smooth, [ys[inside], xs[inside]], order=1)
        edge, rise = _ray_edges(profiles, rho)
        found = rise >= min_rise
        if found.sum() < _MIN_RIM_POINTS:
            return None
        angles, edge = _ANGLES[inside][found], edge[found]
        py, px = cy + np.sin(angles) * edge, cx + np.cos(angles) * edge
        fit = _robust_circle(py, px, edge, tolerance=max(_RIM_TOLERANCE, _RIM_TOLERANCE_FRACTION * r))
        if fit is None:
            return None
        (cy, cx, r), on_circle = fit
        if not (-0.5 <= cy < h - 0.5 and -0.5 <= cx < w - 0.5):  # a circle centred off the image
            return None
    rim_level = float(np.median(profiles[found][on_circle].max(axis=1)))
    return Rim(
        cy,
        cx,
        r,
        support=on_circle.sum() / inside.sum(),
        contrast=rim_level - _body_level(smooth, cy, cx, r),
        angles=angles[on_circle],
    )


def _ray_edges(profiles: np.ndarray, rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel radius of each profile's steepest rise, and how much the profile rises across it.

    The rise is the difference of the profile ``_RISE_SPAN`` pixels after and before the edge; it is 0 where
    the steepest rise is at either end of the ray (no edge on it).
    """
    slope = np.diff(profiles, axis=1)
    k = np.clip(slope.argmax(axis=1), 1, slope.shape[1] - 2)
    rows = np.arange(slope.shape[0])
    before, at, after = (slope[rows, k + d] for d in (-1, 0, 1))
    curvature = before - 2 * at + after
    peaked = (at > 0) & (at >= before) & (at >= after) & (curvature < 0)
    offset = np.where(peaked, 0.5 * (before - after) / np.where(peaked, curvature, -1.0), 0.0)
    index = k + 0.5 + offset  # the slope between samples k and k + 1 sits at k + 0.5
    step = rho[1] - rho[0]
    span = _RISE_SPAN / step
    rise = _interpolate_rows(profiles, index + span) - _interpolate_rows(profiles, index - span)
    return rho[0] + index * step, np.where(peaked, rise, 0.0)


def _interpolate_rows(profiles: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Each row of ``profiles`` linearly interpolated at its own fractional ``index`` (clamped to the row)."""
    index = np.clip(index, 0, profiles.shape[1] - 1)
    low = np.minimum(index.astype(int), profiles.shape[1] - 2)
    frac = index - low
    rows = np.arange(profiles.shape[0])
    return profiles[rows, low] * (1 - frac) + profiles[rows, low + 1] * frac


def _robust_circle(
    py: np.ndarray, px: np.ndarray, distance: np.ndarray, *, tolerance: float
) -> "tuple[tuple[float, float, float], np.ndarray] | None":
    """Algebraic (Kasa) circle through the edge points near it, and which points those are; None if too few.

    ``distance`` is each point's distance to the provisional centre. The first fit uses the points within
    ``_FIRST_TOLERANCE_FRACTION`` of their median distance; each later one the points within ``tolerance`` of
    the previous circle.
    """
    median = np.median(distance)
    keep = np.abs(distance - median) <= max(tolerance, _FIRST_TOLERANCE_FRACTION * median)
    for _ in range(_FIT_ROUNDS):
        if keep.sum() < _MIN_RIM_POINTS:
            return None
        design = np.column_stack([py[keep], px[keep], np.ones(keep.sum())])
        (sy, sx, c), *_ = np.linalg.lstsq(design, py[keep] ** 2 + px[keep] ** 2, rcond=None)
        cy, cx = sy / 2, sx / 2
        r2 = c + cy**2 + cx**2
        if r2 <= 0:
            return None
        r = math.sqrt(r2)
        keep = np.abs(np.hypot(py - cy, px - cx) - r) <= tolerance
    return (float(cy), float(cx), r), keep


def _body_level(smooth: np.ndarray, cy: float, cx: float, r: float) -> float:
    """Median level of the disk's body, within ``_BODY_SPAN`` of its radius (and the image)."""
    reach = max(_BODY_SPAN * r, 1.0)
    y0, y1 = max(0, math.ceil(cy - reach)), min(smooth.shape[0], math.floor(cy + reach) + 1)
    x0, x1 = max(0, math.ceil(cx - reach)), min(smooth.shape[1], math.floor(cx + reach) + 1)
    yy, xx = np.ogrid[y0:y1, x0:x1]
    return float(np.median(smooth[y0:y1, x0:x1][(yy - cy) ** 2 + (xx - cx) ** 2 <= reach**2]))


def edge_radius(gray: np.ndarray, rim: Rim) -> float:
    """Radius of the body's edge: a blurred step with a rim on it, fitted to the mean radial profile.

    Model: ``body + (substrate - body) * Phi((rho - R) / s) + peak * exp(-(rho - R)**2 / (2 q**2))`` with
    ``q = s * ratio``. For each ``(R, s, ratio)`` of a grid the three levels are a linear least-squares fit;
    the best ``R`` is refined to a fraction of the grid step by a parabola through its neighbours' errors.
    """
    reach = max(_PROFILE_REACH, _PROFILE_REACH_FRACTION * rim.r)
    rho = np.arange(max(0.0, rim.r - reach), rim.r + reach, _PROFILE_STEP)
    ys = rim.cy + np.sin(rim.angles)[:, None] * rho
    xs = rim.cx + np.cos(rim.angles)[:, None] * rho
    profile = ndimage.map_coordinates(gray, [ys, xs], order=1, mode="nearest").mean(axis=0)
    radii = rim.r + max(_EDGE_REACH, _EDGE_REACH_FRACTION * rim.r) * np.linspace(-1.0, 1.0, _EDGE_STEPS)
    u = rho - radii[:, None, None, None]  # (R, s, ratio, rho)
    step = special.ndtr(u / _EDGE_WIDTHS[:, None, None])
    peak = np.exp(-0.5 * (u / (_EDGE_WIDTHS[:, None] * _RIM_WIDTH_RATIOS)[..., None]) ** 2)
    design = np.stack(np.broadcast_arrays(1.0 - step, step, peak), axis=-1)  # (R, s, ratio, rho, 3)
    normal = np.einsum("...ni,...nj->...ij", design, design) + 1e-9 * np.eye(3)
    levels = np.linalg.solve(normal, np.einsum("...ni,n->...i", design, profile)[..., None])[..., 0]
    error = ((np.einsum("...ni,...i->...n", design, levels) - profile) ** 2).sum(axis=-1)
    per_radius = error.reshape(radii.size, -1).min(axis=1)
    k = int(np.clip(per_radius.argmin(), 1, radii.size - 2))
    before, at, after = per_radius[k - 1 : k + 2]
    curvature = before - 2 * at + after
    offset = np.clip(0.5 * (before - after) / curvature, -1.0, 1.0) if curvature > 0 else 0.0
    return float(radii[k] + offset * (radii[1] - radii[0]))
