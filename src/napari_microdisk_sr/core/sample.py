"""Synthetic microscope scenes of microdisks, with the disks' positions known.

A scene is rendered twice: a noise-free high-resolution "truth", ``scale`` times the size, and the
low-resolution acquisition of the same field (optical blur, area down-sampling by ``scale``, Poisson-Gaussian
sensor noise). The pair drives napari's File > Open Sample, the demo, fine-tuning and evaluation tests, and
the known disks score the detector.

What a microdisk looks like under a back-lit (bright-field) microscope, and so here: a dark body, a bright
diffraction rim on its edge, faint concentric fringes outside the rim, on a substrate lit unevenly (vignetting
and a low-frequency texture). In RGB the illumination is slightly warm and the fringe period grows with the
wavelength. ``background="dark"`` renders the same disks in reflected light on a dark substrate.

Coordinates are pixel centres (pixel ``i`` spans ``[i - 0.5, i + 0.5)``); the high-resolution pixel grid is
the low-resolution one divided in ``scale`` x ``scale``, so the centre of low-resolution pixel ``y`` lies at
high-resolution coordinate ``scale * y + (scale - 1) / 2`` (see :meth:`~.detect.Disk.rescaled`).
"""

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from .detect import Disk, reaches_border
from .errors import InputError
from .register import Similarity, rotation_matrix

log = logging.getLogger(__name__)

DEFAULT_RADIUS_RANGE = (6.0, 14.0)
"""Disk radii drawn when ``radius`` is not given, in low-resolution pixels (a 4X acquisition)."""

_COVER = 0.10  # fraction of the field covered by disks when n_disks is not given
_GAP = 2.0  # LR px: the least distance between the edges of two disks
_PLACEMENT_TRIES = 400  # random centres tried per disk
_SIZE_LIMITS = (16, 4096)  # LR px per side
_MAX_HR_SIDE = 16384  # HR px per side (a float32 RGB field of that size takes 3 GiB)
_MAX_SCALE = 8
_DTYPES = ("uint8", "uint16")

# Appearance, in low-resolution pixels so that a scene looks the same at any ``scale``.
_EDGE_WIDTH = 0.1  # logistic width of the body's edge
_RIM_SIGMA = 0.45  # Gaussian width of the diffraction rim
_FRINGE_PERIOD = 2.4
_FRINGE_DECAY = 2.5
_FRINGE_REACH = 4.0  # fringes are drawn out to this many decay lengths
_TEXTURE_CELL = 6.0  # correlation length of the substrate texture
_TEXTURE_AMPLITUDE = 0.03
_PSF_SIGMA = 0.6  # optical blur of the low-resolution acquisition
_FULL_WELL = 1500.0  # photo-electrons at full scale (Poisson part of the noise)
_READ_NOISE = 0.004  # Gaussian read noise, fraction of full scale
_TINT = (1.0, 0.93, 0.8)  # RGB gains of a slightly warm (halogen) illumination
_WAVELENGTH = (1.12, 1.0, 0.88)  # relative fringe period in R, G, B


@dataclass(frozen=True)
class _Look:
    """Photometry of one kind of illumination; modulations are relative to the local substrate level."""

    level: float  # substrate level at the centre of the field, fraction of full scale
    body: tuple[float, float]  # the disk body's level, relative to the substrate
    rim: tuple[float, float]  # the rim's peak, added to the relative level
    fringe: tuple[float, float]  # the first fringe's amplitude, relative


_LOOKS = {
    "light": _Look(level=0.5, body=(0.2, 0.35), rim=(0.6, 0.9), fringe=(0.06, 0.1)),
    "dark": _Look(level=0.07, body=(0.4, 0.6), rim=(5.0, 8.0), fringe=(0.4, 0.7)),
}


@dataclass(frozen=True, eq=False)
class Scene:
    """A synthetic microdisk field at two resolutions, with its disks.

    Attributes
    ----------
    hr : (H * scale, W * scale) or (H * scale, W * scale, 3) ndarray
        The noise-free high-resolution truth, in ``lr``'s dtype.
    lr : (H, W) or (H, W, 3) ndarray of uint8 or uint16
        The low-resolution acquisition: ``hr``'s field blurred, area down-sampled and noisy.
    disks_hr, disks_lr : list of Disk
        The disks in ``hr``'s and ``lr``'s pixel coordinates, in the same order (by row, then column).
    seed : int
        The seed that makes the scene.
    scale : int
        The resolution ratio between ``hr`` and ``lr``.
    """

    hr: np.ndarray
    lr: np.ndarray
    disks_hr: list[Disk]
    disks_lr: list[Disk]
    seed: int
    scale: int


def make_scene(
    *,
    seed: int = 0,
    size: Sequence[int] = (256, 256),
    n_disks: "int | None" = None,
    radius: "float | Sequence[float] | None" = None,
    rgb: bool = False,
    dtype: str = "uint8",
    scale: int = 4,
    background: str = "light",
) -> Scene:
    """Render a microdisk field as a high-resolution truth and its low-resolution acquisition.

    The same arguments always give the same scene. Disks never overlap (their edges are at least 2
    low-resolution pixels apart); their centres lie inside the field, so some disks cross its border.

    Parameters
    ----------
    seed : int
        Seed of every random choice: disk positions and sizes, illumination, texture and noise.
    size : (int, int)
        ``(H, W)`` of the low-resolution image, each between 16 and 4096.
    n_disks : int, optional
        How many disks (0 gives a bare substrate). By default enough to cover about 10 % of the field.
    radius : float or (float, float), optional
        Disk radius in low-resolution pixels, or a range to draw radii from uniformly.
        By default ``DEFAULT_RADIUS_RANGE`` (6 to 14 pixels, a typical 4X acquisition).
    rgb : bool
        Render colour images ``(..., 3)`` under a slightly warm illumination instead of gray.
    dtype : {"uint8", "uint16"}
        Pixel type of both images; uint16 images use the full 16-bit range.
    scale : int
        Resolution ratio between the truth and the acquisition, 1 to 8.
    background : {"light", "dark"}
        Back-lit substrate (bright-field) or reflected light on a dark substrate.

    Returns
    -------
    Scene

    Raises
    ------
    InputError
        If an argument is out of range, or ``n_disks`` disks of that radius do not fit in the field.
    """
    shape, radii_range, dtype, look = _validate(size, n_disks, radius, dtype, scale, background)
    rng = np.random.default_rng(seed)
    disks_lr = _place_disks(rng, shape, n_disks, radii_range)
    disks_hr = [disk.rescaled(scale) for disk in disks_lr]
    channels = 3 if rgb else 1
    truth = _render(rng, (shape[0] * scale, shape[1] * scale), disks_hr, scale, channels, look)
    acquired = _acquire(rng, truth, scale)
    if not rgb:
        truth, acquired = truth[..., 0], acquired[..., 0]
    return Scene(
        hr=_quantise(truth, dtype),
        lr=_quantise(acquired, dtype),
        disks_hr=disks_hr,
        disks_lr=disks_lr,
        seed=seed,
        scale=scale,
    )


def _validate(
    size: Sequence[int],
    n_disks: "int | None",
    radius: "float | Sequence[float] | None",
    dtype: str,
    scale: int,
    background: str,
) -> tuple[tuple[int, int], tuple[float, float], np.dtype, _Look]:
    lo, hi = _SIZE_LIMITS
    if len(size) != 2 or not all(isinstance(n, (int, np.integer)) and lo <= n <= hi for n in size):
        raise InputError(f"size must be (height, width) with integers from {lo} to {hi}, not {size!r}")
    if n_disks is not None and (not isinstance(n_disks, (int, np.integer)) or n_disks < 0):
        raise InputError(f"n_disks must be a whole number >= 0, not {n_disks!r}")
    if radius is None:
        radii = DEFAULT_RADIUS_RANGE
    elif np.ndim(radius) == 0:
        radii = (float(radius), float(radius))
    else:
        radii = tuple(float(r) for r in radius)
    if len(radii) != 2 or not all(math.isfinite(r) and r >= 1.0 for r in radii) or radii[0] > radii[1]:
        raise InputError(f"radius must be a number >= 1 or a range (min, max) of them, not {radius!r}")
    if radii[0] > min(size) / 2:
        raise InputError(f"disks of radius {radii[0]:g} px do not fit in a {size[0]}x{size[1]} field")
    if not isinstance(scale, (int, np.integer)) or not 1 <= scale <= _MAX_SCALE:
        raise InputError(f"scale must be an integer from 1 to {_MAX_SCALE}, not {scale!r}")
    if max(size) * scale > _MAX_HR_SIDE:
        raise InputError(
            f"a {size[0]}x{size[1]} field at scale {scale} is too large; keep size * scale <= {_MAX_HR_SIDE}"
        )
    try:
        pixel_type = np.dtype(dtype)
    except TypeError:
        pixel_type = None
    if pixel_type is None or pixel_type.name not in _DTYPES:
        raise InputError(f"dtype must be one of {', '.join(_DTYPES)}, not {dtype!r}")
    if background not in _LOOKS:
        raise InputError(f"background must be one of {', '.join(_LOOKS)}, not {background!r}")
    return (int(size[0]), int(size[1])), radii, pixel_type, _LOOKS[background]


def _place_disks(
    rng: np.random.Generator, shape: tuple[int, int], n_disks: "int | None", radii_range: tuple[float, float]
) -> list[Disk]:
    """Non-overlapping disks with centres inside the field, largest placed first; sorted by row, column."""
    mean_r = sum(radii_range) / 2
    n = (
        n_disks
        if n_disks is not None
        else max(1, round(_COVER * shape[0] * shape[1] / (math.pi * mean_r**2)))
    )
    radii = np.sort(rng.uniform(*radii_range, size=n))[::-1]
    placed = np.empty((0, 3))  # cy, cx, r
    for r in radii:
        centres = rng.uniform((0.0, 0.0), (shape[0] - 1.0, shape[1] - 1.0), size=(_PLACEMENT_TRIES, 2))
        gaps = np.hypot(*(centres[:, None, :] - placed[None, :, :2]).transpose(2, 0, 1)) - placed[:, 2] - r
        free = np.flatnonzero((gaps >= _GAP).all(axis=1))
        if free.size == 0:
            if n_disks is not None:
                raise InputError(
                    f"cannot place {n_disks} disks of radius {radii_range[0]:g}-{radii_range[1]:g} px "
                    f"without overlap in a {shape[0]}x{shape[1]} field; ask for fewer or smaller disks"
                )
            log.info("placed %d of %d disks: the field is full", len(placed), n)
            break
        placed = np.vstack([placed, [*centres[free[0]], r]])
    placed = placed[np.lexsort((placed[:, 1], placed[:, 0]))]
    return [Disk(cy, cx, r, touches_border=reaches_border(cy, cx, r, shape)) for cy, cx, r in placed]


def _render(
    rng: np.random.Generator,
    shape: tuple[int, int],
    disks: list[Disk],
    scale: int,
    channels: int,
    look: _Look,
) -> np.ndarray:
    """The high-resolution field in [0, 1], float32 ``(H, W, channels)``.

    Each disk modulates the substrate by ``body - 1`` inside, a Gaussian rim on its edge and damped fringes
    outside; the modulations of neighbouring disks (whose fringes may meet) add up.
    """
    substrate = _substrate(rng, shape, scale, look.level)
    periods = _FRINGE_PERIOD * np.asarray(_WAVELENGTH if channels == 3 else (1.0,), dtype=np.float32)
    modulation = np.zeros((*shape, channels), np.float32)
    for disk in disks:
        body, rim, fringe = (rng.uniform(*bounds) for bounds in (look.body, look.rim, look.fringe))
        reach = disk.r + (_FRINGE_REACH * _FRINGE_DECAY + 1.0) * scale
        y0, y1 = max(0, math.floor(disk.cy - reach)), min(shape[0], math.ceil(disk.cy + reach) + 1)
        x0, x1 = max(0, math.floor(disk.cx - reach)), min(shape[1], math.ceil(disk.cx + reach) + 1)
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(disk.cy)
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(disk.cx)
        d = (np.sqrt(dy * dy + dx * dx) - np.float32(disk.r)) / scale  # signed distance to the edge, LR px
        outside = 0.5 + 0.5 * np.tanh(d / (2 * _EDGE_WIDTH))
        local = (body - 1.0) * (1.0 - outside) + rim * np.exp(-0.5 * (d / _RIM_SIGMA) ** 2)
        damped = -fringe * outside * np.exp(-np.maximum(d, 0.0) / _FRINGE_DECAY)
        fringes = damped[..., None] * np.cos((2 * np.pi) * d[..., None] / periods)
        modulation[y0:y1, x0:x1] += local[..., None] + fringes
    tint = np.asarray(_TINT if channels == 3 else (1.0,), dtype=np.float32)
    return np.clip(substrate[..., None] * tint * (1.0 + modulation), 0.0, 1.0)


def _substrate(rng: np.random.Generator, shape: tuple[int, int], scale: int, level: float) -> np.ndarray:
    """Illumination of the bare substrate: vignetting times a smooth texture, float32 ``(H, W)``."""
    h, w = shape
    strength = rng.uniform(0.15, 0.3)
    cy, cx = (np.array([h, w]) - 1) / 2 + rng.uniform(-0.15, 0.15, size=2) * np.array([h, w])
    yy = ((np.arange(h, dtype=np.float32) - cy) ** 2)[:, None]
    xx = ((np.arange(w, dtype=np.float32) - cx) ** 2)[None, :]
    vignette = 1.0 - strength * (yy + xx) / np.float32((h * h + w * w) / 4)
    cell = _TEXTURE_CELL * scale
    coarse = rng.normal(size=(math.ceil(h / cell) + 1, math.ceil(w / cell) + 1)).astype(np.float32)
    texture = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return (level * vignette * (1.0 + _TEXTURE_AMPLITUDE * texture)).astype(np.float32)


def _acquire(rng: np.random.Generator, field: np.ndarray, scale: int) -> np.ndarray:
    """A low-resolution camera image of ``field`` (float32 ``(H, W, C)`` in [0, 1]), in [0, 1]."""
    sigma = _PSF_SIGMA * scale
    blurred = cv2.GaussianBlur(field, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    h, w, c = field.shape
    binned = blurred.reshape(h // scale, scale, w // scale, scale, c).mean(axis=(1, 3))
    electrons = rng.poisson(binned * _FULL_WELL) / _FULL_WELL
    return np.clip(electrons + rng.normal(0.0, _READ_NOISE, size=binned.shape), 0.0, 1.0)


def _quantise(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``image`` in [0, 1] as integers of ``dtype``'s full range."""
    top = np.iinfo(dtype).max
    return np.rint(image * top).astype(dtype)


class MagnifiedPair(NamedTuple):
    """Two magnifications of one synthetic field and the similarity that relates them.

    Attributes
    ----------
    lr : (H, W) ndarray
        The whole field at the low magnification, rotated, blurred, with its own gain, offset and noise.
    hr : (h, w) ndarray
        A box of the field at the high magnification, noise-free, in ``lr``'s dtype.
    truth : Similarity
        Where ``hr`` lies in ``lr`` (see :class:`~.register.Similarity`).
    """

    lr: np.ndarray
    hr: np.ndarray
    truth: Similarity


def make_magnified_pair(
    *,
    scale: float = 2.5 * 1.015,
    angle: float = 1.5,
    hr_box: tuple[int, int, int, int] = (200, 150, 440, 400),
    gain: float = 0.7,
    offset: float = 20 / 255,
    noise: float = 2 / 255,
    size: int = 160,
    dtype: str = "uint8",
    seed: int = 3,
) -> MagnifiedPair:
    """A 4X-like and a 10X-like image of one microdisk field, with a known similarity between them.

    The field is the truth of :func:`make_scene` (``size`` x 4 pixels a side); the LR sees all of it at
    ``1 / scale``, rotated by ``angle`` degrees about its centre, blurred (a Gaussian of ``0.45 * scale``
    field pixels), then ``gain * value + offset`` plus Gaussian noise (in fractions of the full scale); the HR
    is the field's box ``hr_box`` ``(y0, x0, y1, x1)``. A pair to try :func:`~.register.register` on.
    """
    field = make_scene(size=(size, size), scale=4, seed=seed, dtype=dtype).hr
    side = int(field.shape[0] / scale)
    to_lr = np.hstack([rotation_matrix(angle) / scale, np.zeros((2, 1))])
    to_lr[:, 2] = np.array([side, side]) / 2 - to_lr[:, :2] @ np.array(field.shape[::-1]) / 2
    blurred = cv2.GaussianBlur(field.astype(np.float32), (0, 0), 0.45 * scale)
    seen = cv2.warpAffine(blurred, to_lr, (side, side), flags=cv2.INTER_LINEAR)
    top = float(np.iinfo(field.dtype).max)
    noisy = gain * seen + top * (offset + np.random.default_rng(seed).normal(0, noise, seen.shape))
    y0, x0, y1, x1 = hr_box
    shift = to_lr[:, :2] @ np.array([x0, y0]) + to_lr[:, 2]
    lr = np.clip(np.rint(noisy), 0, top).astype(field.dtype)
    return MagnifiedPair(
        lr, field[y0:y1, x0:x1].copy(), Similarity(scale, angle, (float(shift[1]), float(shift[0])))
    )
