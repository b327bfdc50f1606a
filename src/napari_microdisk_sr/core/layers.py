"""World-coordinate geometry of layers made from other layers (napari-free: plain tuples in, tuples out)."""

from collections.abc import Sequence


def upscaled_geometry(
    scale: Sequence[float], translate: Sequence[float], factor: int, *, spatial_axes: int = 2
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Scale and translate of an image upscaled ``factor`` times along its last ``spatial_axes`` axes.

    napari places the centre of pixel ``i`` at ``translate + i * scale``. In an upscaled image, pixel ``j``
    covers ``[j / factor, (j + 1) / factor)`` of the input's pixel grid, so its centre lies at input pixel
    ``(j + 0.5) / factor - 0.5``; matching both gives ``scale / factor`` and a shift of
    ``-scale * (1 - 1 / factor) / 2`` (``-0.375 * scale`` for x4).

    Parameters
    ----------
    scale, translate : sequence of float, length ndim
        The input layer's ``scale`` and ``translate``.
    factor : int
        The upscaling factor.
    spatial_axes : int
        How many trailing axes were upscaled (leading T/Z axes keep their geometry).
    """
    if len(scale) != len(translate):
        raise ValueError("scale and translate must have the same length")
    lead = len(scale) - spatial_axes
    new_scale = [float(s) for s in scale]
    new_translate = [float(t) for t in translate]
    for axis in range(lead, len(scale)):
        new_translate[axis] -= new_scale[axis] * (1.0 - 1.0 / factor) / 2.0
        new_scale[axis] /= factor
    return tuple(new_scale), tuple(new_translate)


def region_geometry(
    scale: Sequence[float], translate: Sequence[float], factor: int, origin: Sequence[int]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Scale and translate of a window of an upscaled image: its pixels lie where the whole result's do.

    Parameters
    ----------
    scale, translate : sequence of float, length ndim
        The input layer's ``scale`` and ``translate``.
    factor : int
        The upscaling factor (of the last two axes).
    origin : sequence of int, length ndim
        The window's first pixel in the input layer's data (the plane's index on leading axes, then the
        row and column): the window's output pixel 0 is the whole result's pixel ``origin * factor``.
    """
    new_scale, whole = upscaled_geometry(scale, translate, factor)
    lead = len(scale) - 2
    shift = [o * s for o, s in zip(origin[:lead], scale[:lead], strict=True)]
    shift += [o * factor * s for o, s in zip(origin[lead:], new_scale[lead:], strict=True)]
    return new_scale, tuple(t + d for t, d in zip(whole, shift, strict=True))
