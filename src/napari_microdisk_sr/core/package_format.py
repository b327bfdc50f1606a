"""What a model package declares, shared by its writer (:mod:`.export`) and its README
(:mod:`.package_readme`):

- the input types it accepts (:data:`EXPORT_DTYPES`) and the step of its input sizes;
- the value mapping of its pre- and post-processing (:class:`ValueMapping`, chosen by :func:`value_mapping`
  from the input type and the intensity setting), and the same maps in numpy for its test tensors;
- the name of its TorchScript weights file (the state dict's, ``weights.pth``, is :mod:`.package_weights`' as
  it reads packages back);
- the citation of Real-ESRGAN it carries.
"""

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .intensity import Intensity

__all__ = [
    "EXPORT_DTYPES",
    "REAL_ESRGAN_CITATION",
    "REAL_ESRGAN_DOI",
    "SIZE_STEP",
    "TORCHSCRIPT_FILE",
    "ValueMapping",
    "from_unit",
    "to_unit",
    "value_mapping",
]

EXPORT_DTYPES = ("uint8", "uint16", "float32")
"""Input types a package can declare."""
TORCHSCRIPT_FILE = "weights_torchscript.pt"
REAL_ESRGAN_CITATION = (
    "Wang X, Xie L, Dong C, Shan Y. Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure "
    "Synthetic Data. IEEE/CVF International Conference on Computer Vision Workshops (ICCVW), 2021."
)
REAL_ESRGAN_DOI = "10.1109/ICCVW54120.2021.00217"
SIZE_STEP = 16
"""Step of the input sizes the package accepts (a multiple of every network's size multiple)."""


@dataclass(frozen=True)
class ValueMapping:
    """How the package maps input values to ``[0, 1]`` and the output back: ``unit = (x - low) / span``."""

    dtype: str
    low: float
    high: float

    @property
    def fixed(self) -> bool:
        """Whether the range is fixed (integers) rather than the min/max of each image (floats)."""
        return self.dtype != "float32"

    def describe(self) -> str:
        if not self.fixed:
            return "float32 images: each image's minimum and maximum map to 0 and 1; the output is in [0, 1]"
        return (
            f"{self.dtype} values {self.low:g} to {self.high:g} map linearly to 0 and 1; the output, clipped "
            f"to [0, 1], is mapped back to {self.low:g} to {self.high:g} (float32)"
        )


def value_mapping(dtype: "str | None", intensity: "Intensity | None", *, given: bool) -> ValueMapping:
    """The package's mapping for ``dtype`` by ``intensity`` (``given`` by the user, else the run's)."""
    bit_depth = intensity.bits if intensity is not None else None
    if dtype is None:
        dtype = "uint16" if bit_depth is not None else "uint8"
    if dtype not in EXPORT_DTYPES:
        raise InputError(f"input dtype must be one of {', '.join(EXPORT_DTYPES)}, not {dtype!r}")
    if dtype == "float32":
        if given and intensity is not None and intensity.mode in ("bits", "percentile"):
            raise InputError(
                f"a float32 package maps each image by its min/max; intensity {intensity} does not apply, "
                "give none"
            )
        return ValueMapping(dtype, 0.0, 1.0)
    if intensity is not None and intensity.for_dtype(dtype).mode == "percentile":
        raise InputError(
            f"a bioimage.io package cannot invert a percentile map (intensity {intensity} for {dtype} "
            "input); export with --intensity range or bits:N (the model's fine-tuning used "
            f"{intensity}: choose the range closest to its data)"
        )
    bits = 8 * np.dtype(dtype).itemsize
    if bit_depth is not None and bit_depth > bits:
        raise InputError(f"a {dtype} input holds at most {bits} bits, not {bit_depth}")
    return ValueMapping(dtype, 0.0, float(2 ** (bit_depth or bits) - 1))


def to_unit(values: np.ndarray, mapping: ValueMapping) -> np.ndarray:
    """The pre-processing the package declares, in numpy (float32)."""
    work = values.astype(np.float32)
    if mapping.fixed:
        return (work - mapping.low) * np.float32(1.0 / (mapping.high - mapping.low))
    low, high = work.min(), work.max()
    return (work - low) / (high - low + np.float32(1e-6))


def from_unit(unit: np.ndarray, mapping: ValueMapping) -> np.ndarray:
    """The post-processing the package declares, in numpy (float32)."""
    work = np.clip(unit, 0.0, 1.0).astype(np.float32)
    if mapping.fixed:
        work = work * np.float32(mapping.high - mapping.low) + np.float32(mapping.low)
    return work.astype(np.float32)
