"""How image values map to the networks' ``[0, 1]``: the :class:`Intensity` setting and the percentiles it
reads (see :mod:`.images` for the map itself and its inverse).

One setting serves fine-tuning, inference and measuring, and is recorded by its text form (``auto``,
``range``, ``bits:12``, ``percentile``, ``percentile:1,99.8``) in configurations and provenance. Percentiles
are those of ``np.percentile`` (linear interpolation); integers of up to 16 bits are counted in a histogram,
which also lets an image be counted in parts (:func:`value_counts`, :func:`percentiles_from_counts`).
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "AUTO",
    "DEFAULT_PERCENTILES",
    "INTENSITY_MODES",
    "INTENSITY_SYNTAX",
    "RANGE",
    "Intensity",
    "check_bit_depth",
    "lerp",
    "percentile_range",
    "percentiles_from_counts",
    "recorded_intensity",
    "value_counts",
]


def recorded_intensity(config: "dict[str, Any]") -> "Intensity | None":
    """The value mapping a saved configuration (a run's ``config.json``, a model sidecar's ``config``)
    records: its ``intensity``, or, written before that setting, its ``bit_depth`` (None meant ``range``);
    None if it records neither."""
    if "intensity" in config:
        return Intensity.parse(config["intensity"])
    if "bit_depth" in config:
        bits = config["bit_depth"]
        return RANGE if bits is None else Intensity("bits", bits=bits)
    return None


def _is_real(value: object) -> bool:
    """Whether ``value`` is a finite real number (not a bool)."""
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return real and bool(np.isfinite(value))


INTENSITY_MODES = ("auto", "range", "bits", "percentile")
"""The ways values can map to the network's ``[0, 1]`` (see :class:`Intensity`)."""
DEFAULT_PERCENTILES = (1.0, 99.8)
"""CSBDeep's default percentiles: the values that map to 0 and 1 in ``percentile`` mode."""
INTENSITY_SYNTAX = "auto, range, bits:N (1 to 64), percentile or percentile:LOW,HIGH (0 <= LOW < HIGH <= 100)"


@dataclass(frozen=True)
class Intensity:
    """How an image's values map to the network's ``[0, 1]`` and back (see the module notes).

    The same setting serves fine-tuning (both crops of a pair), inference and measuring, and is recorded in
    configurations and provenance by its text form (:meth:`parse` reads it back, ``str`` writes it).

    Attributes
    ----------
    mode : {"auto", "range", "bits", "percentile"}
        ``auto``: ``uint8`` by ``range``, every other dtype by ``percentile``. ``range``: ``uint8``/``uint16``
        by the dtype's range, other dtypes by their own minimum and maximum. ``bits``: unsigned integers by
        ``[0, 2**bits - 1]``. ``percentile``: the image's ``percentiles`` map to 0 and 1, as in CSBDeep.
    bits : int or None
        The bit depth of ``bits`` mode (1 to 64); None in the other modes.
    percentiles : (float, float)
        The low and high percentiles of ``percentile`` mode and of ``auto`` (0 <= low < high <= 100); only
        the defaults, :data:`DEFAULT_PERCENTILES`, with ``range`` and ``bits``.
    """

    mode: str = "auto"
    bits: "int | None" = None
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES

    def __post_init__(self) -> None:
        if self.mode not in INTENSITY_MODES:
            raise InputError(f"unknown intensity mode {self.mode!r}; give {INTENSITY_SYNTAX}")
        if (self.mode == "bits") != (self.bits is not None):
            raise InputError(
                "a bit depth goes with intensity mode bits and only with it (e.g. bits:12), "
                f"not mode {self.mode!r} with bits={self.bits!r}"
            )
        if self.bits is not None:
            object.__setattr__(self, "bits", check_bit_depth(self.bits))
        percentiles = self.percentiles
        if (
            not isinstance(percentiles, (tuple, list))
            or len(percentiles) != 2
            or not all(_is_real(p) for p in percentiles)
            or not 0 <= percentiles[0] < percentiles[1] <= 100
        ):
            raise InputError(
                f"percentiles must be two numbers 0 <= low < high <= 100 (e.g. 1, 99.8), not {percentiles!r}"
            )
        object.__setattr__(self, "percentiles", (float(percentiles[0]), float(percentiles[1])))
        if self.mode in ("range", "bits") and self.percentiles != DEFAULT_PERCENTILES:
            raise InputError(f"percentiles apply to modes auto and percentile, not {self.mode}")

    @classmethod
    def parse(cls, text: "str | Intensity") -> "Intensity":
        """An Intensity from its text form: ``auto``, ``range``, ``bits:12``, ``percentile``,
        ``percentile:1,99.8`` (``auto:1,99.8`` sets the percentiles ``auto`` uses). An Intensity is
        returned as it is."""
        if isinstance(text, Intensity):
            return text
        if not isinstance(text, str):
            raise InputError(f"intensity must be text ({INTENSITY_SYNTAX}), not {text!r}")
        mode, sep, arguments = text.strip().lower().partition(":")
        if mode not in INTENSITY_MODES:
            raise InputError(f"unknown intensity {text!r}; give {INTENSITY_SYNTAX}")
        if not sep:
            return cls(mode)
        try:
            if mode == "bits":
                return cls(mode, bits=int(arguments))
            if mode in ("auto", "percentile"):
                parts = arguments.split(",")
                if len(parts) != 2:
                    raise ValueError(f"{mode} takes two percentiles LOW,HIGH, not {len(parts)} number(s)")
                return cls(mode, percentiles=(float(parts[0]), float(parts[1])))
        except ValueError as exc:
            raise InputError(f"cannot read intensity {text!r} ({exc}); give {INTENSITY_SYNTAX}") from exc
        raise InputError(f"intensity {mode} takes no argument, not {text!r}; give {INTENSITY_SYNTAX}")

    def __str__(self) -> str:
        if self.mode == "bits":
            return f"bits:{self.bits}"
        if self.mode == "range" or self.percentiles == DEFAULT_PERCENTILES:
            return self.mode
        return f"{self.mode}:{self.percentiles[0]:g},{self.percentiles[1]:g}"

    def for_dtype(self, dtype: "np.dtype | type") -> "Intensity":
        """The mode that applies to images of ``dtype``: ``auto`` resolved, the others as they are."""
        if self.mode != "auto":
            return self
        if np.dtype(dtype) == np.uint8:
            return RANGE
        return Intensity("percentile", percentiles=self.percentiles)


AUTO = Intensity()
"""The default mapping: uint8 by its range, every other dtype by its 1st-99.8th percentiles."""
RANGE = Intensity("range")
"""The dtype's range for uint8/uint16, the minimum and maximum for other dtypes."""


def check_bit_depth(bit_depth: object, dtype: "np.dtype | None" = None) -> int:
    """``bit_depth`` as an int, checked to be 1 to 64 and, with ``dtype``, to fit an unsigned ``dtype``."""
    if (
        isinstance(bit_depth, bool)
        or not isinstance(bit_depth, (int, np.integer))
        or not 1 <= bit_depth <= 64
    ):
        raise InputError(f"bit depth must be a whole number from 1 to 64, not {bit_depth!r}")
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype.kind != "u":
            raise InputError(
                f"a bit depth applies to unsigned integer images, not {dtype}; choose another intensity "
                "(auto, range or percentile) for this image"
            )
        if bit_depth > 8 * dtype.itemsize:
            raise InputError(f"a {dtype} image holds at most {8 * dtype.itemsize} bits, not {bit_depth}")
    return int(bit_depth)


def percentile_range(values: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """The ``(low, high)`` percentiles of ``values``, as ``np.percentile`` computes them (linear).

    Integers of up to 16 bits are counted in a histogram, about a million values at a time, so no sorted
    copy of the image is made; other dtypes go through ``np.percentile``. When the two percentiles coincide
    (an image that is almost constant) the minimum and maximum are used instead, so the few other values
    are not blown up.
    """
    values = np.asarray(values)
    if values.dtype.kind in "iu" and values.dtype.itemsize <= 2:
        low, high = _histogram_percentiles(values, percentiles)
    else:
        low, high = (float(v) for v in np.percentile(values, percentiles))
    if high <= low:
        return float(values.min()), float(values.max())
    return low, high


_HISTOGRAM_CHUNK = 2**20
"""How many values :func:`percentile_range` counts at a time (bounds its temporary memory)."""


def _histogram_percentiles(values: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """np.percentile's linear interpolation between order statistics, read off a cumulative histogram."""
    info = np.iinfo(values.dtype)
    counts = np.zeros(int(info.max) - int(info.min) + 1, dtype=np.int64)
    values = values.reshape(1, -1) if values.ndim < 2 else values
    step = max(1, _HISTOGRAM_CHUNK // max(1, values[0].size))  # slices of the first axis, ~1M values each
    for start in range(0, values.shape[0], step):
        counts += value_counts(values[start : start + step])
    return percentiles_from_counts(counts, int(info.min), percentiles)


def value_counts(values: np.ndarray) -> np.ndarray:
    """How often each value of an integer dtype of up to 16 bits occurs in ``values``: one count per value
    of the dtype, from its minimum up (what :func:`percentiles_from_counts` reads)."""
    info = np.iinfo(values.dtype)
    flat = np.asarray(values).ravel().astype(np.int64) - int(info.min)
    return np.bincount(flat, minlength=int(info.max) - int(info.min) + 1)


def percentiles_from_counts(
    counts: np.ndarray, minimum: int, percentiles: tuple[float, float]
) -> tuple[float, float]:
    """The percentiles (``np.percentile``'s linear interpolation) of integer values counted in ``counts``,
    where ``counts[i]`` is how often ``minimum + i`` occurs; so an image can be counted in parts."""
    cumulative = np.cumsum(counts)
    last = int(cumulative[-1]) - 1
    result = []
    for percentile in percentiles:
        rank = percentile / 100 * last
        below = int(np.floor(rank))
        lower, upper = np.searchsorted(cumulative, [below, min(below + 1, last)], side="right")
        result.append(lerp(float(minimum + lower), float(minimum + upper), rank - below))
    return float(result[0]), float(result[1])


def lerp(low: float, high: float, t: float) -> float:
    """``np.percentile``'s linear interpolation between two neighbouring order statistics, rounded as numpy
    rounds it (from ``high`` down when ``t >= 0.5``), so that percentiles counted in parts equal its own."""
    span = high - low
    return high - span * (1 - t) if t >= 0.5 else low + span * t
