"""Windows of an image's planes in input pixels: what a preview or ``upscale --region`` works on."""

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["Region"]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class Region:
    """A window of an image's planes in input pixels: rows ``y0:y1`` and columns ``x0:x1``."""

    y0: int
    y1: int
    x0: int
    x1: int

    def __post_init__(self) -> None:
        values = (self.y0, self.y1, self.x0, self.x1)
        if not all(_is_int(v) and v >= 0 for v in values) or self.y1 <= self.y0 or self.x1 <= self.x0:
            raise InputError(f"a region needs 0 <= y0 < y1 and 0 <= x0 < x1 in pixels, got {values}")

    @classmethod
    def parse(cls, text: str) -> "Region":
        """``"Y0:Y1,X0:X1"``, as the command line takes it."""
        try:
            rows, cols = text.split(",")
            (y0, y1), (x0, x1) = (tuple(int(v) for v in part.split(":")) for part in (rows, cols))
        except ValueError:
            raise InputError(
                f"a region is Y0:Y1,X0:X1 in input pixels, e.g. 0:128,64:192; got {text!r}"
            ) from None
        return cls(y0, y1, x0, x1)

    def check_inside(self, height: int, width: int) -> None:
        """Raise :class:`InputError` unless the region lies inside a ``height`` x ``width`` plane."""
        if self.y1 > height or self.x1 > width:
            raise InputError(
                f"region {self.y0}:{self.y1},{self.x0}:{self.x1} reaches beyond the {height}x{width} image"
            )

    def grown(self, pad: int, multiple: int, height: int, width: int) -> "Region":
        """The region with ``pad`` pixels of context on each side, clipped to the plane, its corners on
        multiples of ``multiple`` (the model's input size rule)."""

        def down(v: int) -> int:
            return max(0, (v - pad) // multiple * multiple)

        def up(v: int, size: int) -> int:
            return min(size, _round_up(v + pad, multiple))

        return Region(down(self.y0), up(self.y1, height), down(self.x0), up(self.x1, width))
