"""Cross-magnification pairs: find where a high-magnification image lies in a low-magnification one, and
resample it onto exactly the x4 grid of their overlap.

The fit is a similarity (scale, rotation, shift). It starts from the nominal scale (HR pixels per LR pixel,
2.5 for 4X -> 10X on one camera), which real objectives miss by 1-2 %:

1. a coarse search over the whole LR: the HR, smoothed and brought to the LR's scale at a few rotations and
   scales around the nominal ones, is matched by normalised cross-correlation (OpenCV ``matchTemplate``,
   ``TM_CCOEFF_NORMED``);
2. a sub-pixel refinement of scale, rotation and shift from that start that maximises the normalised
   cross-correlation of the LR with the HR sampled at its pixels (Powell's method, ``scipy.optimize``).

Both steps maximise normalised correlations, so a different gain, offset or exposure of the two cameras does
not matter. The fit is judged by the normalised cross-correlation (NCC) of the LR crop with the registered HR
binned back to the LR's pixels; a pair that does not overlap, or fits worse than ``min_ncc``, is refused.

Coordinates: pixel ``i`` has its centre at ``i`` (rows ``y``, columns ``x``). :class:`Similarity` maps an HR
position to the LR: ``lr = shift + R(rotation) @ hr / scale``. On the x4 grid of the LR box ``(y0, x0, y1,
x1)``, pixel ``(i, j)`` has its centre at LR ``(y0 + (i + 0.5) / 4 - 0.5, x0 + (j + 0.5) / 4 - 0.5)``, as in
an image upscaled x4 (:func:`~.layers.upscaled_geometry`).
"""

import hashlib
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import optimize

from . import io
from .errors import InputError, OutputError
from .images import image_layout, validate_image

log = logging.getLogger(__name__)

GRID = 4
"""The resolution ratio of the registered pair: the HR is resampled onto the LR's x4 grid."""
MIN_NCC = 0.6
"""The lowest normalised cross-correlation of a fit that is accepted by default."""
MIN_OVERLAP = 8
"""The smallest overlap accepted, in LR pixels along each side."""
MAX_SCALE_ERROR = 0.1
"""How far (as a fraction) the scale found may be from the nominal one."""

_COARSE_SCALES = (0.98, 1.0, 1.02)  # objectives miss their label by 1-2 %
_COARSE_STEP_DEG = 1.0
_MIN_COARSE_NCC = 0.3  # below: the HR is nowhere in the LR
_SMOOTH_LR = 1.0  # Gaussian sigma in LR pixels, against noise, on both sides of every comparison
_TEMPLATE_FILL = 0.9  # the template's share of the HR (and at most of the LR), so that it stays inside both
_PIXEL_FOOTPRINT = 0.4  # an LR pixel's blur of the HR, in LR pixels (its area, std 0.29, and some optics)

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Similarity:
    """Where the HR lies in the LR: ``lr = shift + R(rotation) @ hr / scale`` in ``(y, x)`` pixel centres.

    Attributes
    ----------
    scale : float
        HR pixels per LR pixel.
    rotation_deg : float
        The angle of the HR's axes in the LR, in degrees, positive from the x axis towards the y axis
        (clockwise on screen).
    shift : (float, float)
        The LR position ``(y, x)`` of the centre of HR pixel ``(0, 0)``.
    """

    scale: float
    rotation_deg: float
    shift: tuple[float, float]

    def hr_to_lr(self) -> np.ndarray:
        """The ``(2, 3)`` affine matrix from HR to LR positions in OpenCV's ``(x, y)`` order."""
        return np.hstack(
            [rotation_matrix(self.rotation_deg) / self.scale, [[self.shift[1]], [self.shift[0]]]]
        )

    def lr_to_hr(self) -> np.ndarray:
        """The ``(2, 3)`` affine matrix from LR to HR positions in OpenCV's ``(x, y)`` order."""
        return cv2.invertAffineTransform(self.hr_to_lr())


@dataclass(frozen=True, eq=False)
class Registration:
    """A registered pair.

    Attributes
    ----------
    lr : ndarray
        The LR cropped to ``lr_box`` (its dtype, leading axes and channels kept).
    hr : ndarray
        The HR resampled onto the x4 grid of ``lr``: planes ``GRID`` times ``lr``'s in height and width.
    transform : Similarity
        The fit, in the coordinates of the whole LR and HR images.
    nominal_scale : float
        The scale the fit started from.
    lr_box : (y0, x0, y1, x1) tuple of int
        The overlap in the LR's pixels.
    ncc : float
        Normalised cross-correlation of ``lr`` with ``hr`` binned back to the LR's pixels (first plane,
        gray; both smoothed by a Gaussian of one LR pixel, so that noise weighs less than misfit): 1 is a
        perfect fit.
    """

    lr: np.ndarray
    hr: np.ndarray
    transform: Similarity
    nominal_scale: float
    lr_box: Box
    ncc: float

    def to_json(self) -> dict[str, Any]:
        """What the fit found, for ``<stem>_registration.json``."""
        t = self.transform
        return {
            "scale": t.scale,
            "nominal_scale": self.nominal_scale,
            "scale_vs_nominal": t.scale / self.nominal_scale,
            "rotation_deg": t.rotation_deg,
            "shift_yx": list(t.shift),
            "shift_means": "LR (y, x) of HR pixel (0, 0)'s centre; lr = shift + R(rotation) @ hr / scale",
            "lr_box": list(self.lr_box),
            "lr_box_means": "(y0, x0, y1, x1) in LR pixels; the HR output is the x4 grid of this box",
            "ncc": self.ncc,
            "grid": GRID,
        }


@dataclass(frozen=True)
class RegisteredFiles:
    """The files written by :func:`register_files` and the registration they hold."""

    lr: Path
    hr: Path
    json: Path
    registration: Registration


def nominal_scale(lr_pixel: "io.PixelSize | None", hr_pixel: "io.PixelSize | None") -> float:
    """HR pixels per LR pixel from the two images' pixel sizes.

    Raises
    ------
    InputError
        If either pixel size is unknown or they are in different units.
    """
    if lr_pixel is None or hr_pixel is None:
        missing = " and ".join(n for n, p in (("LR", lr_pixel), ("HR", hr_pixel)) if p is None)
        raise InputError(
            f"the {missing} image has no pixel size, so the scale is unknown; give it (HR pixels per LR "
            "pixel, e.g. --scale 2.5 for 4X -> 10X on one camera)"
        )
    if lr_pixel.unit != hr_pixel.unit:
        raise InputError(
            f"the pixel sizes are in {lr_pixel.unit or 'no unit'} (LR) and {hr_pixel.unit or 'no unit'} "
            "(HR); give the scale (HR pixels per LR pixel) instead"
        )
    return (lr_pixel.y / hr_pixel.y + lr_pixel.x / hr_pixel.x) / 2


def register(
    lr: np.ndarray,
    hr: np.ndarray,
    *,
    scale: float,
    min_ncc: float = MIN_NCC,
    max_rotation_deg: float = 5.0,
    rgb: "bool | None" = None,
) -> Registration:
    """Fit where ``hr`` lies in ``lr`` and resample it onto the x4 grid of their overlap.

    Parameters
    ----------
    lr, hr : (..., H, W) or (..., H, W, C) ndarray
        The low- and high-magnification images of one field, with the same leading axes and channels. The
        fit uses the first plane (gray: the mean of the colour channels); every plane is resampled.
    scale : float
        The nominal HR pixels per LR pixel (refined by the fit).
    min_ncc : float
        The lowest normalised cross-correlation accepted.
    max_rotation_deg : float
        The largest rotation searched, either way.
    rgb : bool, optional
        Whether the last axis holds colour channels (see :func:`~.images.image_layout`).

    Returns
    -------
    Registration

    Raises
    ------
    InputError
        For unusable images or scale, images that do not overlap, or a fit worse than ``min_ncc``.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise InputError(f"the scale is HR pixels per LR pixel, a positive number, not {scale!r}")
    lr, hr = np.asarray(lr), np.asarray(hr)
    for image in (lr, hr):
        validate_image(image)
    lr_layout, hr_layout = image_layout(lr.shape, rgb=rgb), image_layout(hr.shape, rgb=rgb)
    if (lr_layout.leading, lr_layout.channels) != (hr_layout.leading, hr_layout.channels):
        raise InputError(
            f"LR {lr.shape} and HR {hr.shape} differ in planes or channels; give images of one kind"
        )
    if lr.dtype != hr.dtype:
        raise InputError(f"LR is {lr.dtype} but HR is {hr.dtype}; give both in one dtype")
    lr_gray, hr_gray = _gray(lr, lr_layout.channels), _gray(hr, hr_layout.channels)
    start, coarse_ncc = _coarse_fit(lr_gray, hr_gray, scale, max_rotation_deg)
    if coarse_ncc < _MIN_COARSE_NCC:
        raise InputError(
            f"the HR image was not found in the LR image (best normalised correlation {coarse_ncc:.2f}); "
            "check that they show the same field and the scale"
        )
    transform = _refine(lr_gray, hr_gray, start)
    if abs(transform.scale / scale - 1) > MAX_SCALE_ERROR:
        raise InputError(
            f"the fit drifted to a scale of {transform.scale:.3f}, far from the nominal {scale:g}: the "
            "images do not show the same field, or the scale is wrong"
        )
    box = _overlap(transform, hr_gray.shape, lr_gray.shape)
    hr_grid = _resample(hr_gray, transform, box)
    lr_crop_gray = lr_gray[box[0] : box[2], box[1] : box[3]]
    ncc = _ncc(_smooth(lr_crop_gray, _SMOOTH_LR), _smooth(_bin(hr_grid, GRID).astype(np.float32), _SMOOTH_LR))
    log.info("registration: %s, box %s, NCC %.4f (coarse %.3f)", transform, box, ncc, coarse_ncc)
    if not ncc >= min_ncc:
        raise InputError(
            f"the pair fits poorly (normalised correlation {ncc:.2f} < {min_ncc:.2f}); check that the images "
            "show the same field in focus"
        )
    channels = () if lr_layout.is_gray else (slice(None),)
    lr_crop = lr[(..., slice(box[0], box[2]), slice(box[1], box[3]), *channels)].copy()
    channel_axis = () if lr_layout.is_gray else (lr_layout.channels,)
    grid_plane = (GRID * (box[2] - box[0]), GRID * (box[3] - box[1]), *channel_axis)
    hr_out = np.empty((*lr_layout.leading, *grid_plane), hr.dtype)
    for index in lr_layout.plane_indices():
        hr_out[index] = _to_dtype(_resample(hr[index].astype(np.float32), transform, box), hr.dtype)
    return Registration(lr_crop, hr_out, transform, float(scale), box, float(ncc))


def register_files(
    lr_path: "str | os.PathLike[str]",
    hr_path: "str | os.PathLike[str]",
    out_dir: "str | os.PathLike[str]",
    *,
    scale: "float | None" = None,
    min_ncc: float = MIN_NCC,
) -> RegisteredFiles:
    """Register two image files and write ``<LR stem>_lr.tif``, ``_hr.tif`` and ``_registration.json``.

    Nothing is written unless the fit is accepted. Names already taken get a ``-1``, ``-2``, ... suffix,
    the same for the three files.

    Parameters
    ----------
    lr_path, hr_path : path
        The low- and high-magnification images.
    out_dir : path
        Created if needed.
    scale : float, optional
        The nominal HR pixels per LR pixel; by default from the files' pixel sizes.
    min_ncc : float
        As for :func:`register`.

    Returns
    -------
    RegisteredFiles

    Raises
    ------
    InputError
        For unreadable images, an unknown scale, or a pair that :func:`register` refuses.
    OutputError
        If ``out_dir`` cannot be written.
    """
    lr_file, hr_file = io.read_image(lr_path), io.read_image(hr_path)
    scale_source = "given"
    if scale is None:
        scale, scale_source = nominal_scale(lr_file.pixel_size, hr_file.pixel_size), "pixel sizes"
    result = register(lr_file.data, hr_file.data, scale=scale, min_ncc=min_ncc)
    lr_pixel = lr_file.pixel_size
    if lr_pixel is None and hr_file.pixel_size is not None:
        lr_pixel = hr_file.pixel_size.scaled(result.transform.scale)
    folder = io.ensure_writable_dir(out_dir)
    paths = _free_names(folder, Path(lr_path).stem)
    io.refuse_input_as_output(paths[0], [lr_path, hr_path])
    io.refuse_input_as_output(paths[1], [lr_path, hr_path])
    record = result.to_json() | {
        "scale_source": scale_source,
        "inputs": {
            role: {
                "path": str(Path(path).resolve()),
                "sha256": _sha256(Path(path)),
                "shape": list(data.shape),
            }
            for role, path, data in (("lr", lr_path, lr_file.data), ("hr", hr_path, hr_file.data))
        },
        "outputs": {"lr": paths[0].name, "hr": paths[1].name},
    }
    description = {"registration": paths[2].name}
    io.write_tiff(paths[0], result.lr, pixel_size=lr_pixel, description=description)
    hr_pixel = None if lr_pixel is None else lr_pixel.scaled(1 / GRID)
    io.write_tiff(paths[1], result.hr, pixel_size=hr_pixel, description=description)
    io.write_json(paths[2], record)
    return RegisteredFiles(*paths, result)


def _free_names(folder: Path, stem: str) -> tuple[Path, Path, Path]:
    """``<stem>_lr.tif``, ``_hr.tif``, ``_registration.json`` in ``folder``; one suffix frees all three."""
    for n in range(100_000):
        tail = f"-{n}" if n else ""
        paths = tuple(folder / f"{stem}{tail}{end}" for end in ("_lr.tif", "_hr.tif", "_registration.json"))
        if not any(path.exists() for path in paths):
            return paths  # type: ignore[return-value]
    raise OutputError(f"too many registrations of {stem} in {folder}; clean the folder")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _gray(image: np.ndarray, channels: int) -> np.ndarray:
    """The first plane as float32, colour channels (not alpha) averaged."""
    plane = image.reshape(-1, *image.shape[-3 if channels > 1 else -2 :])[0].astype(np.float32)
    return plane if channels == 1 else plane[..., :3].mean(axis=-1)


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma) if sigma > 0 else image


def _coarse_fit(
    lr: np.ndarray, hr: np.ndarray, scale: float, max_rotation_deg: float
) -> tuple[Similarity, float]:
    """The best of a grid of rotations and scales, each placed by normalised template matching over the LR."""
    lr_s = _smooth(lr, _SMOOTH_LR)
    hr_s = _smooth(hr, _SMOOTH_LR * scale)
    steps = int(max_rotation_deg // _COARSE_STEP_DEG)
    best: tuple[float, Similarity] = (-math.inf, Similarity(scale, 0.0, (0.0, 0.0)))
    for factor in _COARSE_SCALES:
        s = scale * factor
        th = int(min(hr.shape[0] / s, lr.shape[0]) * _TEMPLATE_FILL)
        tw = int(min(hr.shape[1] / s, lr.shape[1]) * _TEMPLATE_FILL)
        if min(th, tw) < MIN_OVERLAP:
            raise InputError(
                f"the HR image ({hr.shape[0]}x{hr.shape[1]}) covers under {MIN_OVERLAP} LR pixels at scale "
                f"{scale:g}; check the scale"
            )
        for k in range(-steps, steps + 1):
            angle = k * _COARSE_STEP_DEG
            # template pixel u -> HR: its centre (tw-1)/2, (th-1)/2 on the HR's centre
            centre_t = np.array([(tw - 1) / 2, (th - 1) / 2])
            centre_h = np.array([(hr.shape[1] - 1) / 2, (hr.shape[0] - 1) / 2])
            rot = rotation_matrix(-angle) * s
            to_hr = np.hstack([rot, (centre_h - rot @ centre_t)[:, None]])
            template = cv2.warpAffine(hr_s, to_hr, (tw, th), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
            score = cv2.matchTemplate(lr_s, template, cv2.TM_CCOEFF_NORMED)
            _, peak, _, (px, py) = cv2.minMaxLoc(score)
            if peak > best[0]:
                dy, dx = _subpixel(score, py, px)
                # template centre at LR (px + dx + centre_t) is HR centre_h
                centre_l = np.array([px + dx, py + dy]) + centre_t
                to_lr = rotation_matrix(angle) / s
                shift = centre_l - to_lr @ centre_h
                best = (peak, Similarity(s, angle, (float(shift[1]), float(shift[0]))))
    return best[1], float(best[0])


def rotation_matrix(angle_deg: float) -> np.ndarray:
    """The ``(x, y)`` rotation matrix of ``angle_deg`` (from x towards y)."""
    theta = math.radians(angle_deg)
    return np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])


def _subpixel(score: np.ndarray, y: int, x: int) -> tuple[float, float]:
    """A parabola's vertex through the peak of ``score`` and its neighbours, along each axis."""

    def vertex(a: float, b: float, c: float) -> float:
        denom = a - 2 * b + c
        return 0.0 if denom == 0 else float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5))

    h, w = score.shape
    dy = vertex(score[y - 1, x], score[y, x], score[y + 1, x]) if 0 < y < h - 1 else 0.0
    dx = vertex(score[y, x - 1], score[y, x], score[y, x + 1]) if 0 < x < w - 1 else 0.0
    return dy, dx


def _refine(lr: np.ndarray, hr: np.ndarray, start: Similarity) -> Similarity:
    """Refine ``start``: the similarity that maximises the NCC of the LR (inside the start's overlap, less a
    margin) with the HR sampled at its pixels, by Powell's method from ``start``.

    Both sides are smoothed as in :func:`_coarse_fit`; the HR also by about an LR pixel's footprint.
    """
    y0, x0, y1, x1 = _overlap(start, hr.shape, lr.shape, margin=2.0)
    template = _smooth(lr, _SMOOTH_LR)[y0:y1, x0:x1]
    hr_s = _smooth(hr, start.scale * math.hypot(_SMOOTH_LR, _PIXEL_FOOTPRINT))
    crop_to_lr = np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1]])

    def moved(p: np.ndarray) -> Similarity:  # p: scale change in %, rotation in degrees, shift in LR pixels
        return Similarity(
            float(start.scale * math.exp(p[0] / 100)),
            float(start.rotation_deg + p[1]),
            (float(start.shift[0] + p[2]), float(start.shift[1] + p[3])),
        )

    def cost(p: np.ndarray) -> float:
        crop_to_hr = np.vstack([moved(p).lr_to_hr(), [0, 0, 1]]) @ crop_to_lr
        sampled = cv2.warpAffine(
            hr_s, crop_to_hr[:2], (x1 - x0, y1 - y0),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip
        return -_ncc(template, sampled)

    found = optimize.minimize(cost, np.zeros(4), method="Powell", options={"xtol": 1e-3, "ftol": 1e-8})
    return moved(found.x)


def _overlap(t: Similarity, hr_shape: Sequence[int], lr_shape: Sequence[int], *, margin: float = 0.0) -> Box:
    """The largest LR box whose pixels (and ``margin`` LR pixels around them) lie inside the HR's interior.

    The interior keeps one HR pixel off the HR's outer pixel centres, where interpolation needs neighbours.
    """
    h, w = hr_shape[:2]
    corners = np.array([[0.5, 0.5], [w - 1.5, 0.5], [w - 1.5, h - 1.5], [0.5, h - 1.5]])  # x, y: TL TR BR BL
    lr_xy = corners @ t.hr_to_lr()[:, :2].T + t.hr_to_lr()[:, 2]
    xs, ys = lr_xy[:, 0], lr_xy[:, 1]
    # the HR's sides in the LR: ordered by where they lie, whatever the rotation (|angle| < 45 degrees)
    top, bottom = np.sort(ys)[1], np.sort(ys)[2]
    left, right = np.sort(xs)[1], np.sort(xs)[2]
    pad = 0.5 + margin
    y0, x0 = max(0, math.ceil(top + pad)), max(0, math.ceil(left + pad))
    y1 = min(lr_shape[0], math.floor(bottom - pad) + 1)
    x1 = min(lr_shape[1], math.floor(right - pad) + 1)
    if y1 - y0 < MIN_OVERLAP or x1 - x0 < MIN_OVERLAP:
        raise InputError(
            f"the images do not overlap (or by under {MIN_OVERLAP} LR pixels): the HR image lies outside "
            "the LR image; check that they show the same field"
        )
    return y0, x0, y1, x1


def _resample(plane: np.ndarray, t: Similarity, box: Box) -> np.ndarray:
    """``plane`` (HR, float32, gray or channels last) on the x4 grid of the LR ``box``; bicubic.

    An HR finer than the grid (scale above ``GRID``) is smoothed first, against aliasing.
    """
    ratio = t.scale / GRID
    if ratio > 1:
        plane = _smooth(plane, 0.5 * math.sqrt(ratio**2 - 1))
    # grid g -> LR g / GRID + (x0, y0) - (1 - 1 / GRID) / 2 -> HR
    offset = (1 - 1 / GRID) / 2
    grid_to_lr = np.array([[1 / GRID, 0, box[1] - offset], [0, 1 / GRID, box[0] - offset], [0, 0, 1]])
    grid_to_hr = t.lr_to_hr() @ grid_to_lr
    size = (GRID * (box[3] - box[1]), GRID * (box[2] - box[0]))
    return cv2.warpAffine(
        plane, grid_to_hr, size, flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float values in ``dtype``: integers rounded and clipped to the dtype's range."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _bin(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each ``factor`` x ``factor`` block of a 2D image."""
    h, w = image.shape[0] // factor, image.shape[1] // factor
    return image[: h * factor, : w * factor].reshape(h, factor, w, factor).mean(axis=(1, 3))


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two images of one shape (0 if either is flat)."""
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return 0.0 if denom == 0 else float((a * b).sum() / denom)
