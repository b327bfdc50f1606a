"""Placing a plain Qt widget among magicgui widgets."""

from magicgui.widgets import Container
from qtpy.QtWidgets import QWidget


def hosted(qwidget: QWidget) -> Container:
    """A margin-less magicgui container that holds ``qwidget``, to put it anywhere in a magicgui layout."""
    host = Container(labels=False)
    host.margins = (0, 0, 0, 0)
    host.native.layout().addWidget(qwidget)
    return host
