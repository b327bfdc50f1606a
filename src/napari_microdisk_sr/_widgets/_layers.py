"""Small helpers over the viewer's layers, shared by the dock widgets."""

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.layers import Layer

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
