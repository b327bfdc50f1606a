"""Layer data <-> model tensors: validation, layouts, value normalisation and its exact inverse.

The networks see float32 RGB in ``[0, 1]`` laid out as ``(1, 3, h, w)``. Images arrive as napari layer data:
2D gray ``(H, W)``, RGB ``(H, W, 3)``, RGBA ``(H, W, 4)``, or stacks of those with leading axes
(``(T, H, W)``, ``(T, Z, H, W)``, ``(T, H, W, 3)``; four dimensions at most), which are processed plane by
plane. This module knows how to cut them into model inputs and how to put the outputs back:

- one setting, :class:`Intensity`, says how values map to the network's ``[0, 1]``:

  - ``percentile`` (as in CSBDeep): the 1st and 99.8th percentiles of the image's values (all planes and
    colours together) map to 0 and 1; values beyond them are not clipped on the way in, and the output is
    clipped only to what its dtype holds, so peaks above the high percentile keep their height. The map
    depends only on the image itself, and it is equivariant: twice the exposure gives twice the output;
  - ``range``: ``uint8`` and ``uint16`` by their dtype's full range (a dim ``uint16`` image stays 16-bit
    data, and looks dark to the network), other dtypes by the minimum and maximum of their colour values,
    as Fiji displays them (a signed type has no fixed black level, and by a 32- or 64-bit type's full range
    every level of real data would lie within float32 rounding of one value);
  - ``bits:N``: unsigned integers by ``[0, 2**N - 1]`` (a 12-bit camera writing uint16 files);
  - ``auto`` (the default): ``uint8`` by its range (what the pretrained networks were trained on), every
    other dtype by percentile;
- the inverse maps back to the input's dtype: floats stay float, integers are rounded; ``range`` and ``bits``
  clip to the range they mapped by (an ``int32`` image of values 0 to 99 comes back within 0 to 99);
- gray planes are replicated to three channels for the model and the three output channels averaged back;
- alpha never goes through the network: it is resized with bicubic interpolation and re-attached.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .errors import InputError
from .intensity import AUTO, RANGE, Intensity, check_bit_depth, percentile_range

MAX_NDIM = 4
MAX_CHANNELS = 8
"""The most channels a last axis is taken to hold when the two axes before it are larger."""


def validate_image(image: np.ndarray) -> None:
    """Raise :class:`InputError` if ``image`` cannot be upscaled; the message says why and how to fix it.

    Parameters
    ----------
    image : (..., H, W) or (..., H, W, C) ndarray
        Integer or float pixel data with 2 to 4 dimensions and only finite values.

    Raises
    ------
    InputError
        For boolean, complex or non-numeric dtypes, fewer than 2 or more than 4 dimensions, an empty array,
        or NaN/Inf values (their number is reported).
    """
    image = np.asarray(image)
    dtype = image.dtype
    if dtype.kind == "b":
        raise InputError(
            "image is boolean (a mask), not an intensity image; convert it to uint8 (0/255) first"
        )
    if dtype.kind == "c":
        raise InputError("image has complex values; pass the magnitude (np.abs) or the real part instead")
    if dtype.kind not in "uif":
        raise InputError(f"image dtype {dtype} is not supported; use an integer or float image")
    if image.ndim < 2:
        raise InputError(f"image has {image.ndim} dimension(s); an image needs at least 2 (H, W)")
    if image.ndim > MAX_NDIM:
        raise InputError(
            f"image has {image.ndim} dimensions {image.shape}; at most {MAX_NDIM} are supported "
            "(e.g. T, Z, H, W or T, H, W, RGB): split the extra axes first"
        )
    if image.size == 0:
        raise InputError(f"image is empty (shape {image.shape})")
    if dtype.kind == "f":
        nan, inf = _count_nonfinite(image)
        if nan or inf:
            raise InputError(
                f"image has {nan:,} NaN and {inf:,} Inf value(s) out of {image.size:,}; "
                "replace them (e.g. np.nan_to_num) before upscaling"
            )


def _count_nonfinite(image: np.ndarray) -> tuple[int, int]:
    """Numbers of NaN and of infinite values, counted one 2D slice at a time (bounded temporary memory)."""
    nan = inf = 0
    for index in np.ndindex(*image.shape[:-2]):
        part = image[index]
        nan += int(np.count_nonzero(np.isnan(part)))
        inf += int(np.count_nonzero(np.isinf(part)))
    return nan, inf


def check_finite(values: np.ndarray, what: str) -> None:
    """Raise :class:`InputError` naming ``what`` if float ``values`` hold NaN or infinite values."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        bad = sum(_count_nonfinite(values))
        if bad:
            raise InputError(f"{what} has {bad:,} NaN/Inf value(s); replace them (e.g. np.nan_to_num) first")


@dataclass(frozen=True)
class ImageLayout:
    """How an image's axes split into planes, rows, columns and channels.

    Attributes
    ----------
    leading : tuple of int
        Sizes of the axes before the plane (T, Z, ...); empty for a single 2D image.
    height, width : int
        Size of each plane in pixels.
    channels : {1, 3, 4}
        1 for gray (no channel axis), 3 for RGB, 4 for RGBA (the last axis holds the channels).
    """

    leading: tuple[int, ...]
    height: int
    width: int
    channels: int

    @property
    def is_gray(self) -> bool:
        return self.channels == 1

    @property
    def has_alpha(self) -> bool:
        return self.channels == 4

    @property
    def planes(self) -> int:
        """Number of 2D planes (product of the leading axes)."""
        return int(np.prod(self.leading, dtype=np.int64))

    def plane_indices(self) -> Iterator[tuple[int, ...]]:
        """Index tuples selecting each plane, ``image[index]`` being ``(H, W)`` or ``(H, W, C)``."""
        return np.ndindex(*self.leading)

    def output_shape(self, scale: int) -> tuple[int, ...]:
        """Shape of the image upscaled by ``scale``: every plane ``(H * scale, W * scale)``."""
        channel_axis = () if self.is_gray else (self.channels,)
        return (*self.leading, self.height * scale, self.width * scale, *channel_axis)


def image_layout(shape: Sequence[int], *, rgb: "bool | None" = None) -> ImageLayout:
    """Interpret an image shape as gray, RGB or RGBA planes with optional leading axes.

    Parameters
    ----------
    shape : sequence of int
        The image's shape, 2 to 4 dimensions.
    rgb : bool, optional
        Whether the last axis holds RGB(A) channels (napari's ``layer.rgb``). By default a last axis of size
        3 or 4 on an image of 3 or more dimensions is taken as channels. Channels that are not RGB are
        refused, never read as a stack of narrow planes: a last axis of 1 or 2 narrower than the axis before
        it, or of 5 to :data:`MAX_CHANNELS` after two axes larger than that (``(32, 32, 5)``). Pass
        ``rgb=False`` for a stack whose planes happen to be that narrow.

    Returns
    -------
    ImageLayout
    """
    shape = tuple(int(n) for n in shape)
    if not 2 <= len(shape) <= MAX_NDIM:
        raise InputError(f"image shape {shape} has {len(shape)} dimensions; 2 to {MAX_NDIM} are supported")
    if rgb is None:
        channels = shape[-1]
        if len(shape) >= 3 and _looks_like_channels(shape):
            raise InputError(
                f"image shape {shape} ends in an axis of {channels}, which looks like colour channels: give "
                f"gray (H, W) or RGB(A) (H, W, 3|4) images ({_CHANNELS_FIX.get(channels, _SPLIT_CHANNELS)})"
            )
        rgb = len(shape) >= 3 and channels in (3, 4)
    if not rgb:
        return ImageLayout(shape[:-2], shape[-2], shape[-1], 1)
    if len(shape) < 3 or shape[-1] not in (3, 4):
        raise InputError(f"image shape {shape} is not RGB/RGBA: the last axis must have 3 or 4 channels")
    return ImageLayout(shape[:-3], shape[-3], shape[-2], shape[-1])


def _looks_like_channels(shape: tuple[int, ...]) -> bool:
    """Whether the last axis of a shape of 3 or more dimensions looks like channels that are not RGB(A)."""
    channels = shape[-1]
    if channels in (1, 2):
        return shape[-2] > channels
    return 5 <= channels <= MAX_CHANNELS and min(shape[-3], shape[-2]) > MAX_CHANNELS


_SPLIT_CHANNELS = (
    "split the channels into gray images and upscale each: in napari add the data with channel_axis=-1, "
    "in Fiji use Image > Color > Split Channels, and save each channel as a separate image"
)
_CHANNELS_FIX = {
    1: "squeeze the single channel",
    2: f"drop the alpha of a gray+alpha image, or {_SPLIT_CHANNELS}",
}


@dataclass(frozen=True)
class Normalization:
    """The affine map ``[low, high] -> [0, 1]`` of an image's values, and its inverse back to ``dtype``.

    Attributes
    ----------
    dtype : numpy.dtype
        The image's dtype, restored by :meth:`from_unit`.
    low, high : float
        The values mapped to 0 and 1. ``low == high`` (a constant image) is allowed: every value maps to 0
        and comes back as ``low``.
    clip : bool
        Whether the way back clips to ``[0, 1]``, that is to ``[low, high]`` (``range`` and ``bits`` modes);
        else (``percentile``) it clips only to what ``dtype`` can hold, so values beyond the range keep
        their height.
    """

    dtype: np.dtype
    low: float
    high: float
    clip: bool = True

    def __post_init__(self) -> None:
        if not self.high >= self.low:
            raise InputError(f"normalisation range [{self.low}, {self.high}] is empty")

    @property
    def _work_dtype(self) -> type:
        """float64 where float32 cannot hold the dtype's values exactly (32/64-bit ints, float64)."""
        return np.float64 if self.dtype.itemsize >= 4 and self.dtype != np.float32 else np.float32

    def to_unit(self, values: np.ndarray) -> np.ndarray:
        """Map ``values`` (any shape, of :attr:`dtype`) to float32, ``[low, high]`` to ``[0, 1]`` (values
        outside the range are not clipped); returns a new array."""
        span = self.high - self.low
        work = np.asarray(values).astype(self._work_dtype)
        work -= self.low
        if span > 0:
            work /= span
        return work.astype(np.float32, copy=False)

    def from_unit(self, unit: np.ndarray) -> np.ndarray:
        """Map unit values back to :attr:`dtype`, ``[0, 1]`` to ``[low, high]``: the exact inverse of
        :meth:`to_unit` up to rounding.

        With :attr:`clip`, values are clipped to ``[0, 1]`` first; without it only the result is clipped, to
        what the dtype holds. Integers are rounded to the nearest value.
        """
        work = np.asarray(unit, dtype=self._work_dtype)
        work = np.clip(work, 0.0, 1.0) if self.clip else work.copy()
        work *= self.high - self.low
        work += self.low
        if self.dtype.kind in "iu":
            np.rint(work, out=work)
        np.clip(work, *self._out_bounds(work.dtype), out=work)
        return work.astype(self.dtype)

    def _out_bounds(self, float_dtype: np.dtype) -> tuple[float, float]:
        """The interval results are clipped to, as floats of ``float_dtype`` that convert back safely."""
        if self.dtype.kind in "iu":
            return _exact_float_bounds(self.dtype, float_dtype)
        if self.clip:
            return self.low, self.high
        info = np.finfo(self.dtype)
        return float(info.min), float(info.max)


def _exact_float_bounds(dtype: np.dtype, float_dtype: np.dtype) -> tuple[float, float]:
    """The integer dtype's range as floats that convert back without overflow (int64's max rounds up)."""
    info = np.iinfo(dtype)
    low, high = float_dtype.type(info.min), float_dtype.type(info.max)
    if int(high) > info.max:
        high = np.nextafter(high, float_dtype.type(-np.inf))
    return float(low), float(high)


def normalizations_for(
    image: np.ndarray, layout: ImageLayout, *, intensity: Intensity = AUTO
) -> tuple[Normalization, "Normalization | None"]:
    """The colour and alpha normalisations of an image: computed once, from the whole image, and used for
    every plane, tile or region of it.

    Parameters
    ----------
    image : ndarray
        The validated image (see :func:`validate_image`).
    layout : ImageLayout
        Its layout (see :func:`image_layout`).
    intensity : Intensity
        How values map (see :class:`Intensity`); the default is ``auto``.

    Returns
    -------
    color : Normalization
        See :func:`value_range`, over the gray or RGB values of all planes together.
    alpha : Normalization or None
        The alpha channel's, computed on its own (its dtype's range, or ``[min, max]``); None without
        alpha. Alpha never goes through the network, so its range only needs to hold its values.
    """
    color = image[..., :3] if layout.has_alpha else image
    alpha = image[..., 3] if layout.has_alpha else None
    mode = intensity.for_dtype(color.dtype).mode
    return (
        Normalization(color.dtype, *value_range(color, intensity=intensity), clip=mode != "percentile"),
        None if alpha is None else Normalization(alpha.dtype, *value_range(alpha, intensity=RANGE)),
    )


def value_range(values: np.ndarray, *, intensity: Intensity = AUTO) -> tuple[float, float]:
    """The values of an image that map to 0 and 1 for the networks.

    Parameters
    ----------
    values : ndarray
        Integer or float values, finite.
    intensity : Intensity
        How values map (see :class:`Intensity`); the default is ``auto``.

    Returns
    -------
    low, high : float
        ``range``: the dtype's range for uint8 and uint16, else (see :func:`maps_by_own_range`) the values'
        minimum and maximum. ``bits``: ``[0, 2**bits - 1]``. ``percentile``: the values' low and high
        percentiles (see :func:`percentile_range`).

    Raises
    ------
    InputError
        For ``bits`` with signed or float data, more bits than the dtype holds, or values above
        ``2**bits - 1`` (not data of that depth).
    """
    values = np.asarray(values)
    mode = intensity.for_dtype(values.dtype)
    if mode.mode == "percentile":
        return percentile_range(values, mode.percentiles)
    if mode.mode == "range":
        if maps_by_own_range(values.dtype):
            return float(values.min()), float(values.max())
        info = np.iinfo(values.dtype)
        return float(info.min), float(info.max)
    bit_depth = check_bit_depth(mode.bits, values.dtype)
    high = 2**bit_depth - 1
    peak = int(values.max()) if values.size else 0
    if peak > high:
        raise InputError(
            f"values reach {peak}, above {high}, the largest {bit_depth}-bit value: give the bit depth the "
            "data were recorded with (or intensity percentile)"
        )
    return 0.0, float(high)


def maps_by_own_range(dtype: "np.dtype | type") -> bool:
    """Whether images of ``dtype`` map by their own minimum and maximum, not by the dtype's range.

    True for floats, signed integers and unsigned integers wider than 16 bits; False for uint8 and uint16.
    """
    dtype = np.dtype(dtype)
    return dtype.kind in "fi" or (dtype.kind == "u" and dtype.itemsize > 2)


def bit_depth_hint(values: np.ndarray, what: str, how: str) -> "str | None":
    """A warning for an image that seems to hold fewer bits than its dtype (see :func:`likely_bit_depth`).

    ``what`` names the image; ``how`` says how to give its bit depth, with ``{bits}`` filled in. None when
    there is nothing to say.
    """
    values = np.asarray(values)
    bits = likely_bit_depth(values)
    if bits is None:
        return None
    darker = 2 ** (8 * values.dtype.itemsize - bits)
    return (
        f"{what} reaches only {int(values.max())}: if it holds {bits}-bit data, {how.format(bits=bits)}; "
        f"mapped by the full {values.dtype} range, it looks {darker}x darker to the network"
    )


def likely_bit_depth(values: np.ndarray) -> "int | None":
    """The usual camera bit depth (10, 12 or 14) that a uint16 image seems to hold.

    None when its values use more than a quarter of the dtype's range, or for other dtypes (wider ones map
    by their own range). A hint to show the user, never applied on its own: a dim 16-bit image looks the
    same.
    """
    values = np.asarray(values)
    if values.dtype != np.uint16 or not values.size:
        return None
    needed = int(values.max()).bit_length()
    if not needed or needed > 8 * values.dtype.itemsize - 2:  # blank, or more than a quarter of the range
        return None
    return next((depth for depth in (10, 12, 14) if depth >= needed), None)


_TORCH_DTYPES = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
}
"""Dtypes whose values are mapped on the model's device (CPU or CUDA): float32 arithmetic is exact enough for
them (as in :meth:`Normalization.to_unit`). Others (uint16 included: torch has few operations for it) are
mapped by numpy on the CPU, as are all values for Apple MPS, whose float division is not guaranteed to be
correctly rounded."""


def _maps_on(device: torch.device, dtype: np.dtype) -> bool:
    return device.type in ("cpu", "cuda") and dtype in _TORCH_DTYPES


def to_model_input(
    region: np.ndarray, norm: Normalization, device: "torch.device | None" = None
) -> torch.Tensor:
    """Turn a gray or RGB region into a network input.

    On the CPU and CUDA, values of the dtypes in :data:`_TORCH_DTYPES` are sent raw and mapped on the device
    (a quarter of the bytes to copy for uint8, and no float work on the host); the result is the same as
    :meth:`Normalization.to_unit` to the last bit, since both do the same correctly rounded float32
    operations. Other values are mapped by numpy.

    Parameters
    ----------
    region : (h, w) or (h, w, 3) ndarray
        Gray or RGB values (alpha removed).
    norm : Normalization
        The image's colour normalisation.
    device : torch.device, optional
        Where the input goes (default: the CPU).

    Returns
    -------
    (1, 3, h, w) float32 Tensor
        On ``device``, in ``[0, 1]``; gray is replicated to three channels. RGB input comes out in the
        channels-last memory format (a view of the HWC layout).
    """
    device = torch.device("cpu") if device is None else device
    if _maps_on(device, region.dtype) and norm.dtype == region.dtype:
        unit = torch.from_numpy(np.array(region)).to(device).float()  # our own copy: mapped in place below
        unit.sub_(norm.low)
        if norm.high > norm.low:
            # a divisor on the device: CUDA divides by a host scalar as a product with its reciprocal, which
            # can be one bit off the quotient numpy computes
            unit.div_(torch.tensor(norm.high - norm.low, dtype=torch.float32, device=device))
    else:
        unit = torch.from_numpy(norm.to_unit(region)).to(device)
    if unit.ndim == 2:
        return unit.expand(1, 3, *unit.shape)
    return unit.permute(2, 0, 1).unsqueeze(0)


def from_model_output(output: torch.Tensor, norm: Normalization, *, gray: bool) -> np.ndarray:
    """Turn a network output back into image values.

    The mapping runs on the output's device where :func:`to_model_input` maps there too, so that only the
    final values (a quarter of the bytes for uint8) come back; the result is the same as
    :meth:`Normalization.from_unit` to the last bit.

    Parameters
    ----------
    output : (1, 3, H, W) Tensor
        The network's output, on any device; with ``norm.clip``, values outside ``[0, 1]`` are clipped
        channel by channel (before gray averaging).
    norm : Normalization
        The image's colour normalisation.
    gray : bool
        Average the three channels into one gray plane.

    Returns
    -------
    (H, W) or (H, W, 3) ndarray
        Of ``norm.dtype``; in ``[norm.low, norm.high]`` with ``norm.clip``, else within the dtype's range.
    """
    out = output[0].float()
    if norm.clip:
        out = out.clamp(0.0, 1.0)
    out = out.mean(dim=0) if gray else out.permute(1, 2, 0)
    if not _maps_on(out.device, norm.dtype):
        return norm.from_unit(out.cpu().numpy())
    out = out.mul(norm.high - norm.low).add_(norm.low)
    if norm.dtype.kind in "iu":
        out.round_()
    out.clamp_(*norm._out_bounds(np.dtype(np.float32)))
    return out.to(_TORCH_DTYPES[norm.dtype]).cpu().numpy()


def resize_alpha(alpha: np.ndarray, scale: int, norm: Normalization) -> np.ndarray:
    """Upscale an alpha channel with bicubic interpolation (OpenCV ``INTER_CUBIC``).

    The result depends on the input pixels within 2 pixels of each source position, so a region cut with a
    margin of at least 2 pixels (or up to the image border) gives exactly the same values as the whole plane.

    Parameters
    ----------
    alpha : (h, w) ndarray
        Alpha values of :attr:`norm.dtype`.
    scale : int
        Upscaling factor.
    norm : Normalization
        The alpha normalisation; overshoot is clipped to its range.

    Returns
    -------
    (h * scale, w * scale) ndarray of ``norm.dtype``
    """
    h, w = alpha.shape
    resized = cv2.resize(norm.to_unit(alpha), (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)
    return norm.from_unit(resized)
