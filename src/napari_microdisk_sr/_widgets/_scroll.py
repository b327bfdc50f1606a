"""Dock widgets that scroll, so that all four fit a laptop's screen together.

napari docks a magicgui widget's ``native`` Qt widget as it is; its minimum height is then that of every row
together, and four docks make the window taller than most screens. magicgui's own ``scrollable=True`` does
not help there: napari docks the widget inside the scroll area, not the scroll area. So the rows move into a
scroll area inside ``native``, which stays the widget napari docks.
"""

from magicgui.widgets import Container
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

_SHORTEST = 8  # lines of text: a dock shows at least this much of its rows (all of them if fewer)
_GROWING = {QSizePolicy.Policy.Expanding, QSizePolicy.Policy.MinimumExpanding, QSizePolicy.Policy.Ignored}


def make_scrollable(widget: Container) -> QScrollArea:
    """Move the rows of ``widget`` into a vertical scroll area that fills ``widget.native``.

    Call it once the rows are in place; rows added later go into the scroll area too (magicgui keeps adding
    them to the same layout). The dock can then be as short as a few rows (``_SHORTEST`` lines of text), and
    as narrow as the widest row: a row is never cut, the rest scrolls into view.

    Returns
    -------
    QScrollArea
        The scroll area now inside ``widget.native``.
    """
    native = widget.native
    rows = QWidget()
    rows.setLayout(native.layout())  # Qt takes the layout (and its widgets) from ``native``
    layout = rows.layout()
    if not any(_grows(layout.itemAt(i).widget()) for i in range(layout.count())):
        layout.addStretch()  # short forms stay at the top, as napari's docks keep them
    area = QScrollArea()
    area.setWidget(rows)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scrollbar = area.verticalScrollBar().sizeHint().width()
    area.setMinimumWidth(rows.minimumSizeHint().width() + scrollbar)
    area.setMinimumHeight(min(rows.minimumSizeHint().height(), _SHORTEST * area.fontMetrics().height()))
    outer = QVBoxLayout(native)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    return area


def _grows(widget: "QWidget | None") -> bool:
    return widget is not None and widget.sizePolicy().verticalPolicy() in _GROWING
