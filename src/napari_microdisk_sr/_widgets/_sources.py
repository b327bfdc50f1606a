"""Image layers read for Super-resolve on the main thread: the data and what an output layer or file needs."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image

from ..core.io import PixelSize
from ._layers import layer_path

__all__ = ["Source", "pixel_size_um", "read_source"]


@dataclass(frozen=True, eq=False)
class Source:
    """One input layer as read on the main thread: what the worker and the output layer need."""

    name: str
    data: Any  # an ndarray; read lazily (dask, zarr), the layer's own array
    rgb: bool
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    units: tuple[Any, ...]
    path: "Path | None"
    pixel_size: "PixelSize | None"
    display: dict[str, Any]


def pixel_size_um(layer: Image) -> "float | None":
    """The layer's pixel width in micrometres: from its physical units, or its scale when it has one
    (napari layers without units hold the pixel size in their scale); None when neither says."""
    unit = layer.units[-1]
    if str(unit) != "pixel":
        return float((layer.scale[-1] * unit).to("micrometer").magnitude)
    return None if layer.scale[-1] == 1 else float(layer.scale[-1])


def read_source(
    layer: Image, given_um: float, plane_index: "tuple[int, ...] | None" = None, *, lazy: bool = False
) -> Source:
    """What the worker and the output need of ``layer`` (on the main thread, before the job starts).

    The pixel size written is ``given_um`` micrometres when positive, else the layer's physical one, else
    the layer's own pixel (unit-less), so that a written output always says its pixels are a quarter of the
    input's.
    With ``plane_index``, only that plane of a stack is read. ``lazy`` keeps the layer's own array, unread
    (level 0 of a multiscale layer), for a job that reads it block by block.
    """
    units = [str(unit) for unit in layer.units[-2:]]
    if given_um > 0:
        pixel_size = PixelSize(given_um, given_um, "um")
    elif units[0] == units[1] != "pixel":
        pixel_size = PixelSize(layer.scale[-2], layer.scale[-1], format(layer.units[-1], "~"))
    else:
        pixel_size = PixelSize(layer.scale[-2], layer.scale[-1])
    display = {"contrast_limits": layer.contrast_limits, "gamma": layer.gamma}
    if not layer.rgb:
        display["colormap"] = layer.colormap
    return Source(
        name=layer.name,
        data=_data(layer, plane_index, lazy=lazy),
        rgb=layer.rgb,
        scale=tuple(layer.scale),
        translate=tuple(layer.translate),
        units=tuple(layer.units),
        path=layer_path(layer),
        pixel_size=pixel_size,
        display=display,
    )


def _data(layer: Image, plane_index: "tuple[int, ...] | None", *, lazy: bool) -> Any:
    if lazy:
        return layer.data[0] if layer.multiscale else layer.data
    return np.asarray(layer.data if plane_index is None else layer.data[plane_index])
