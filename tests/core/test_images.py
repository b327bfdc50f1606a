"""Layer data <-> model tensors: validation, layouts and the exact inverse of the value mapping."""

import numpy as np
import pytest
import torch

from napari_microdisk_sr.core.errors import InputError
from napari_microdisk_sr.core.images import (
    ImageLayout,
    Normalization,
    from_model_output,
    image_layout,
    likely_bit_depth,
    normalizations_for,
    resize_alpha,
    to_model_input,
    validate_image,
    value_range,
)
from napari_microdisk_sr.core.intensity import (
    AUTO,
    RANGE,
    Intensity,
    check_bit_depth,
    percentile_range,
    recorded_intensity,
)

# --- validation -----------------------------------------------------------------------------------------


def test_nan_and_inf_are_counted_in_a_one_line_message():
    image = np.zeros((2, 8, 8), np.float32)
    image[0, 1, 1] = np.nan
    image[1, 2, 2:5] = np.nan
    image[1, 0, 0] = -np.inf
    with pytest.raises(InputError, match=r"4 NaN and 1 Inf value\(s\) out of 128") as info:
        validate_image(image)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((4, 4), bool), "boolean"),
        (np.zeros((4, 4), np.complex64), "complex"),
        (np.zeros((4, 4), object), "not supported"),
        (np.zeros((4, 4), "U1"), "not supported"),
        (np.zeros((1, 2, 4, 4, 3), np.uint8), "5 dimensions"),
        (np.zeros(16, np.uint8), "1 dimension"),
        (np.zeros((0, 4), np.uint8), "empty"),
        (np.zeros((3, 0, 4), np.float32), "empty"),
    ],
)
def test_unusable_images_are_refused(image, match):
    with pytest.raises(InputError, match=match):
        validate_image(image)


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float16, np.float32, np.float64]
)
def test_usable_images_pass(dtype):
    validate_image(np.ones((2, 3, 5, 4), dtype))


# --- layouts --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "rgb", "expected"),
    [
        ((5, 7), None, ImageLayout((), 5, 7, 1)),
        ((5, 7, 3), None, ImageLayout((), 5, 7, 3)),
        ((5, 7, 4), None, ImageLayout((), 5, 7, 4)),
        ((2, 5, 7), None, ImageLayout((2,), 5, 7, 1)),
        ((2, 3, 5, 7), None, ImageLayout((2, 3), 5, 7, 1)),
        ((2, 5, 7, 3), None, ImageLayout((2,), 5, 7, 3)),
        ((6, 5, 3), False, ImageLayout((6,), 5, 3, 1)),  # a stack of 3-pixel-wide planes
        ((5, 7, 4), True, ImageLayout((), 5, 7, 4)),
    ],
)
def test_layouts(shape, rgb, expected):
    assert image_layout(shape, rgb=rgb) == expected


def test_layout_plane_indices_and_output_shape():
    layout = image_layout((2, 3, 5, 7))
    assert layout.planes == 6
    assert list(layout.plane_indices())[:2] == [(0, 0), (0, 1)]
    assert layout.output_shape(4) == (2, 3, 20, 28)
    assert image_layout((5, 7, 4)).output_shape(2) == (10, 14, 4)
    assert image_layout((5, 7)).planes == 1


@pytest.mark.parametrize("shape", [(5, 7, 1), (5, 7, 2), (3, 5, 7, 2)])
def test_one_or_two_channels_last_are_refused_unless_declared_a_stack(shape):
    with pytest.raises(
        InputError, match=rf"ends in an axis of {shape[-1]}, which looks like colour channels"
    ):
        image_layout(shape)
    assert image_layout(shape, rgb=False) == ImageLayout(shape[:-2], shape[-2], shape[-1], 1)
    assert image_layout((5, 2, 2)) == ImageLayout((5,), 2, 2, 1)  # 2x2 planes: a stack


@pytest.mark.parametrize("shape", [(32, 32, 5), (2, 32, 32, 6), (32, 32, 8), (9, 7, 2)])
def test_a_narrow_last_axis_is_refused_as_channels_with_how_to_split_them(shape):
    with pytest.raises(InputError, match=rf"ends in an axis of {shape[-1]},.*split the channels") as info:
        image_layout(shape)
    assert "channel_axis=-1" in str(info.value)
    assert image_layout(shape, rgb=False) == ImageLayout(shape[:-2], shape[-2], shape[-1], 1)


def test_a_last_axis_wider_than_channels_or_after_small_axes_is_a_stack():
    assert image_layout((32, 32, 9)) == ImageLayout((32,), 32, 9, 1)
    assert image_layout((3, 6, 5)) == ImageLayout((3,), 6, 5, 1)
    assert image_layout((32, 8, 5)) == ImageLayout((32,), 8, 5, 1)


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 2)])
def test_rgb_true_needs_a_channel_axis(shape):
    with pytest.raises(InputError, match="not RGB"):
        image_layout(shape, rgb=True)


# --- normalisation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
def test_integer_round_trip_is_exact_for_every_value(dtype):
    info = np.iinfo(dtype)
    values = np.arange(info.min, info.max + 1).astype(dtype)
    norm, _ = normalizations_for(values.reshape(1, -1), image_layout((1, values.size)), intensity=RANGE)
    unit = norm.to_unit(values)
    assert unit.dtype == np.float32
    assert unit.min() == 0.0
    assert unit.max() == 1.0
    np.testing.assert_array_equal(norm.from_unit(unit), values)


def test_dim_uint16_keeps_its_16_bit_range_in_range_mode():
    image = np.array([[0, 100, 255]], np.uint16)  # max < 256 is still 16-bit data, not 8-bit
    norm, _ = normalizations_for(image, image_layout(image.shape), intensity=RANGE)
    assert (norm.low, norm.high) == (0.0, 65535.0)
    assert norm.to_unit(image).max() == pytest.approx(255 / 65535)


@pytest.mark.parametrize("dtype", [np.int32, np.uint32, np.int64, np.uint64])
def test_wide_integer_normalizations_clip_without_overflow(dtype):
    info = np.iinfo(dtype)
    norm = Normalization(np.dtype(dtype), float(info.min), float(info.max))
    back = norm.from_unit(np.array([-0.5, 0.0, 0.5, 1.0, 1.5]))
    assert back.dtype == dtype
    assert back[0] == back[1] == info.min
    assert back[3] == back[4] > info.max // 2  # clipped near the top, not wrapped around to the bottom
    assert int(back[3]) <= info.max


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64])
def test_signed_and_wide_integers_map_by_their_own_range_and_come_back_within_it(dtype):
    image = np.arange(100).reshape(10, 10).astype(dtype)
    norm, _ = normalizations_for(image, image_layout(image.shape), intensity=RANGE)
    assert (norm.low, norm.high) == (0.0, 99.0)
    unit = norm.to_unit(image)
    assert (unit.min(), unit.max()) == (0.0, 1.0)
    np.testing.assert_array_equal(norm.from_unit(unit), image)
    assert norm.from_unit(np.array([-0.5, 1.5])).tolist() == [0, 99]  # clipped to the input's range


def test_uint32_takes_a_bit_depth_like_uint16():
    assert value_range(np.array([[0, 99]], np.uint32), intensity=Intensity("bits", bits=12)) == (0.0, 4095.0)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_images_map_by_their_own_range_and_come_back(dtype):
    image = np.linspace(-3.5, 12.0, 64).reshape(8, 8).astype(dtype)
    norm, _ = normalizations_for(image, image_layout(image.shape), intensity=RANGE)
    assert (norm.low, norm.high) == (-3.5, 12.0)
    unit = norm.to_unit(image)
    assert unit.min() == 0.0
    assert unit.max() == 1.0
    back = norm.from_unit(unit)
    assert back.dtype == dtype
    unit_eps = max(np.finfo(dtype).eps, np.finfo(np.float32).eps)  # the model works in float32
    np.testing.assert_allclose(back, image, rtol=0, atol=15.5 * unit_eps * 2)


def test_float_output_is_clipped_to_the_input_range():
    norm = Normalization(np.dtype(np.float32), 2.0, 4.0)
    np.testing.assert_array_equal(norm.from_unit(np.array([-1.0, 0.5, 2.0])), np.float32([2.0, 3.0, 4.0]))


def test_constant_float_image_is_valid_and_stays_constant():
    image = np.full((4, 5), 7.25, np.float32)
    validate_image(image)
    norm, _ = normalizations_for(image, image_layout(image.shape))
    unit = norm.to_unit(image)
    assert np.isfinite(unit).all()
    np.testing.assert_array_equal(norm.from_unit(np.random.default_rng(0).random((8, 10))), 7.25)


def test_rgba_colour_and_alpha_are_normalised_separately():
    image = np.zeros((4, 4, 4), np.float32)
    image[..., :3] = np.linspace(0, 1000, 48).reshape(4, 4, 3)
    image[..., 3] = np.linspace(0, 1, 16).reshape(4, 4)
    color, alpha = normalizations_for(image, image_layout(image.shape), intensity=RANGE)
    assert (color.low, color.high) == (0.0, 1000.0)
    assert alpha is not None
    assert (alpha.low, alpha.high) == (0.0, 1.0)
    assert normalizations_for(image[..., :3], image_layout((4, 4, 3)))[1] is None


# --- tensors --------------------------------------------------------------------------------------------


def test_gray_is_replicated_for_the_model_and_averaged_back():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    norm = Normalization(np.dtype(np.uint8), 0.0, 255.0)
    x = to_model_input(gray, norm)
    assert x.shape == (1, 3, 3, 4)
    assert x.dtype == torch.float32
    for c in range(3):
        np.testing.assert_allclose(x[0, c].numpy(), gray / 255, rtol=1e-6)
    y = torch.stack([x[0, 0] * 0.5, x[0, 1], x[0, 2] * 1.5]).unsqueeze(0)  # channel mean == x
    np.testing.assert_array_equal(from_model_output(y, norm, gray=True), gray)


def test_rgb_goes_to_nchw_and_back_in_the_same_channel_order():
    rgb = np.random.default_rng(1).integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    norm = Normalization(np.dtype(np.uint16), 0.0, 65535.0)
    x = to_model_input(rgb, norm)
    assert x.shape == (1, 3, 5, 6)
    np.testing.assert_allclose(x[0, 2].numpy(), rgb[..., 2] / 65535, rtol=1e-6)
    out = from_model_output(x, norm, gray=False)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, rgb)


def test_model_output_outside_unit_range_is_clipped():
    norm = Normalization(np.dtype(np.uint8), 0.0, 255.0)
    y = torch.tensor([-0.2, 0.5, 1.3]).reshape(1, 1, 1, 3).expand(1, 3, 1, 3)
    np.testing.assert_array_equal(from_model_output(y, norm, gray=True), [[0, 128, 255]])


def test_alpha_is_resized_bicubically_and_clipped_to_its_range():
    alpha = np.zeros((6, 6), np.uint8)
    alpha[2:4, 2:4] = 255  # bicubic overshoots next to a hard edge
    norm = Normalization(np.dtype(np.uint8), 0.0, 255.0)
    up = resize_alpha(alpha, 4, norm)
    assert up.shape == (24, 24)
    assert up.dtype == np.uint8
    assert up[0, 0] == 0
    assert up[12, 12] == 255
    assert 0 < up[12, 7] < 255  # interpolated, not nearest
    flat = resize_alpha(np.full((3, 3), 0.5, np.float32), 4, Normalization(np.dtype(np.float32), 0.0, 1.0))
    np.testing.assert_allclose(flat, 0.5, atol=1e-6)


@pytest.mark.parametrize(
    ("dtype", "low", "high"),
    [
        (np.uint8, 0.0, 255.0),
        (np.int8, -128.0, 127.0),
        (np.int16, -32768.0, 32767.0),
        (np.uint16, 0.0, 65535.0),
        (np.int32, -(2.0**31), 2.0**31 - 1),
        (np.float16, -1.5, 3.0),
        (np.float32, -1.5, 3.0),
        (np.float64, -1.5, 3.0),
    ],
)
@pytest.mark.parametrize("clip", [True, False])
def test_tensor_mapping_equals_the_numpy_mapping_bit_for_bit(dtype, low, high, clip):
    """Where the mapping runs on the model's device it gives exactly what numpy gives, and leaves the
    (read-only, here) input alone; with and without clipping to the range (percentile mode)."""
    rng = np.random.default_rng(3)
    norm = Normalization(np.dtype(dtype), low, high, clip=clip)
    values = (low + rng.random((7, 9, 3)) * (high - low)).astype(dtype)
    values.flags.writeable = False
    kept = values.copy()
    x = to_model_input(values, norm)
    np.testing.assert_array_equal(values, kept)
    np.testing.assert_array_equal(x[0].permute(1, 2, 0).numpy(), norm.to_unit(values))
    y = torch.from_numpy(rng.random((1, 3, 7, 9), dtype=np.float32) * 1.4 - 0.2)
    for gray in (False, True):
        expected = y[0].clamp(0, 1) if clip else y[0]
        expected = expected.mean(dim=0) if gray else expected.permute(1, 2, 0)
        out = from_model_output(y, norm, gray=gray)
        assert out.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(out, norm.from_unit(expected.numpy()))


# --- bit depth ------------------------------------------------------------------------------------------


def test_a_bit_depth_maps_unsigned_data_of_that_depth_to_the_full_unit_range():
    image = np.array([[0, 1000], [2048, 4095]], np.uint16)
    twelve = Intensity("bits", bits=12)
    assert value_range(image, intensity=RANGE) == (0.0, 65535.0)
    assert value_range(image, intensity=twelve) == (0.0, 4095.0)
    norm, _ = normalizations_for(image, image_layout(image.shape), intensity=twelve)
    unit = norm.to_unit(image)
    assert unit.max() == 1.0
    np.testing.assert_array_equal(norm.from_unit(unit), image)  # exact round trip
    assert norm.from_unit(np.array([1.5]))[0] == 4095  # outputs stay within the depth
    rgba = np.zeros((4, 4, 4), np.uint16)
    rgba[..., 3] = 65535  # alpha keeps its own (dtype) range
    color, alpha = normalizations_for(rgba, image_layout(rgba.shape), intensity=twelve)
    assert (color.high, alpha.high) == (4095.0, 65535.0)


@pytest.mark.parametrize(
    ("values", "bit_depth", "match"),
    [
        (np.array([[4096]], np.uint16), 12, "values reach 4096, above 4095, the largest 12-bit value"),
        (np.array([[1]], np.uint8), 12, "a uint8 image holds at most 8 bits, not 12"),
        (np.array([[1]], np.int16), 12, "applies to unsigned integer images, not int16"),
        (np.array([[0.5]], np.float32), 12, "applies to unsigned integer images, not float32"),
        (np.array([[1]], np.uint16), 0, "whole number from 1 to 64, not 0"),
        (np.array([[1]], np.uint16), 12.0, "whole number from 1 to 64, not 12.0"),
    ],
)
def test_a_bit_depth_that_does_not_fit_the_data_is_refused(values, bit_depth, match):
    with pytest.raises(InputError, match=match):
        value_range(values, intensity=Intensity("bits", bits=bit_depth))


def test_check_bit_depth_alone_checks_the_number():
    assert check_bit_depth(np.int64(14)) == 14
    with pytest.raises(InputError, match="not True"):
        check_bit_depth(True)


@pytest.mark.parametrize(
    ("peak", "dtype", "expected"),
    [
        (4095, np.uint16, 12),
        (1000, np.uint16, 10),
        (16383, np.uint16, 14),
        (16384, np.uint16, None),  # 15 bits: more than a quarter of the range, could be any 16-bit image
        (200, np.uint8, None),
        (4095, np.int16, None),
        (4095, np.uint32, None),  # maps by its own range: a bit depth is no hint there
    ],
)
def test_likely_bit_depth_is_a_hint_for_sparse_wide_integers(peak, dtype, expected):
    assert likely_bit_depth(np.array([[0, peak]], dtype)) == expected


# --- intensity modes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("auto", AUTO),
        ("range", RANGE),
        ("bits:12", Intensity("bits", bits=12)),
        ("percentile", Intensity("percentile", percentiles=(1, 99.8))),
        (" Percentile:0.5,99 ", Intensity("percentile", percentiles=(0.5, 99.0))),
        ("auto:2,98", Intensity("auto", percentiles=(2, 98))),
    ],
)
def test_intensity_text_form_reads_and_writes_back(text, expected):
    parsed = Intensity.parse(text)
    assert parsed == expected
    assert Intensity.parse(str(parsed)) == parsed
    assert Intensity.parse(parsed) is parsed


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("gamma", "unknown intensity 'gamma'; give auto, range, bits:N"),
        ("bits", "a bit depth goes with intensity mode bits"),
        ("bits:twelve", "cannot read intensity 'bits:twelve'"),
        ("bits:0", "whole number from 1 to 64, not 0"),
        ("percentile:99.8,1", "two numbers 0 <= low < high <= 100"),
        ("percentile:1", "percentile takes two percentiles LOW,HIGH, not 1"),
        ("percentile:1,101", "two numbers 0 <= low < high <= 100"),
        ("range:1,99", "intensity range takes no argument"),
    ],
)
def test_intensity_text_errors_say_what_to_give(text, match):
    with pytest.raises(InputError, match=match):
        Intensity.parse(text)


def test_intensity_is_validated_when_built():
    with pytest.raises(InputError, match="percentiles apply to modes auto and percentile"):
        Intensity("range", percentiles=(2, 98))
    with pytest.raises(InputError, match="unknown intensity mode"):
        Intensity("minmax")
    with pytest.raises(InputError, match="two numbers"):
        Intensity("percentile", percentiles=(float("nan"), 99))


def test_auto_maps_uint8_by_its_range_and_other_dtypes_by_percentile():
    assert AUTO.for_dtype(np.uint8) == RANGE
    for dtype in (np.uint16, np.int16, np.uint32, np.float32):
        assert AUTO.for_dtype(dtype) == Intensity("percentile")
    assert Intensity("auto", percentiles=(2, 98)).for_dtype(np.uint16).percentiles == (2.0, 98.0)
    dim = np.arange(10_000, dtype=np.uint16).reshape(100, 100) % 211  # values 0 to 210
    norm, _ = normalizations_for(dim, image_layout(dim.shape))
    assert (norm.low, norm.high) == pytest.approx(tuple(np.percentile(dim, [1, 99.8])))
    assert not norm.clip


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int8, np.int16])
@pytest.mark.parametrize("shape", [(9, 13), (3, 7, 5), (2, 4, 6, 3), (1, 1)])
def test_percentiles_from_the_histogram_equal_numpys(dtype, shape):
    info = np.iinfo(dtype)
    values = np.random.default_rng(5).integers(info.min, info.max, (*shape, 2), endpoint=True).astype(dtype)
    values = values[..., 0]  # a view that is not contiguous, as the colour of an RGBA image is
    for percentiles in ((1.0, 99.8), (0.0, 100.0), (33.3, 50.0)):
        np.testing.assert_allclose(
            percentile_range(values, percentiles), np.percentile(values, percentiles), rtol=1e-12
        )


def test_percentile_map_is_an_exact_inverse_and_keeps_peaks_above_the_high_percentile():
    rng = np.random.default_rng(2)
    image = rng.integers(40, 200, (64, 64)).astype(np.uint16)
    image[10, 10], image[20, 30] = 3000, 65535  # two bright disks' peaks, above the 99.8th percentile
    norm, _ = normalizations_for(image, image_layout(image.shape), intensity=Intensity("percentile"))
    assert norm.high < 3000
    unit = norm.to_unit(image)
    assert unit.max() > 1  # not clipped on the way in, as in CSBDeep
    np.testing.assert_array_equal(norm.from_unit(unit), image)  # every value, peaks included
    out = from_model_output(torch.from_numpy(unit).expand(1, 3, 64, 64), norm, gray=True)
    np.testing.assert_array_equal(out, image)
    extreme = torch.tensor([-5.0, 1e6]).reshape(1, 1, 1, 2).expand(1, 3, 1, 2)
    over = from_model_output(extreme, norm, gray=True)
    assert over.tolist() == [[0, 65535]]  # clipped only to what uint16 holds
    floats = image.astype(np.float32) / 7
    fnorm, _ = normalizations_for(floats, image_layout(floats.shape), intensity=Intensity("percentile"))
    np.testing.assert_allclose(fnorm.from_unit(fnorm.to_unit(floats)), floats, rtol=1e-6)
    beyond = fnorm.from_unit(np.array([-1.0, 2.0]))  # not clipped to the percentile range
    assert beyond.tolist() == pytest.approx(
        [2 * fnorm.low - fnorm.high, 2 * fnorm.high - fnorm.low], rel=1e-6
    )


def test_percentiles_that_coincide_fall_back_to_the_minimum_and_maximum():
    image = np.full((50, 50), 100, np.uint16)
    image[0, 0] = 900  # one value in 2,500 differs: the 1st and 99.8th percentiles are both 100
    assert percentile_range(image, (1.0, 99.8)) == (100.0, 900.0)
    constant = np.full((4, 4), 3.5, np.float32)
    norm, _ = normalizations_for(constant, image_layout(constant.shape))
    np.testing.assert_array_equal(norm.from_unit(np.float32([0.0, 0.7])), 3.5)


def test_recorded_intensity_reads_new_and_old_configurations():
    assert recorded_intensity({"intensity": "percentile:2,99"}) == Intensity(
        "percentile", percentiles=(2, 99)
    )
    assert recorded_intensity({"bit_depth": 12}) == Intensity("bits", bits=12)
    assert recorded_intensity({"bit_depth": None}) == RANGE  # what a run without a bit depth used then
    assert recorded_intensity({}) is None
