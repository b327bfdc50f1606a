"""Image quality measures: PSNR, SSIM and absolute-error maps of an image against its reference.

Conventions:

- The data range ``R`` of a measure is, unless given: the dtype's full range for uint8 and uint16 images (255
  and 65535, as in scikit-image; a 12-bit camera in a uint16 file is scored against 65535), and the
  reference's ``max - min`` for the images that map by their own range (floats, signed and 32/64-bit
  integers, see :func:`.images.maps_by_own_range`).
- PSNR is ``10 log10(R^2 / MSE)`` over all pixels and channels; identical images give ``inf``.
- SSIM is Wang et al.'s (2004): an 11x11 Gaussian window with sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``,
  population (co)variances, the mean over the pixels whose window lies inside the image, averaged over colour
  channels. It equals ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=R, channel_axis=-1)``, computed with OpenCV's filters (faster).
"""

import math

import cv2
import numpy as np

from .errors import InputError
from .images import maps_by_own_range

__all__ = ["SSIM_WINDOW", "abs_error", "psnr", "ssim"]

_SSIM_SIGMA = 1.5
_SSIM_RADIUS = 5  # int(3.5 * sigma + 0.5), scikit-image's truncation
SSIM_WINDOW = 2 * _SSIM_RADIUS + 1
"""Side of SSIM's window: images must be at least this large."""
_SSIM_K1, _SSIM_K2 = 0.01, 0.03


def psnr(ref: np.ndarray, img: np.ndarray, *, data_range: "float | None" = None) -> float:
    """Peak signal-to-noise ratio of ``img`` against ``ref``, in dB.

    Parameters
    ----------
    ref, img : (H, W) or (H, W, C) ndarray
        The reference and the image scored, of the same shape (and dtype, unless ``data_range`` is given).
    data_range : float, optional
        The range ``R`` of the values; by default the dtype's range (uint8, uint16) or ``ref``'s
        ``max - min`` (other dtypes).

    Returns
    -------
    float
        ``10 log10(R^2 / MSE)``; ``inf`` for identical images.
    """
    ref64, img64, data_range = _prepare(ref, img, data_range)
    mse = float(np.mean(np.square(ref64 - img64)))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def ssim(ref: np.ndarray, img: np.ndarray, *, data_range: "float | None" = None) -> float:
    """Structural similarity of ``img`` with ``ref`` (Wang et al. 2004, Gaussian window; see module notes).

    Parameters
    ----------
    ref, img : (H, W) or (H, W, C) ndarray
        As for :func:`psnr`; ``H`` and ``W`` at least 11 (the window).
    data_range : float, optional
        As for :func:`psnr`.

    Returns
    -------
    float
        In ``[-1, 1]``; 1 for identical images. Colour images: the mean over channels.
    """
    ref64, img64, data_range = _prepare(ref, img, data_range)
    window = 2 * _SSIM_RADIUS + 1
    if min(ref64.shape[:2]) < window:
        raise InputError(f"SSIM needs images of at least {window}x{window} pixels, got {ref64.shape[:2]}")
    if ref64.ndim == 2:
        return _ssim_plane(ref64, img64, data_range)
    return float(
        np.mean([_ssim_plane(ref64[..., c], img64[..., c], data_range) for c in range(ref64.shape[2])])
    )


def abs_error(ref: np.ndarray, img: np.ndarray, *, data_range: "float | None" = None) -> np.ndarray:
    """Per-pixel absolute error, in units of the data range, averaged over colour channels.

    Parameters
    ----------
    ref, img, data_range
        As for :func:`psnr`.

    Returns
    -------
    (H, W) float32 ndarray
        ``|img - ref| / R``: 0 is exact, 1 is off by the whole range.
    """
    ref64, img64, data_range = _prepare(ref, img, data_range)
    error = np.abs(img64 - ref64) / data_range
    return (error if error.ndim == 2 else error.mean(axis=2)).astype(np.float32)


def _prepare(
    ref: np.ndarray, img: np.ndarray, data_range: "float | None"
) -> tuple[np.ndarray, np.ndarray, float]:
    """Check a metric's inputs; return them as float64 with the data range."""
    ref, img = np.asarray(ref), np.asarray(img)
    if ref.shape != img.shape:
        raise InputError(f"the images to compare differ in shape: {ref.shape} and {img.shape}")
    if ref.ndim not in (2, 3) or ref.size == 0:
        raise InputError(f"expected (H, W) or (H, W, C) images, got shape {ref.shape}")
    for array in (ref, img):
        if array.dtype.kind not in "uif":
            raise InputError(f"cannot score images of dtype {array.dtype}; give integer or float images")
    if data_range is None:
        if ref.dtype != img.dtype:
            raise InputError(f"the images are {ref.dtype} and {img.dtype}: convert one, or give data_range")
        if not maps_by_own_range(ref.dtype):
            info = np.iinfo(ref.dtype)
            data_range = float(info.max) - float(info.min)
        else:
            data_range = float(np.max(ref)) - float(np.min(ref))
            if not data_range > 0:
                raise InputError("the reference is constant, so it has no data range: give data_range")
    data_range = float(data_range)
    if not (math.isfinite(data_range) and data_range > 0):
        raise InputError(f"data_range must be a positive number, got {data_range}")
    ref64, img64 = ref.astype(np.float64), img.astype(np.float64)
    if not (np.isfinite(ref64).all() and np.isfinite(img64).all()):
        raise InputError("the images to compare hold NaN or Inf values")
    return ref64, img64, data_range


def _ssim_plane(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    def blur(a: np.ndarray) -> np.ndarray:
        size = 2 * _SSIM_RADIUS + 1
        return cv2.GaussianBlur(a, (size, size), _SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    c1, c2 = (_SSIM_K1 * data_range) ** 2, (_SSIM_K2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    r = _SSIM_RADIUS
    return float(s[r:-r, r:-r].mean())
