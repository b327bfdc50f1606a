"""A small live plot of the training and validation loss, painted with QPainter (no plotting library).

The loss axis is logarithmic, and its range is set by the validation points, the pretrained model's level
and the bulk of the training curve, not by its spikes: a few noisy steps (early ones are often ten times the
rest) would otherwise squeeze what the user watches for, validation against the dashed reference, into a
line at the bottom.
"""

import math

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPaintEvent, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

_TRAIN = QColor("#4fa3ff")
_VAL = QColor("#ffa348")
_REFERENCE = QColor("#b0b0b0")
_AXES = QColor("#808080")
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 64, 10, 22, 24


class LossPlot(QWidget):
    """Training loss against epoch (a line), validation loss (dots) and a dashed reference level.

    The reference is the validation loss of the pretrained model, so a validation dot below the dashed line
    means the fine-tuned model already beats the model it started from.
    """

    def __init__(self, parent: "QWidget | None" = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self._train: list[tuple[float, float]] = []
        self._val: list[tuple[float, float]] = []
        self._reference: float | None = None

    @property
    def train_points(self) -> tuple[tuple[float, float], ...]:
        """The (epoch, loss) points of the training curve."""
        return tuple(self._train)

    @property
    def val_points(self) -> tuple[tuple[float, float], ...]:
        """The (epoch, loss) points of the validation curve."""
        return tuple(self._val)

    @property
    def reference(self) -> "float | None":
        """The pretrained model's validation loss, drawn as a dashed line."""
        return self._reference

    def clear(self) -> None:
        self._train.clear()
        self._val.clear()
        self._reference = None
        self.update()

    def add_train(self, epoch: float, loss: float) -> None:
        if math.isfinite(loss):
            self._train.append((epoch, loss))
            self.update()

    def add_val(self, epoch: float, loss: float) -> None:
        if math.isfinite(loss):
            self._val.append((epoch, loss))
            self.update()

    def set_reference(self, loss: float) -> None:
        self._reference = loss
        self.update()

    def _ranges(self) -> tuple[float, float, float, float]:
        """The plotted epoch range and loss range (log10 of the L1)."""
        points = self._train + self._val
        xs = [x for x, _ in points] or [0.0]
        y0, y1 = loss_range([y for _, y in self._train], [y for _, y in self._val], self._reference)
        return min(0.0, *xs), max(1.0, *xs), y0, y1

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = self.palette().windowText().color()
        area = QRectF(
            _MARGIN_LEFT,
            _MARGIN_TOP,
            max(1, self.width() - _MARGIN_LEFT - _MARGIN_RIGHT),
            max(1, self.height() - _MARGIN_TOP - _MARGIN_BOTTOM),
        )
        painter.setPen(QPen(_AXES, 1))
        painter.drawRect(area)
        if not self._train and not self._val and self._reference is None:
            painter.setPen(text)
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "the loss appears here during training")
            return
        x0, x1, y0, y1 = self._ranges()

        def to_px(x: float, y: float) -> QPointF:
            return QPointF(
                area.left() + (x - x0) / (x1 - x0) * area.width(),
                area.bottom() - (math.log10(max(y, 1e-12)) - y0) / (y1 - y0) * area.height(),
            )

        painter.setPen(text)
        for y, align in ((y1, Qt.AlignmentFlag.AlignTop), (y0, Qt.AlignmentFlag.AlignBottom)):
            label = QRectF(0, area.top() - 2, _MARGIN_LEFT - 4, area.height() + 4)
            painter.drawText(label, align | Qt.AlignmentFlag.AlignRight, f"{10**y:.3g}")
        middle = QRectF(0, area.top(), _MARGIN_LEFT - 4, area.height())
        painter.drawText(
            middle, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, "L1 loss\n(log)"
        )
        below = QRectF(area.left(), area.bottom() + 2, area.width(), _MARGIN_BOTTOM - 2)
        painter.drawText(below, Qt.AlignmentFlag.AlignLeft, f"{x0:.3g}")
        painter.drawText(below, Qt.AlignmentFlag.AlignHCenter, "epoch")
        painter.drawText(below, Qt.AlignmentFlag.AlignRight, f"{x1:.3g}")

        painter.setClipRect(area)
        if self._reference is not None:
            painter.setPen(QPen(_REFERENCE, 1.5, Qt.PenStyle.DashLine))
            level = to_px(x0, self._reference).y()
            painter.drawLine(QPointF(area.left(), level), QPointF(area.right(), level))
        if self._train:
            path = QPainterPath(to_px(*self._train[0]))
            for point in self._train[1:]:
                path.lineTo(to_px(*point))
            painter.setPen(QPen(_TRAIN, 1.5))
            painter.drawPath(path)
        painter.setClipping(False)  # a marker on the frame is drawn whole
        painter.setPen(QPen(_VAL, 1.5))
        painter.setBrush(_VAL)
        previous = None
        for point in self._val:
            centre = to_px(*point)
            painter.drawEllipse(centre, 3.0, 3.0)
            if previous is not None:
                painter.drawLine(previous, centre)
            previous = centre

        legend = (("train", _TRAIN), ("validation", _VAL), ("pretrained (val.)", _REFERENCE))
        x = area.left()
        for name, colour in legend:
            painter.setPen(QPen(colour, 3))
            painter.drawLine(QPointF(x, 10), QPointF(x + 14, 10))
            painter.setPen(text)
            painter.drawText(QPointF(x + 18, 14), name)
            x += 26 + painter.fontMetrics().horizontalAdvance(name)


def loss_range(train: "list[float]", val: "list[float]", reference: "float | None") -> tuple[float, float]:
    """The plotted loss range, as log10 of the L1: all of validation and the reference, and the training
    curve from its lowest point to its 95th percentile (spikes above are cut at the top edge)."""
    train = [y for y in train if y > 0]
    shown = [y for y in (*val, *([] if reference is None else [reference])) if y > 0]
    if train:
        shown += [min(train), float(np.percentile(train, 95))]
    if not shown:
        return -1.0, 0.0
    low, high = math.log10(min(shown)), math.log10(max(shown))
    pad = (high - low) * 0.08 or 0.05
    return low - pad, high + pad
