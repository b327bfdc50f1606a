"""Read-only result tables of the docks: rows selected whole, columns sized to their contents, numbers
sorted by value."""

import math
from collections.abc import Sequence

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem


def results_table(columns: Sequence[tuple[str, str]], *, rows: int) -> QTableWidget:
    """An empty table of ``columns`` (header, tooltip), about ``rows`` rows high; wider contents scroll.

    Sorting is off until the table is filled (see :func:`fill_sortable`): the rows stay in the order given
    until the user clicks a header.
    """
    table = QTableWidget(0, len(columns))
    for column, (header, tooltip) in enumerate(columns):
        item = QTableWidgetItem(header)
        item.setToolTip(tooltip)
        table.setHorizontalHeaderItem(column, item)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(True)  # the columns fill the width; wider ones scroll
    table.verticalHeader().hide()
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
    line = table.fontMetrics().height() + 8
    table.setMinimumHeight((rows + 1) * line + 2 * table.frameWidth())
    return table


def fill_sortable(table: QTableWidget, rows: Sequence[Sequence[QTableWidgetItem]]) -> None:
    """Replace the rows of ``table``, shown in the order given; clicking a header then sorts them."""
    table.setSortingEnabled(False)
    table.clearSelection()
    table.setRowCount(len(rows))
    for i, items in enumerate(rows):
        for j, item in enumerate(items):
            table.setItem(i, j, item)
    table.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # no column sorted yet
    table.setSortingEnabled(True)


class NumberItem(QTableWidgetItem):
    """A cell that shows a formatted number and sorts by its value (empty for None, sorted first)."""

    def __init__(self, value: "float | None", fmt: str) -> None:
        super().__init__("" if value is None else fmt.format(value))
        self.value = -math.inf if value is None else value
        self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        if isinstance(other, NumberItem):
            return self.value < other.value
        return super().__lt__(other)
