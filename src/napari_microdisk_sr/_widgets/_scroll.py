"""Dock widgets that scroll, so that all four fit a laptop's screen together.

napari docks a magicgui widget's ``native`` Qt widget as it is; its minimum height is then that of every row
together, and four docks make the window taller than most screens. magicgui's own ``scrollable=True`` does
not help there: napari docks the widget inside the scroll area, not the scroll area. So the rows move into a
scroll area inside ``native``, which stays the widget napari docks.
"""

from magicgui.widgets import Container
from qtpy.QtCore import QEvent, QObject, QSize, Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

_SHORTEST = 8  # lines of text: a dock shows at least this much of its rows (all of them if fewer)
_GROWING = {QSizePolicy.Policy.Expanding, QSizePolicy.Policy.MinimumExpanding, QSizePolicy.Policy.Ignored}


def make_scrollable(widget: Container) -> QScrollArea:
    """Move the rows of ``widget`` into a vertical scroll area that fills ``widget.native``.

    Call it once the rows are in place; rows added later go into the scroll area too (magicgui keeps adding
    them to the same layout). The dock can then be as short as a few rows (``_SHORTEST`` lines of text), and
    it stays as wide as the widest row, also when rows change: a row is never cut, the rest scrolls into view.

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
    area = _RowsArea(rows)
    outer = QVBoxLayout(native)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    return area


class _RowsArea(QScrollArea):
    """A vertical scroll area whose minimum is as wide as its rows and a few lines of text high."""

    def __init__(self, rows: QWidget) -> None:
        super().__init__()
        self.setWidget(rows)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        rows.installEventFilter(self)

    def minimumSizeHint(self) -> QSize:
        rows = self.widget().minimumSizeHint()
        shortest = _SHORTEST * self.fontMetrics().height()
        return QSize(rows.width() + self.verticalScrollBar().sizeHint().width(), min(rows.height(), shortest))

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # a row was shown, hidden or resized: the minimum width may change
        return super().eventFilter(watched, event)


def _grows(widget: "QWidget | None") -> bool:
    return widget is not None and widget.sizePolicy().verticalPolicy() in _GROWING
