"""Measurements per microdisk: centre, radius, edge width and local PSNR/SSIM, on a reference and each output.

A microscopist judges an upscaling method by the sizes and edges it lets them measure. For each disk of a
reference image, and on every method's output of the same field, :func:`measure_disk` finds:

- the **centre**, sub-pixel: along 48 rays from a first guess, where the profile first crosses halfway from
  its lowest to its highest level (a marker that sits at the same distance from the true edge on every ray,
  so the circle ``r(theta) = R + dy sin(theta) + dx cos(theta)`` fitted to them gives the centre's shift);
- the **radius**, sub-pixel, from the mean radial profile around that centre: a blurred step (body to
  substrate) with a rim on it, ``body + (substrate - body) Phi((rho - R) / s) + peak exp(-(rho - R)^2 /
  2 q^2)``, fitted by least squares (the levels linearly, ``R``, ``s``, ``q`` by
  :func:`scipy.optimize.least_squares`). The same edge convention as the detector's (:class:`.detect.Disk`):
  the middle of the rim. Why not where the profile crosses the midpoint of body and substrate: the bright
  rim on a microdisk's edge pulls that crossing inwards, by an amount that depends on the blur (on the
  synthetic scenes, 2 HR pixels on the truth and 3 on its bicubic upscale), so an output's blur would show
  as a radius error;
- the **edge width**, the 10-90 % rise of the fitted step, ``2 * 1.2816 * s``;
- **PSNR and SSIM** of the output against the reference inside the disk's box (:func:`.detect.disk_box`).

:class:`ReferenceDisks` holds the disks of one image measured on its reference, and gives one row per disk
and method (:data:`DISK_COLUMNS`). All lengths are in pixels of the high-resolution grid; for a
low-resolution reference (no HR image) its measurements are scaled x4 onto that grid, and its rows are
those of the method ``"LR"``. Disks that cross the image border are left out (part of their edge is missing).
"""

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage, optimize, special

from .detect import Disk, detect_disks, disk_box
from .errors import InputError
from .quality import psnr, ssim

LR_METHOD = "LR"
"""The method name of the rows measured on the low-resolution input itself (LR-only tables)."""
DISK_COLUMNS = (
    "image",
    "method",
    "disk",
    "cy",
    "cx",
    "r_ref",
    "r",
    "r_error",
    "centre_error",
    "edge_width_ref",
    "edge_width",
    "edge_width_error",
    "psnr",
    "ssim",
)
"""The columns of a per-disk table: centre, radius and edge width (10-90 %) in HR pixels; PSNR in dB."""

_RAYS = 48
_MIN_RAYS = 12  # rays that must find the edge for a centre fit
_CENTRE_ROUNDS = 2
_REACH = 4.0  # px: the profile spans the radius +- this ...
_REACH_FRACTION = 0.4  # ... or this fraction of the radius, whichever is larger
_STEP = 0.25  # px between profile samples
_TEN_NINETY = 2.0 * float(special.ndtri(0.9))  # 10-90 % width of a Gaussian-blurred step, in sigmas


@dataclass(frozen=True)
class DiskMeasure:
    """One disk measured in one image.

    Attributes
    ----------
    cy, cx, r : float
        Centre and radius of the edge, in pixels of the image measured.
    edge_width : float
        10-90 % width of the edge's rise, in pixels.
    """

    cy: float
    cx: float
    r: float
    edge_width: float

    def rescaled(self, factor: int) -> "DiskMeasure":
        """The same measurement on a grid ``factor`` times finer (see :meth:`.detect.Disk.rescaled`)."""
        shift = (factor - 1) / 2
        return DiskMeasure(
            self.cy * factor + shift, self.cx * factor + shift, self.r * factor, self.edge_width * factor
        )


def measure_disk(gray: np.ndarray, guess: Disk) -> "DiskMeasure | None":
    """Measure a disk's centre, radius and edge width near a first guess (see the module notes).

    Parameters
    ----------
    gray : (H, W) float ndarray
        The image, any intensity range; dark or bright bodies alike.
    guess : Disk
        Where the disk roughly is: centre within a few pixels, radius within about a third.

    Returns
    -------
    DiskMeasure or None
        None when the edge is not found (too few rays inside the image or crossing an edge).
    """
    gray = np.asarray(gray, dtype=np.float64)
    cy, cx, r = guess.cy, guess.cx, guess.r
    reach = max(_REACH, _REACH_FRACTION * r)
    rho = np.arange(max(0.0, r - reach), r + reach + _STEP / 2, _STEP)
    for _ in range(_CENTRE_ROUNDS):
        angles, profiles = _ray_profiles(gray, cy, cx, rho)
        markers = _halfway_crossings(profiles, rho)
        found = np.isfinite(markers)
        if found.sum() < _MIN_RAYS:
            return None
        design = np.column_stack([np.ones(found.sum()), np.sin(angles[found]), np.cos(angles[found])])
        (halfway, dy, dx), *_ = np.linalg.lstsq(design, markers[found], rcond=None)
        cy, cx = cy + dy, cx + dx
    angles, profiles = _ray_profiles(gray, cy, cx, rho)
    if len(angles) < _MIN_RAYS:
        return None
    fit = _fit_edge(profiles.mean(axis=0), rho, (r, halfway))
    if fit is None:
        return None
    radius, sigma = fit
    return DiskMeasure(float(cy), float(cx), radius, _TEN_NINETY * sigma)


def _ray_profiles(gray: np.ndarray, cy: float, cx: float, rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The angles of the rays that stay in the image, and the image along each (rows), interpolated."""
    angles = np.linspace(0.0, 2 * np.pi, _RAYS, endpoint=False)
    ys = cy + np.sin(angles)[:, None] * rho
    xs = cx + np.cos(angles)[:, None] * rho
    h, w = gray.shape
    inside = ((ys >= 0) & (xs >= 0) & (ys <= h - 1) & (xs <= w - 1)).all(axis=1)
    return angles[inside], ndimage.map_coordinates(gray, [ys[inside], xs[inside]], order=1).reshape(
        -1, rho.size
    )


def _halfway_crossings(profiles: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Per ray, the first radius where the profile crosses halfway between its extremes; NaN if it does not.

    From the inside out, towards whichever extreme comes later (the rim of a dark body, the dark ground
    around a bright one).
    """
    low, high = profiles.min(axis=1), profiles.max(axis=1)
    rising = profiles.argmax(axis=1) > profiles.argmin(axis=1)
    signed = np.where(rising[:, None], profiles, -profiles)
    level = np.where(rising, (low + high) / 2, -(low + high) / 2)[:, None]
    above = signed >= level
    start = np.where(rising, profiles.argmin(axis=1), profiles.argmax(axis=1))
    after = np.arange(profiles.shape[1])[None, :] > start[:, None]
    crossing = above & after
    k = crossing.argmax(axis=1)
    ok = crossing.any(axis=1) & (k > 0) & (high > low)
    rows = np.arange(profiles.shape[0])
    k = np.where(ok, k, 1)
    before, at = signed[rows, k - 1], signed[rows, k]
    frac = np.where(at > before, (level[:, 0] - before) / np.where(at > before, at - before, 1.0), 0.0)
    step = rho[1] - rho[0]
    return np.where(ok, rho[0] + (k - 1 + np.clip(frac, 0.0, 1.0)) * step, np.nan)


def _edge_model(params: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """The ``(n, 3)`` basis (body, substrate, rim) of the edge model at radius, step and rim widths."""
    radius, sigma, rim = params
    step = special.ndtr((rho - radius) / sigma)
    return np.column_stack([1.0 - step, step, np.exp(-0.5 * ((rho - radius) / rim) ** 2)])


def _fit_edge(profile: np.ndarray, rho: np.ndarray, guesses: Sequence[float]) -> "tuple[float, float] | None":
    """Radius and step sigma of the edge model fitted to a mean radial profile; None if the fit fails.

    The fit has local minima: it starts from each guessed radius with sharp to blurred edges, and keeps the
    best.
    """
    span = float(rho[-1] - rho[0])

    def residual(params: np.ndarray) -> np.ndarray:
        basis = _edge_model(params, rho)
        levels, *_ = np.linalg.lstsq(basis, profile, rcond=None)
        return basis @ levels - profile

    best = None
    for guess, sigma in itertools.product(guesses, (0.5, 1.5, 4.0)):
        start = np.array([guess, sigma, 1.5 * sigma])
        bounds = ([rho[0], 0.05, 0.1], [rho[-1], span / 2, span / 2])
        fit = optimize.least_squares(
            residual, np.clip(start, *bounds), bounds=bounds, x_scale=[1.0, 0.5, 0.5]
        )
        if fit.success and (best is None or fit.cost < best.cost):
            best = fit
    if best is None:
        return None
    radius, sigma, _rim = best.x
    return float(radius), float(sigma)


class ReferenceDisks:
    """The disks of one image, measured on its reference, to compare each method's output with.

    Parameters
    ----------
    reference : (H, W) or (H, W, C) float ndarray
        The reference in ``[0, 1]`` units: the HR truth, or the LR input when there is none (``scale=4``).
    disks : sequence of Disk, optional
        Where the disks are, in the reference's pixels (a user's shapes, say); by default
        :func:`.detect.detect_disks` finds them.
    scale : int
        1 for an HR reference; the upscaling factor for an LR one (its measurements are scaled onto the
        outputs' grid, and :meth:`reference_rows` gives its own rows).

    Attributes
    ----------
    measured : list of (Disk, DiskMeasure)
        The disks that could be measured on the reference: the guess on the outputs' grid, and its
        measurement there.
    """

    def __init__(
        self, reference: np.ndarray, *, disks: "Sequence[Disk] | None" = None, scale: int = 1
    ) -> None:
        self._truth = np.asarray(reference, dtype=np.float64)
        self._reference = _gray(self._truth)
        self._scale = int(scale)
        if disks is None:
            disks = detect_disks(self._reference)
        self.measured: list[tuple[Disk, DiskMeasure]] = []
        for disk in disks:
            if disk.touches_border:
                continue
            measure = measure_disk(self._reference, disk)
            if measure is not None:
                on_grid = measure.rescaled(self._scale)
                guess = Disk(on_grid.cy, on_grid.cx, on_grid.r)
                self.measured.append((guess, on_grid))

    def rows(self, image: str, method: str, output: np.ndarray) -> list[dict[str, Any]]:
        """One row per disk (:data:`DISK_COLUMNS`) for ``method``'s ``output`` (``[0, 1]`` units).

        A disk whose edge is not found in the output has empty measurements. PSNR and SSIM are empty for
        an LR reference (there is no truth to score against).
        """
        gray = _gray(output)
        expected = tuple(n * self._scale for n in self._reference.shape)
        if gray.shape != expected:
            raise InputError(
                f"{method}'s output is {gray.shape[:2]}, expected {expected} to measure its disks"
            )
        truth = self._truth if self._scale == 1 else None
        rows = []
        for k, (guess, ref) in enumerate(self.measured, start=1):
            measure = measure_disk(gray, guess)
            rows.append(_row(image, method, k, ref, measure, _local_scores(truth, output, guess)))
        return rows

    def reference_rows(self, image: str) -> list[dict[str, Any]]:
        """The rows of the LR reference itself (method :data:`LR_METHOD`); none for an HR reference."""
        if self._scale == 1:
            return []
        return [
            _row(image, LR_METHOD, k, ref, ref, (None, None)) for k, (_, ref) in enumerate(self.measured, 1)
        ]


def _local_scores(
    truth: "np.ndarray | None", output: np.ndarray, disk: Disk
) -> "tuple[float | None, float | None]":
    """PSNR and SSIM of ``output`` against ``truth`` in the disk's box (None without a truth)."""

    if truth is None:
        return None, None
    y0, x0, y1, x1 = disk_box(disk, truth.shape)
    ref, out = truth[y0:y1, x0:x1], np.asarray(output)[y0:y1, x0:x1]
    score = psnr(ref, out, data_range=1.0)
    return score, ssim(ref, out, data_range=1.0) if min(y1 - y0, x1 - x0) >= 11 else None


def _row(
    image: str,
    method: str,
    k: int,
    ref: DiskMeasure,
    measure: "DiskMeasure | None",
    scores: "tuple[float | None, float | None]",
) -> dict[str, Any]:
    row: dict[str, Any] = {"image": image, "method": method, "disk": k, "r_ref": ref.r}
    row["edge_width_ref"] = ref.edge_width
    row["psnr"], row["ssim"] = scores
    if measure is None:
        return row | dict.fromkeys(
            ("cy", "cx", "r", "r_error", "centre_error", "edge_width", "edge_width_error")
        )
    return row | {
        "cy": measure.cy,
        "cx": measure.cx,
        "r": measure.r,
        "r_error": measure.r - ref.r,
        "centre_error": math.hypot(measure.cy - ref.cy, measure.cx - ref.cx),
        "edge_width": measure.edge_width,
        "edge_width_error": measure.edge_width - ref.edge_width,
    }


def _gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    return image[..., :3].mean(axis=-1) if image.ndim == 3 else image


def summarize(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per method, in the order of the rows: disks measured, median |r_error|, median edge-width error.

    Returns
    -------
    list of dict
        Keys ``method``, ``disks`` (measured / in the table), ``median_abs_r_error``,
        ``median_edge_width_error`` (HR px; None when no disk was measured).
    """
    methods = list(dict.fromkeys(row["method"] for row in rows))
    summary = []
    for method in methods:
        mine = [row for row in rows if row["method"] == method]
        found = [row for row in mine if row["r"] is not None]
        summary.append(
            {
                "method": method,
                "disks": f"{len(found)}/{len(mine)}",
                "median_abs_r_error": _median([abs(row["r_error"]) for row in found]),
                "median_edge_width_error": _median([row["edge_width_error"] for row in found]),
            }
        )
    return summary


def _median(values: Sequence[float]) -> "float | None":
    return float(np.median(values)) if values else None
