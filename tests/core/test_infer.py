"""Tiled inference: exactness, layouts and dtypes, progress, stop, out-of-memory, devices and settings."""

import copy
import gc
import logging
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_microdisk_sr.core import device as device_module
from napari_microdisk_sr.core.archs import RRDBNet, SRVGGNetCompact
from napari_microdisk_sr.core.device import cpu_has_native_bf16
from napari_microdisk_sr.core.errors import InputError, MicrodiskSRError
from napari_microdisk_sr.core.images import Normalization, resize_alpha
from napari_microdisk_sr.core.infer import (
    MIN_TILE,
    Region,
    TileEvent,
    UpscaleConfig,
    upscale,
    upscale_array,
)
from napari_microdisk_sr.core.intensity import Intensity
from napari_microdisk_sr.core.model_copies import _PREPARED, prepared
from napari_microdisk_sr.core.models import LoadedModel, ModelSpec, load_model
from napari_microdisk_sr.core.progress import StopFlag, drive
from napari_microdisk_sr.core.sample import make_scene

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SRVGG_PARAMS = {"num_feat": 8, "num_conv": 2, "upscale": 4}
SRVGG_RADIUS = 4  # num_conv + 2 convolutions of radius 1; the pixel shuffle and the residual add nothing


def tiny_srvgg(seed: int = 0) -> nn.Module:
    """A random SRVGGNetCompact whose outputs mostly stay inside [0, 1] (so clipping hides no difference)."""
    torch.manual_seed(seed)
    net = SRVGGNetCompact(**SRVGG_PARAMS).eval()
    with torch.no_grad():
        net.body[-1].weight.mul_(0.2)
    return net


class Squashed(nn.Module):
    """A random network's output mapped into (0, 1), so that differences are never clipped away."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


class Nearest(nn.Module):
    """Nearest-neighbour x4: makes the value mapping of the whole pipeline exactly checkable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=4, mode="nearest")


class OutOfMemoryAbove(nn.Module):
    """Raises CUDA's out-of-memory error for inputs larger than ``limit`` pixels a side."""

    def __init__(self, net: nn.Module, limit: int) -> None:
        super().__init__()
        self.net, self.limit = net, limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if max(x.shape[-2:]) > self.limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (simulated for {tuple(x.shape)})")
        return self.net(x)


def rng_image(shape, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return (rng.random(shape) * 3.0 - 1.0).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype)


def nearest_x4(image: np.ndarray, spatial=(0, 1)) -> np.ndarray:
    return image.repeat(4, axis=spatial[0]).repeat(4, axis=spatial[1])


def run(image, model, **kw):
    events: list[TileEvent] = []
    result = upscale_array(image, model, on_event=events.append, device="cpu", **kw)
    return result, events


# --- tiled equals untiled -------------------------------------------------------------------------------


@pytest.mark.parametrize("tile", [8, 16, 20, 100])
def test_tiled_equals_untiled_for_odd_sizes(tile):
    net = tiny_srvgg()
    image = rng_image((37, 53, 3))
    whole, _ = run(image, net, scale=4, tile=0)
    tiled, events = run(image, net, scale=4, tile=tile, tile_pad=SRVGG_RADIUS)
    assert tiled.shape == whole.shape == (148, 212, 3)
    assert tiled.dtype == np.float32
    assert np.abs(tiled - whole).max() <= 1e-4 * (image.max() - image.min())
    per_axis = [max(1, -(-(n - 2 * SRVGG_RADIUS) // tile)) for n in (37, 53)]  # see test_tile_layout
    assert len(events) == per_axis[0] * per_axis[1]
    assert (len(events) == 1) == (tile == 100)


class Recording(nn.Module):
    """Appends the spatial shape of every input to ``shapes`` (shared by the copies a job makes)."""

    def __init__(self, net: nn.Module, shapes: list) -> None:
        super().__init__()
        self.net, self.record = net, shapes.append  # a bound builtin: deepcopy keeps it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.record(tuple(x.shape[-2:]))
        return self.net(x)


@pytest.mark.parametrize(
    ("size", "tile", "pad"), [((96, 96), 48, 32), ((128, 100), 48, 32), ((300, 99), 64, 10), ((37, 53), 8, 4)]
)
def test_tile_layout_is_the_fewest_tiles_within_the_memory_bound(size, tile, pad):
    """No input exceeds tile + 2 * pad; with k tiles an axis computes n + 2 * pad * (k - 1) pixels, so
    k >= (n - 2 * pad) / tile, and that is the count used; all inputs along an axis are about as long."""
    shapes: list[tuple[int, int]] = []
    image = rng_image(size, np.uint8)
    out, events = run(image, Recording(Nearest(), shapes), scale=4, tile=tile, tile_pad=pad)
    assert np.array_equal(out, nearest_x4(image))
    fewest = [max(1, -(-(n - 2 * pad) // tile)) for n in size]
    assert len(events) == len(shapes) == fewest[0] * fewest[1]
    assert max(max(shape) for shape in shapes) <= tile + 2 * pad
    for axis in (0, 1):
        lengths = {shape[axis] for shape in shapes}
        assert max(lengths) - min(lengths) <= 1
    if max(size) <= tile + 2 * pad:
        assert shapes == [size]


def test_padding_below_the_receptive_field_shows_seams():
    """The exactness above is not luck: a pad smaller than the receptive field changes the output."""
    net = tiny_srvgg()
    image = rng_image((37, 53, 3))
    whole, _ = run(image, net, scale=4, tile=0)
    tiled, _ = run(image, net, scale=4, tile=16, tile_pad=SRVGG_RADIUS - 3)
    assert np.abs(tiled - whole).max() > 1e-3


def test_tiled_rrdbnet_x4_equals_untiled():
    torch.manual_seed(0)
    net = Squashed(RRDBNet(3, 3, scale=4, num_feat=8, num_block=1, num_grow_ch=4).eval())
    radius = RRDBNet.receptive_radius(3, 3, scale=4, num_feat=8, num_block=1, num_grow_ch=4)
    image = rng_image((29, 35), np.uint16)
    whole, _ = run(image, net, scale=4, tile=0)
    tiled, _ = run(image, net, scale=4, tile=12, tile_pad=radius)
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1  # rounding of float-level differences


def test_tiled_rrdbnet_x2_aligns_tiles_with_its_pixel_unshuffle():
    """RRDBNet x2 pixel-unshuffles its input: tiles start on even pixels and odd sizes are reflected."""
    spec = ModelSpec("RRDBNet", {"num_in_ch": 3, "num_out_ch": 3, "scale": 2, "num_feat": 8, "num_block": 1,
                                 "num_grow_ch": 4})  # fmt: skip
    torch.manual_seed(0)
    model = LoadedModel(Squashed(spec.build().eval()), spec, "tiny-x2", "test", "0" * 64)
    image = rng_image((151, 129, 3))
    whole, _ = run(image, model, tile=0)
    assert spec.receptive_radius == 38
    # 49-pixel tiles and a pad of 37 would split 151 pixels at 75 if tiles were not aligned on even pixels
    tiled, events = run(image, model, tile=49, tile_pad=37)
    assert len(events) == 2 * 2
    assert whole.shape == (302, 258, 3)
    assert np.abs(tiled - whole).max() <= 1e-4 * (image.max() - image.min())


# --- values, dtypes and layouts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "low", "high"),
    [
        (np.uint8, 0, 255),
        (np.uint16, 0, 200),
        (np.int16, -300, 300),
        (np.int32, 0, 99),
        (np.uint64, 1000, 1099),
        (np.float32, -2.5, 7.0),
    ],
)
def test_values_come_back_in_the_input_dtype_and_range(dtype, low, high):
    """With an exact x4 'network' the output is the nearest-neighbour upscale itself: no range is guessed."""
    image = np.random.default_rng(0).uniform(low, high, (9, 11)).astype(dtype)
    out, _ = run(image, Nearest(), scale=4, tile=4, tile_pad=1)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, nearest_x4(image), rtol=0, atol=(high - low) * 1e-6)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64])
def test_signed_and_wide_integers_are_upscaled_like_floats_of_the_same_values(dtype):
    """In range mode values 0 to 99 map by their own range: the result stays within it and is the float32
    result rounded, not noise of millions (by an int32's full range every level would be within float32
    rounding of 0.5)."""
    image = np.random.default_rng(0).integers(0, 100, (12, 10)).astype(dtype)
    image[0, :2] = 0, 99
    out, _ = run(image, tiny_srvgg(), scale=4, tile=0, intensity="range")
    as_float, _ = run(image.astype(np.float32), tiny_srvgg(), scale=4, tile=0, intensity="range")
    assert out.dtype == dtype
    assert 0 <= out.min() <= out.max() <= 99
    assert np.ptp(as_float) > 10  # the network's output has contrast to compare
    np.testing.assert_allclose(out, np.rint(as_float), rtol=0, atol=1)


def test_constant_image_is_upscaled_to_the_same_constant():
    image = np.full((10, 12), 3.5, np.float32)
    out, _ = run(image, tiny_srvgg(), scale=4, tile=0)
    np.testing.assert_array_equal(out, np.full((40, 48), 3.5, np.float32))


def test_gray_is_processed_as_rgb_and_returned_as_gray():
    net = tiny_srvgg()
    gray = rng_image((13, 17))
    out, _ = run(gray, net, scale=4, tile=0, intensity="range")  # percentiles of 3 copies differ a little
    as_rgb, _ = run(np.repeat(gray[..., None], 3, axis=-1), net, scale=4, tile=0, intensity="range")
    assert out.shape == (52, 68)
    np.testing.assert_allclose(out, as_rgb.mean(axis=-1), atol=1e-5)


def test_rgba_alpha_is_resized_bicubically_and_reattached():
    net = tiny_srvgg()
    image = rng_image((21, 19, 4), np.uint8)
    out, _ = run(image, net, scale=4, tile=8, tile_pad=SRVGG_RADIUS)
    rgb, _ = run(image[..., :3], net, scale=4, tile=8, tile_pad=SRVGG_RADIUS)
    assert out.shape == (84, 76, 4)
    np.testing.assert_array_equal(out[..., :3], rgb)
    # tiled alpha equals the bicubic resize of the whole alpha plane
    whole_alpha = resize_alpha(image[..., 3], 4, Normalization(np.dtype(np.uint8), 0.0, 255.0))
    np.testing.assert_array_equal(out[..., 3], whole_alpha)


def test_stacks_are_processed_plane_by_plane():
    net = tiny_srvgg()
    stack = rng_image((2, 3, 16, 14), np.uint8)
    out, events = run(stack, net, scale=4, tile=4, tile_pad=SRVGG_RADIUS)
    assert out.shape == (2, 3, 64, 56)
    assert out.dtype == np.uint8
    single, _ = run(stack[1, 2], net, scale=4, tile=0)
    assert np.abs(out[1, 2].astype(int) - single.astype(int)).max() <= 1
    assert [e.plane for e in events][::4] == [0, 1, 2, 3, 4, 5]
    assert {(e.planes, e.total, e.tile) for e in events} == {(6, 24, 4)}
    assert [e.done for e in events] == list(range(1, 25))


def test_rgb_false_treats_a_last_axis_of_three_as_width():
    out, _ = run(rng_image((4, 6, 3)), Nearest(), scale=4, tile=0, rgb=False)
    assert out.shape == (4, 24, 12)


def test_memory_is_bounded_by_the_tile():
    """No full-size float copy: numpy's peak is the uint8 output plus tile-sized temporaries."""
    image = rng_image((256, 256), np.uint8)
    job = upscale(image, Nearest(), scale=4, tile=32, tile_pad=2, device="cpu")
    tracemalloc.start()
    try:
        out = drive(job).image
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.nbytes == 1024 * 1024
    full_float32_rgb = out.size * 3 * 4
    assert peak < out.nbytes + full_float32_rgb / 8, peak


# --- progress and stop ----------------------------------------------------------------------------------


def test_stop_returns_none_and_ends_the_job():
    stop = StopFlag()
    job = upscale(rng_image((20, 20)), tiny_srvgg(), scale=4, tile=8, tile_pad=2, device="cpu", stop=stop)
    first = next(job)
    assert (first.done, first.total) == (1, 4)
    stop.set()
    with pytest.raises(StopIteration) as info:
        next(job)
    assert info.value.value is None


def test_stop_set_before_the_start_does_no_work():
    stop = StopFlag()
    stop.set()
    result, events = run(rng_image((20, 20)), tiny_srvgg(), scale=4, tile=8, stop=stop)
    assert result is None
    assert events == []


def test_bad_input_raises_when_the_job_is_created():
    image = np.zeros((8, 8), np.float32)
    image[0, 0] = np.inf
    with pytest.raises(InputError, match="1 Inf"):
        upscale(image, tiny_srvgg(), scale=4)


# --- out of memory --------------------------------------------------------------------------------------


def test_out_of_memory_halves_the_tile_and_restarts_the_plane():
    net = tiny_srvgg()
    image = rng_image((40, 120, 3))
    reference, _ = run(image, net, scale=4, tile=0)
    # 40-pixel tiles: the inputs are 45, 45 and 46 wide, and the last one does not fit
    out, events = run(image, OutOfMemoryAbove(net, limit=45), scale=4, tile=40, tile_pad=SRVGG_RADIUS)
    assert [(e.done, e.total, e.tile) for e in events[:3]] == [(1, 3, 40), (2, 3, 40), (1, 4, MIN_TILE)]
    assert {e.tile for e in events[2:]} == {MIN_TILE}
    assert events[-1].done == events[-1].total == 4
    assert np.abs(out - reference).max() <= 1e-4 * (image.max() - image.min())


def test_untiled_run_that_runs_out_of_memory_falls_back_to_tiles(caplog):
    net = tiny_srvgg()
    stack = rng_image((2, 64, 64))
    reference, _ = run(stack, net, scale=4, tile=0)
    with caplog.at_level(logging.WARNING, logger="napari_microdisk_sr.core.infer"):
        out, events = run(stack, OutOfMemoryAbove(net, limit=40), scale=4, tile=0, tile_pad=SRVGG_RADIUS)
    assert "out of memory with 64-pixel network inputs" in caplog.text
    assert "restarting the plane with 32-pixel tiles (inputs of 36 pixels)" in caplog.text
    assert {e.tile for e in events} == {MIN_TILE}  # the smaller tile is kept for the next plane
    assert len(events) == 8
    assert np.abs(out - reference).max() <= 1e-4 * (stack.max() - stack.min())


def test_out_of_memory_skips_halved_tiles_that_would_not_shrink_the_inputs(caplog):
    """120 px with a 32 px pad: a 60 px tile still means one 120 px input; 32 px tiles give two of 92."""
    with caplog.at_level(logging.WARNING, logger="napari_microdisk_sr.core.infer"):
        out, events = run(rng_image((120, 120)), OutOfMemoryAbove(Nearest(), limit=100), scale=4, tile=0,
                          tile_pad=32)  # fmt: skip
    assert caplog.text.count("restarting") == 1
    assert "with 120-pixel network inputs" in caplog.text
    assert "restarting the plane with 32-pixel tiles (inputs of 92 pixels)" in caplog.text
    assert [e.tile for e in events] == [32] * 4
    assert out.shape == (480, 480)
    # what the job used at its end is what its result records: the smaller tile
    job = upscale(rng_image((120, 120)), OutOfMemoryAbove(Nearest(), limit=100), scale=4, tile=0, tile_pad=32,
                  device="cpu")  # fmt: skip
    assert drive(job).provenance["tile"] == 32


def test_out_of_memory_at_the_smallest_tile_is_a_clear_error():
    job = upscale(rng_image((64, 64)), OutOfMemoryAbove(tiny_srvgg(), limit=8), scale=4, device="cpu")
    with pytest.raises(MicrodiskSRError, match=f"out of memory on CPU .* even with {MIN_TILE}-pixel tiles"):
        drive(job)


# --- models, devices and settings -----------------------------------------------------------------------


def test_loaded_model_gives_scale_and_padding():
    spec = ModelSpec("SRVGGNetCompact", SRVGG_PARAMS)
    assert spec.tile_pad == SRVGG_RADIUS
    model = LoadedModel(tiny_srvgg(), spec, "tiny", "test", "0" * 64)
    image = rng_image((30, 30))
    whole, _ = run(image, model, tile=0)
    tiled, _ = run(image, model, tile=10)  # tile_pad from the spec
    assert whole.shape == (120, 120)
    assert np.abs(tiled - whole).max() <= 1e-4 * (image.max() - image.min())
    with pytest.raises(InputError, match="upscales x4"):
        upscale(image, model, scale=2)


def test_the_result_carries_the_settings_in_effect():
    spec = ModelSpec("RRDBNet", {"num_in_ch": 3, "num_out_ch": 3, "scale": 2, "num_feat": 8, "num_block": 1,
                                 "num_grow_ch": 4})  # fmt: skip
    model = LoadedModel(spec.build().eval(), spec, "tiny-x2", "/models/tiny.pth", "ab" * 32)
    image = rng_image((8, 8, 3))
    given = drive(upscale(image, model, tile=64, tile_pad=37, half=True, device="cpu")).provenance
    assert given.pop("device").startswith("CPU")
    assert given == {
        "model": "tiny-x2",
        "model_source": "/models/tiny.pth",
        "model_sha256": "ab" * 32,
        "scale": 2,
        "tile": 64,
        "tile_pad": 38,  # x2 inputs are pixel-unshuffled by 2: the pad is rounded up to even, as upscale does
        "half": cpu_has_native_bf16(),  # bfloat16 on the CPU only where it is native
        "precision": "bfloat16" if cpu_has_native_bf16() else "float32",
        "intensity": "auto",
        "value_range": list(np.percentile(image, [1, 99.8])),  # auto maps float images by percentile
    }
    assert drive(upscale(image, model, device="cpu")).provenance["tile_pad"] == spec.tile_pad == 38
    bare = drive(upscale(image[:4, :4], Nearest(), scale=4, device="cpu")).provenance
    assert (bare["model"], bare["model_source"], bare["model_sha256"]) == ("Nearest", None, None)


SEEN: list[float] = []  # outside the module: upscale runs a copy of it


class Probe(Nearest):
    """Nearest-neighbour x4 that records the largest value the network was given in :data:`SEEN`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        SEEN.append(float(x.max()))
        return super().forward(x)


def test_the_intensity_mode_decides_what_the_network_sees(caplog):
    image = np.arange(64, dtype=np.uint16).reshape(8, 8) * 50
    image[0, 0] = 4095  # a 12-bit camera's brightest pixel, a peak above the 99.8th percentile
    seen = {}
    for text in ("range", "bits:12", "auto", "percentile:0,100"):
        SEEN.clear()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            result = drive(upscale(image, Probe(), scale=4, device="cpu", tile=0, intensity=text))
        seen[text] = (max(SEEN), caplog.text, result)
        np.testing.assert_array_equal(result.image, nearest_x4(image))  # the mapping goes back exactly
        assert result.provenance["intensity"] == text
    assert seen["range"][0] == pytest.approx(4095 / 65535)  # the full uint16 range: 16x too dark
    assert "reaches only 4095: if it holds 12-bit data, use intensity bits:12" in seen["range"][1]
    assert seen["bits:12"][0] == 1.0
    assert seen["auto"][0] > 1.0  # its 99.8th percentile, below the peak, maps to 1: nothing is clipped
    assert seen["auto"][2].provenance["value_range"] == list(np.percentile(image, [1, 99.8]))
    assert seen["percentile:0,100"][0] == 1.0
    for needs_no_hint in ("bits:12", "auto", "percentile:0,100"):
        assert not seen[needs_no_hint][1]
    with pytest.raises(InputError, match="values reach 5000, above 4095"):
        upscale(np.full((8, 8), 5000, np.uint16), Probe(), scale=4, intensity="bits:12")
    with pytest.raises(InputError, match="unknown intensity 'twelve'"):
        upscale(image, Probe(), scale=4, intensity="twelve")


def dim_fluorescence(size: int = 64) -> np.ndarray:
    """The issue's dim 16-bit image: a field of disks on a dark background, values 106 to 210, mean 124."""
    lr = make_scene(seed=1, size=(size, size), dtype="uint8", background="dark").lr.astype(np.float64)
    unit = (lr - lr.min()) / (lr.max() - lr.min())
    return np.rint(105.5 + (210 - 105.5) * unit).astype(np.uint16)


@pytest.fixture(scope="module")
def compact():
    return load_model("realesr-animevideov3")


def test_a_dim_16_bit_image_keeps_its_mean_intensity_by_default(compact):
    image = dim_fluorescence()
    assert (image.max(), round(image.mean())) == (210, 124)
    out = drive(upscale(image, compact, tile=0, device="cpu"))
    assert out.provenance["intensity"] == "auto"
    assert out.image.dtype == np.uint16
    assert abs(out.image.mean() / image.mean() - 1) < 0.2  # measured: 124.1 -> 123.8
    by_range = upscale_array(image, compact, tile=0, device="cpu", intensity="range")
    assert by_range.mean() < 0.3 * image.mean()  # the old default: 124.1 -> 15.0, 8x darker


def test_two_exposures_of_a_field_keep_their_ratio_by_default(compact):
    """Percentile maps are equivariant: twice the exposure is shown to the network as the same image, and
    its output comes back twice as bright. By the dtype's range the network sees two different images."""
    once = dim_fluorescence()
    twice = once * 2
    means = [upscale_array(image, compact, tile=0, device="cpu").mean() for image in (once, twice)]
    assert means[1] / means[0] == pytest.approx(2.0, rel=0.01)  # measured: 1.9999
    by_range = [
        upscale_array(image, compact, tile=0, device="cpu", intensity="range").mean()
        for image in (once, twice)
    ]
    assert by_range[1] / by_range[0] > 3  # measured: 3.50


def test_a_fine_tuned_models_recorded_intensity_is_its_default():
    image = np.arange(64, dtype=np.uint16).reshape(8, 8) * 50
    spec = ModelSpec("SRVGGNetCompact", {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 4, "num_conv": 1,
                                         "upscale": 4, "act_type": "prelu"})  # fmt: skip
    trained = LoadedModel(spec.build().eval(), spec, "tuned", "t.pth", "cd" * 32, Intensity("bits", bits=12))
    assert drive(upscale(image, trained, device="cpu")).provenance["intensity"] == "bits:12"
    given = drive(upscale(image, trained, device="cpu", intensity="percentile")).provenance
    assert given["intensity"] == "percentile"


def test_bare_module_needs_its_scale():
    with pytest.raises(InputError, match="pass scale="):
        upscale(rng_image((8, 8)), tiny_srvgg())


def test_wrong_scale_is_caught_at_the_first_tile():
    with pytest.raises(MicrodiskSRError, match="not an RGB x2 model"):
        upscale_array(rng_image((8, 8)), tiny_srvgg(), scale=2, device="cpu")


def test_the_callers_module_is_left_untouched():
    net = nn.Sequential(nn.Conv2d(3, 48, 3, padding=1), nn.PixelShuffle(4)).double()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out, _ = run(rng_image((8, 8, 3)), net, scale=4, tile=4)
    assert out.shape == (32, 32, 3)
    for key, value in net.state_dict().items():
        assert value.dtype == torch.float64
        assert value.is_contiguous()
        assert torch.equal(value, before[key])
    assert all(p.requires_grad for p in net.parameters())


def test_a_bare_module_is_copied_for_each_job_so_training_shows_at_once():
    """A fused optimiser step changes weights without bumping version counters: only a fresh copy sees it."""
    net = tiny_srvgg()
    image = rng_image((12, 12, 3))
    before, _ = run(image, net, scale=4, tile=0)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05, fused=True)
    net(torch.rand(1, 3, 8, 8)).mean().backward()
    optimizer.step()
    after, _ = run(image, net, scale=4, tile=0)
    assert np.abs(after - before).max() > 1e-3
    assert np.array_equal(after, run(image, copy.deepcopy(net), scale=4, tile=0)[0])


def test_a_loaded_models_copy_is_reused_until_its_weights_are_replaced():
    spec = ModelSpec("SRVGGNetCompact", SRVGG_PARAMS)
    model = LoadedModel(tiny_srvgg(), spec, "tiny", "test", "0" * 64)
    image = rng_image((12, 12, 3))
    cpu = torch.device("cpu")
    before, _ = run(image, model, tile=0)
    first = prepared(model.module, cpu)
    assert first is not model.module
    assert prepared(model.module, cpu) is first  # made by the run above, reused
    assert all(p.grad is None and not p.requires_grad for p in first.parameters())
    model.module.load_state_dict(tiny_srvgg(seed=1).state_dict())  # in-place copies: new versions
    loaded, _ = run(image, model, tile=0)
    assert prepared(model.module, cpu) is not first
    assert np.abs(loaded - before).max() > 1e-3
    assert np.array_equal(loaded, run(image, tiny_srvgg(seed=1), scale=4, tile=0)[0])


def test_the_job_copy_goes_with_its_module():
    net = tiny_srvgg()
    prepared(net, torch.device("cpu"))
    cached = len(_PREPARED)
    del net
    gc.collect()
    assert len(_PREPARED) == cached - 1


def test_half_precision_is_refused_on_a_cpu_without_native_bfloat16(caplog, monkeypatch):
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: False)
    net = tiny_srvgg()
    image = rng_image((12, 12, 3))
    with caplog.at_level(logging.WARNING, logger="napari_microdisk_sr.core.infer"):
        half, _ = run(image, net, scale=4, tile=0, half=True)
    assert "needs CUDA or a CPU with native bfloat16" in caplog.text
    full, _ = run(image, net, scale=4, tile=0)
    np.testing.assert_array_equal(half, full)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="needs a CPU with native bfloat16")
def test_half_precision_on_a_cpu_with_native_bfloat16_is_a_close_preview(caplog):
    spec = ModelSpec("SRVGGNetCompact", SRVGG_PARAMS)
    model = LoadedModel(Squashed(tiny_srvgg()), spec, "tiny", "test", "0" * 64)
    image = rng_image((24, 24, 3))
    full, _ = run(image, model, tile=0)
    with caplog.at_level(logging.WARNING, logger="napari_microdisk_sr.core.infer"):
        half, _ = run(image, model, tile=0, half=True)
    assert not caplog.text
    error = np.abs(half - full) / (image.max() - image.min())
    assert 0 < error.max() < 0.02  # bfloat16 keeps 8 bits of mantissa
    events: list[TileEvent] = []
    ended = drive(upscale(image, model, tile=0, device="cpu", half=True), events.append).provenance
    assert [e.precision for e in events] == ["bfloat16"]
    assert (ended["half"], ended["precision"]) == (True, "bfloat16")


class NaNUnderAutocast(nn.Module):
    """Gives NaN where autocast is on: what an overflow in 16-bit floats looks like."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        return y * float("nan") if torch.is_autocast_enabled(x.device.type) else y


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="needs a CPU with native bfloat16")
def test_a_non_finite_half_precision_output_falls_back_to_float32_and_says_so(caplog):
    net = tiny_srvgg()
    image = rng_image((20, 20, 3))
    with caplog.at_level(logging.WARNING, logger="napari_microdisk_sr.core.infer"):
        out, events = run(image, NaNUnderAutocast(net), scale=4, tile=8, tile_pad=SRVGG_RADIUS, half=True)
    assert "continuing in float32" in caplog.text
    assert {e.precision for e in events} == {"float32"}
    np.testing.assert_array_equal(out, run(image, net, scale=4, tile=8, tile_pad=SRVGG_RADIUS)[0])
    job = upscale(
        image, NaNUnderAutocast(net), scale=4, tile=8, tile_pad=SRVGG_RADIUS, half=True, device="cpu"
    )
    assert drive(job).provenance["precision"] == "float32"  # what the job used at its end


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile": -1}, "tile must be"),
        ({"tile": 1.5}, "tile must be"),
        ({"tile": True}, "tile must be"),
        ({"tile_pad": -2}, "tile_pad must be"),
        ({"device": "tpu"}, "unknown device"),
        ({"device": "cuda:x"}, "unknown device"),
        ({"half": "yes"}, "half must be"),
    ],
)
def test_config_is_validated(kwargs, match):
    with pytest.raises(InputError, match=match):
        UpscaleConfig(**kwargs)


def test_config_defaults_and_is_frozen():
    config = UpscaleConfig(tile=0, device="cuda:1")
    assert (config.tile, config.tile_pad, config.device, config.half) == (0, None, "cuda:1", False)
    with pytest.raises(AttributeError):
        config.tile = 3  # type: ignore[misc]


# --- CUDA (exercised on a GPU machine; skipped elsewhere) -----------------------------------------------


class AllocatesPerPixel(nn.Module):
    """Asks the CUDA allocator for more than the whole GPU for inputs above ``limit`` pixels a side."""

    def __init__(self, net: nn.Module, limit: int) -> None:
        super().__init__()
        self.net, self.limit = net, limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if max(x.shape[-2:]) > self.limit:
            total = torch.cuda.get_device_properties(x.device).total_memory
            torch.empty(total // 2 + 1, dtype=torch.float32, device=x.device)  # 2x the GPU: a real OOM
        return self.net(x)


@pytest.mark.cuda
@cuda
def test_cuda_matches_cpu_and_recovers_from_a_real_out_of_memory():
    net = tiny_srvgg()
    image = rng_image((70, 90, 3))
    on_cpu = upscale_array(image, net, scale=4, tile=0, device="cpu")
    on_gpu = upscale_array(image, net, scale=4, tile=0, device="cuda")
    assert np.abs(on_gpu - on_cpu).max() <= 1e-3 * (image.max() - image.min())  # TF32 convolutions
    events: list[TileEvent] = []
    job = upscale(
        image, AllocatesPerPixel(net, limit=60), scale=4, tile=0, tile_pad=SRVGG_RADIUS, device="cuda"
    )
    recovered = drive(job, events.append).image
    assert {e.tile for e in events} == {45}
    assert np.abs(recovered - on_gpu).max() <= 1e-3 * (image.max() - image.min())


@pytest.mark.cuda
@cuda
def test_cuda_half_precision_is_close_and_falls_back_to_float32_on_overflow(caplog):
    class Overflows(nn.Module):
        """Leaves float16's range (65504) between two 1x1 convolutions, as a badly scaled model would."""

        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net
            self.up, self.down = nn.Conv2d(3, 3, 1, bias=False), nn.Conv2d(3, 3, 1, bias=False)
            with torch.no_grad():
                self.up.weight.copy_(torch.eye(3).view(3, 3, 1, 1) * 1e5)
                self.down.weight.copy_(torch.eye(3).view(3, 3, 1, 1) * 1e-5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.down(self.up(self.net(x)))

    net = tiny_srvgg()
    image = rng_image((40, 40, 3))
    full = upscale_array(image, net, scale=4, tile=0, device="cuda")
    half = upscale_array(image, net, scale=4, tile=0, device="cuda", half=True)
    assert np.abs(half - full).max() <= 1e-2 * (image.max() - image.min())
    with caplog.at_level(logging.WARNING, logger="napari_microdisk_sr.core.infer"):
        rescued = upscale_array(image, Overflows(net), scale=4, tile=20, device="cuda", half=True)
    assert "continuing in float32" in caplog.text
    assert np.isfinite(rescued).all()
    assert np.abs(rescued - full).max() <= 1e-2 * (image.max() - image.min())  # TF32 1x1 convolutions


# --- regions (previews) ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "region"),
    [
        ((40, 48), Region(10, 22, 15, 33)),  # inside
        ((40, 48), Region(0, 9, 40, 48)),  # at two borders
        ((40, 48, 3), Region(5, 40, 0, 17)),  # RGB
        ((2, 30, 30), Region(3, 14, 20, 30)),  # a stack: every plane
    ],
)
def test_a_region_equals_the_same_window_of_the_whole_result(shape, region):
    image = rng_image(shape)
    image[..., :4, :4] = 50.0  # far outside the region: the value range is the whole image's
    net = tiny_srvgg()
    whole = drive(upscale(image, net, scale=4, tile=16, tile_pad=SRVGG_RADIUS, device="cpu")).image
    preview = drive(upscale(image, net, scale=4, tile=16, tile_pad=SRVGG_RADIUS, device="cpu", region=region))
    window = (slice(region.y0 * 4, region.y1 * 4), slice(region.x0 * 4, region.x1 * 4))
    rgb = len(shape) == 3 and shape[-1] == 3
    expected = whole[(..., *window, slice(None))] if rgb else whole[(..., *window)]
    assert preview.image.shape == expected.shape
    # to float precision, as tiles of other sizes are (convolutions of other sizes round differently)
    assert np.abs(preview.image - expected).max() <= 1e-5 * (image.max() - image.min())
    assert preview.provenance["region"] == [region.y0, region.y1, region.x0, region.x1]
    # float images map by their percentiles (auto), computed once from the whole image, not the window
    assert preview.provenance["intensity"] == "auto"
    assert preview.provenance["value_range"] == list(np.percentile(image, [1, 99.8]))


def test_regions_are_checked():
    assert Region.parse("0:128,64:192") == Region(0, 128, 64, 192)
    for text in ("0:128", "a:b,c:d", "0:1:2,3:4"):
        with pytest.raises(InputError, match="a region is Y0:Y1,X0:X1"):
            Region.parse(text)
    with pytest.raises(InputError, match="0 <= y0 < y1"):
        Region(5, 5, 0, 4)
    with pytest.raises(InputError, match="reaches beyond the 20x20 image"):
        upscale(rng_image((20, 20)), tiny_srvgg(), scale=4, region=Region(0, 8, 10, 21))
