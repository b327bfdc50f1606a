"""napari reader: OME-Zarr images (ours, or any OME-NGFF image) and Zarr arrays, opened lazily.

Every pyramid level is a dask array, so napari reads only the chunks on screen at the resolution shown: a
120,000 x 120,000 result opens at once. Imports no Qt.
"""

import os
from collections.abc import Callable
from typing import Any

from .core.errors import InputError
from .core.io import image_stem
from .core.lazy import PROVENANCE_KEY, is_store, open_pyramid

__all__ = ["get_reader", "read_zarr"]

LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: "str | list[str]") -> "Callable[[str | list[str]], list[LayerData]] | None":
    """:func:`read_zarr` for one or more Zarr stores that open as images; None for anything else."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(is_store(p) for p in paths):
        return None
    try:
        for p in paths:
            open_pyramid(p)
    except InputError:
        return None  # a Zarr store that holds no image (a plate, labels alone): another reader's
    return read_zarr


def read_zarr(path: "str | list[str]") -> list[LayerData]:
    """One image layer per store: multiscale when it has pyramid levels, placed by its pixel size."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers = []
    for p in paths:
        pyramid = open_pyramid(p)
        multiscale = len(pyramid.levels) > 1
        kwargs = {
            "name": image_stem(p),
            "multiscale": multiscale,
            "rgb": pyramid.rgb,
            "scale": pyramid.scale,
            "translate": pyramid.translate,
            "metadata": {} if pyramid.provenance is None else {PROVENANCE_KEY: pyramid.provenance},
        }
        layers.append((pyramid.levels if multiscale else pyramid.levels[0], kwargs, "image"))
    return layers
