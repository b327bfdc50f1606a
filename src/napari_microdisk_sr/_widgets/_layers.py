"""Small helpers over the viewer's layers, shared by the dock widgets."""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Layer, Shapes

from ..core.shapes import outline_box

if TYPE_CHECKING:
    import napari


def layer_choices(
    viewer: "napari.viewer.Viewer", kind: type[Layer]
) -> Callable[[Any], list[tuple[str, Layer]]]:
    """A magicgui ``choices`` callable listing the viewer's layers of type ``kind`` by name."""

    def choices(_widget: Any) -> list[tuple[str, Layer]]:
        return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, kind)]

    return choices


def layer_named(viewer: "napari.viewer.Viewer", name: str) -> "Layer | None":
    """The layer called ``name``, or None if there is none (any more)."""
    return next((layer for layer in viewer.layers if layer.name == name), None)


def layer_path(layer: "Layer | None") -> "Path | None":
    """The file ``layer`` was opened from, if any."""
    path = None if layer is None else layer.source.path
    return Path(path) if path else None


def shape_boxes(
    shapes: Shapes, image: Image, shape: Sequence[int], *, margin: float = 0.0, skip_border: bool = False
) -> list[tuple[int, int, int, int]]:
    """The pixel boxes ``(y0, x0, y1, x1)`` in ``image`` (of ``shape``) of the shapes, via world coordinates.

    Each shape's vertices are mapped to the image's pixels (the layers may be scaled and moved apart), then
    :func:`~..core.shapes.outline_box` gives the box; shapes outside the image (or, with ``skip_border``,
    across its border) give none.
    """
    boxes = []
    for vertices in shapes.data:
        pixels = np.array([image.world_to_data(shapes.data_to_world(vertex))[-2:] for vertex in vertices])
        box = outline_box(pixels, shape, margin=margin, skip_border=skip_border)
        if box is not None:
            boxes.append(box)
    return boxes
