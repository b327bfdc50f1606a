"""Previews of a window: equal to the same window of the whole result, blocks reused from the cache."""

import numpy as np
import pytest

from napari_microdisk_sr.core.errors import InputError
from napari_microdisk_sr.core.images import image_layout, normalizations_for
from napari_microdisk_sr.core.infer import UpscaleConfig, upscale
from napari_microdisk_sr.core.intensity import AUTO
from napari_microdisk_sr.core.models import LoadedModel, ModelSpec
from napari_microdisk_sr.core.preview import BLOCK, PreviewCache, preview
from napari_microdisk_sr.core.progress import StopFlag, drive
from napari_microdisk_sr.core.regions import Region

CONFIG = UpscaleConfig(tile=0, device="cpu")


@pytest.fixture(scope="module")
def model():
    spec = ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 4})
    return LoadedModel(spec.build().eval(), spec, "tiny", "test", "ab" * 32)


@pytest.fixture(scope="module")
def plane():
    return np.random.default_rng(0).integers(0, 255, (150, 140), dtype=np.uint8)


def test_a_preview_equals_the_same_window_of_the_whole_result(model, plane):
    whole = drive(upscale(plane, model, tile=0, device="cpu")).image
    events = []
    region = Region(50, 120, 10, 75)  # across four blocks
    result = drive(preview(plane, model, region, config=CONFIG), events.append)
    np.testing.assert_array_equal(result.image, whole[200:480, 40:300])
    assert (events[-1].done, events[-1].total) == (1, 1)  # the four blocks in one tile
    assert result.provenance["region"] == [50, 120, 10, 75]
    assert result.provenance["model"] == "tiny"


def test_a_preview_of_a_stack_plane_mapped_by_the_stack_equals_that_plane_of_the_whole_result(model):
    rng = np.random.default_rng(4)
    stack = np.stack([rng.integers(100, 210, (40, 36)), rng.integers(0, 4000, (40, 36))]).astype(np.uint16)
    whole = drive(upscale(stack, model, tile=0, device="cpu")).image  # auto: the stack's percentiles
    norms = normalizations_for(stack, image_layout(stack.shape), intensity=AUTO)
    region = Region(5, 30, 4, 20)
    mapped = drive(preview(stack[0], model, region, config=CONFIG, normalization=norms, cache=PreviewCache()))
    np.testing.assert_array_equal(mapped.image, whole[0, 20:120, 16:80])
    own = drive(preview(stack[0], model, region, config=CONFIG)).image  # the dim plane's own percentiles
    assert np.abs(own.astype(float) - whole[0, 20:120, 16:80]).max() > 1


def test_blocks_seen_before_are_reused(model, plane):
    cache = PreviewCache()
    first = drive(preview(plane, model, Region(0, 60, 0, 60), config=CONFIG, cache=cache))
    assert (cache.hits, cache.misses) == (0, 1)
    again = drive(preview(plane, model, Region(10, 120, 5, 60), config=CONFIG, cache=cache))  # moved down
    assert (cache.hits, cache.misses) == (1, 2)
    np.testing.assert_array_equal(again.image[: 50 * 4, : 55 * 4], first.image[40:, 20:])
    drive(preview(plane, model, Region(10, 120, 5, 60), config=UpscaleConfig(tile=0, device="cpu", half=True),
                  cache=cache))  # fmt: skip
    assert cache.misses == 4  # other settings: other blocks
    drive(preview(plane + 1, model, Region(0, 60, 0, 60), config=CONFIG, cache=cache))
    assert cache.misses == 5  # other pixels: another block


def test_the_cache_keeps_its_bound(model, plane):
    cache = PreviewCache(max_bytes=2 * (BLOCK * 4) ** 2)  # two uint8 blocks
    drive(preview(plane, model, Region(0, 128, 0, 128), config=CONFIG, cache=cache))
    drive(preview(plane, model, Region(64, 128, 64, 128), config=CONFIG, cache=cache))
    assert cache.hits == 1  # the last block computed is still there
    drive(preview(plane, model, Region(0, 64, 0, 64), config=CONFIG, cache=cache))
    assert cache.misses == 5  # the first one was dropped


def test_a_stopped_preview_returns_nothing_and_stacks_are_refused(model, plane):
    stop = StopFlag()
    stop.set()
    assert drive(preview(plane, model, Region(0, 10, 0, 10), config=CONFIG, stop=stop)) is None
    with pytest.raises(InputError, match="one plane"):
        preview(np.stack([plane, plane]), model, Region(0, 10, 0, 10), config=CONFIG)
