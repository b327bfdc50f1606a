"""Disks as shape outlines and shapes back as pixel boxes, in an image's pixel coordinates.

An outline is an ``(N, 2)`` array of ``(row, column)`` vertices, as napari's Shapes layers hold them; the
four corners of a disk's bounding square describe both an ellipse (the disk) and a rectangle. Coordinates
are pixel centres: pixel ``i`` spans ``[i - 0.5, i + 0.5)``.
"""

import math
from collections.abc import Sequence

import numpy as np

from .detect import Disk
from .errors import InputError


def disk_outline(disk: Disk) -> np.ndarray:
    """The corners of the square bounding ``disk``: a napari ellipse or rectangle that covers it.

    Returns
    -------
    (4, 2) ndarray of float
        ``(row, column)`` corners, clockwise from the top left.
    """
    y0, y1 = disk.cy - disk.r, disk.cy + disk.r
    x0, x1 = disk.cx - disk.r, disk.cx + disk.r
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]])


def outline_box(
    vertices: np.ndarray, shape: Sequence[int], *, margin: float = 0.0, skip_border: bool = False
) -> "tuple[int, int, int, int] | None":
    """The pixels that the bounding box of an outline, grown by a margin, touches in an image.

    Parameters
    ----------
    vertices : (N, 2) array_like of float
        ``(row, column)`` vertices in the image's pixel coordinates.
    shape : sequence of int
        Shape of the image, ``(H, W)`` or ``(H, W, C)``.
    margin : float
        Growth of each side, as a fraction of the bounding box's half-size along it (for a disk's outline,
        of its radius, as in :func:`~.detect.disk_box`).
    skip_border : bool
        Give None for an outline that crosses the image's border (before the margin is added).

    Returns
    -------
    (y0, x0, y1, x1) : tuple of int, or None
        Rows ``y0:y1`` and columns ``x0:x1``, clipped to the image; None when the outline lies entirely
        outside the image, or crosses its border and ``skip_border`` is set.

    Raises
    ------
    InputError
        For vertices that are not an ``(N, 2)`` array of finite numbers, or a negative margin.
    """
    points = np.asarray(vertices, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2 or not len(points) or not np.isfinite(points).all():
        raise InputError(f"an outline needs (N, 2) finite (row, column) vertices, got shape {points.shape}")
    if not (math.isfinite(margin) and margin >= 0):
        raise InputError(f"margin must be a number >= 0, not {margin!r}")
    low, high = points.min(axis=0), points.max(axis=0)
    h, w = shape[:2]
    if skip_border and (low.min() < -0.5 or high[0] > h - 0.5 or high[1] > w - 0.5):
        return None
    grow = margin * (high - low) / 2
    (ymin, xmin), (ymax, xmax) = low - grow, high + grow
    y0, x0 = max(0, math.floor(ymin - 0.5) + 1), max(0, math.floor(xmin - 0.5) + 1)
    y1, x1 = min(h, math.ceil(ymax + 0.5)), min(w, math.ceil(xmax + 0.5))
    if y0 >= y1 or x0 >= x1:
        return None
    return y0, x0, y1, x1
