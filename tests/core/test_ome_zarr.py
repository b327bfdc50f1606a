"""Images larger than memory: lazy input, OME-Zarr output block by block, equal to the in-memory result."""

import os
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr.writer import get_metadata, write_image

import napari_microdisk_sr
from napari_microdisk_sr.core import batch, ome_zarr, unfinished
from napari_microdisk_sr.core.errors import InputError
from napari_microdisk_sr.core.images import image_layout, normalizations_for
from napari_microdisk_sr.core.infer import UpscaleConfig, upscale, upscale_array
from napari_microdisk_sr.core.intensity import AUTO, Intensity
from napari_microdisk_sr.core.io import PixelSize, write_tiff
from napari_microdisk_sr.core.lazy import (
    lazy_image,
    lazy_normalizations,
    open_lazy,
    open_pyramid,
    read_store_provenance,
    store_identity,
)
from napari_microdisk_sr.core.models import LoadedModel, ModelSpec
from napari_microdisk_sr.core.ome_zarr import upscale_block, upscale_to_ome_zarr
from napari_microdisk_sr.core.progress import StopFlag, drive
from napari_microdisk_sr.core.regions import Region

CONFIG = UpscaleConfig(tile=24, device="cpu")


@pytest.fixture(scope="module")
def model():
    spec = ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 4})
    return LoadedModel(spec.build().eval(), spec, "tiny", "test", "ab" * 32)


def rng_image(shape, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return (rng.random(shape) * 3.0 - 1.0).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True, dtype=dtype)


def write_ome_zarr(path, image, axes, pixel_um=0.5, chunks=32, levels=2):
    """An OME-NGFF image written by ome-zarr itself (channels first, as the specification orders them)."""
    write_image(
        image,
        zarr.open_group(str(path), mode="w"),
        axes=axes,
        scale=dict.fromkeys("yx", pixel_um),
        scale_factors=[2**k for k in range(1, levels)],
        storage_options={"chunks": (*(1,) * (image.ndim - 2), chunks, chunks)},
    )
    return Path(path)


def assert_close(actual, expected):
    """Equal up to float rounding: convolutions of other sizes round differently (see test_infer)."""
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    if expected.dtype.kind == "f":
        assert np.abs(actual - expected).max() <= 1e-5 * (np.ptp(expected) + 1)
    else:
        assert np.abs(actual.astype(np.int64) - expected).max() <= 1


# --- lazy input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "axes", "dtype"),
    [
        ((70, 90), "yx", np.float32),
        ((3, 50, 60), "cyx", np.uint8),  # RGB, channels first in the store, last in the layout
        ((2, 40, 36), "zyx", np.uint16),
    ],
)
def test_a_store_upscaled_block_by_block_equals_the_in_memory_result(model, tmp_path, shape, axes, dtype):
    image = rng_image(shape, dtype)
    source = open_lazy(write_ome_zarr(tmp_path / "in.ome.zarr", image, list(axes)))
    in_memory = np.moveaxis(image, 0, -1) if axes == "cyx" else image
    assert source.axes == (("y", "x", "c") if axes == "cyx" else tuple(axes))
    assert source.pixel_size == PixelSize(0.5, 0.5, "")
    events = []
    job = upscale_to_ome_zarr(source, model, tmp_path / "in_x4.ome.zarr", config=CONFIG, block=16, levels=2)
    result = drive(job, events.append)
    expected = upscale_array(in_memory, model, tile=0, device="cpu", rgb=axes == "cyx")
    written = open_lazy(result.path)
    assert_close(written.data.compute(), expected)
    planes = shape[0] if axes == "zyx" else 1
    blocks = -(-shape[-2] // 16) * -(-shape[-1] // 16)
    upscaled = [e for e in events if e.done <= blocks]
    assert len(upscaled) == blocks
    assert events[-1].done == events[-1].total > blocks * planes
    assert zarr.open_array(str(result.path / "0")).chunks[-2:] == (64, 64)  # one block's result per chunk


def test_a_window_of_the_result_equals_the_window_upscaled_from_a_crop(model, tmp_path):
    image = rng_image((96, 80), np.uint8, seed=1)
    image[:3, :3] = 0  # the range is the whole image's, whatever the window holds
    result = drive(
        upscale_to_ome_zarr(lazy_image(image), model, tmp_path / "a.ome.zarr", config=CONFIG, block=32)
    )
    window = open_lazy(result.path).data[160:288, 96:224].compute()
    crop = drive(upscale(image, model, tile=0, device="cpu", region=Region(40, 72, 24, 56))).image
    assert_close(window, crop)


def test_a_tiff_is_read_only_where_it_is_sliced(tmp_path):
    """A tile far from the window is garbage: reading the window works, reading the whole image fails."""
    image = rng_image((256, 256), np.uint16)
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(path, image, tile=(64, 64), compression="zlib", resolution=(2.0, 2.0), resolutionunit=1)
    with tifffile.TiffFile(path) as tif:
        offsets, counts = tif.pages.first.dataoffsets, tif.pages.first.databytecounts
    with open(path, "r+b") as fh:  # the last tile (rows and columns 192:256) no longer inflates
        fh.seek(offsets[-1])
        fh.write(b"\xff" * counts[-1])
    lazy = open_lazy(path)
    np.testing.assert_array_equal(lazy.read((), Region(0, 100, 10, 120)), image[:100, 10:120])
    assert lazy.pixel_size == PixelSize(0.5, 0.5, "")
    with pytest.raises(Exception, match=r"(?i)error|invalid|zlib"):
        lazy.data.compute()

    flat = write_tiff(tmp_path / "flat.tif", image)  # uncompressed, in one piece: memory-mapped
    mapped = open_lazy(flat)
    assert mapped.data.chunksize == (256, 256) or mapped.data.numblocks == (1, 1)
    np.testing.assert_array_equal(mapped.read((), Region(5, 9, 7, 11)), image[5:9, 7:11])


def test_a_zarr_store_is_read_only_where_it_is_sliced(tmp_path):
    image = rng_image((128, 128), np.uint8)
    store = write_ome_zarr(tmp_path / "in.ome.zarr", image, ["y", "x"])
    (store / "s0" / "c" / "3" / "3").write_bytes(b"not a chunk")  # rows and columns 96:128 (ome-zarr's "s0")
    lazy = open_lazy(store)
    np.testing.assert_array_equal(lazy.read((), Region(0, 64, 0, 96)), image[:64, :96])
    with pytest.raises(Exception, match=r"."):  # zarr's codec error type is its own business
        lazy.data.compute()


def test_the_whole_image_mapping_is_computed_lazily_and_equals_the_in_memory_one(tmp_path):
    cases = [
        (rng_image((40, 30)), mode)
        for mode in ("auto", "range", "percentile:0.5,99.5")  # float32: every order statistic is exact
    ] + [
        (rng_image((40, 30, 4), np.uint16), "bits:16"),
        (rng_image((40, 30, 4), np.uint16), "auto"),
        (rng_image((40, 30), np.uint8), "auto"),
        (rng_image((20, 20), np.int16), "range"),
        (rng_image((20, 20), np.int16), "percentile"),
        (rng_image((24, 24)).astype(np.float64) * 1e-3 + 7.0, "auto"),
        (np.full((16, 16), 3.0, np.float32), "auto"),  # constant: the percentiles fall back to min and max
    ]
    for image, mode in cases:
        lazy = lazy_image(da.from_array(image, chunks=8))
        intensity = Intensity.parse(mode)
        expected = normalizations_for(image, image_layout(image.shape), intensity=intensity)
        assert lazy_normalizations(lazy, intensity=intensity) == expected, (image.dtype, mode)
    sparse = np.zeros((64, 72), np.uint16)
    sparse[[3, 30, 60], [4, 40, 70]] = 3000  # under 0.2 % bright: both percentiles are 0, min and max used
    for image, mode in [(sparse, "auto"), (sparse.astype(np.uint8), "percentile"),
                        (np.full((9, 9), 7, np.uint16), "auto")]:  # fmt: skip
        lazy = lazy_image(da.from_array(image, chunks=16))
        expected = normalizations_for(image, image_layout(image.shape), intensity=Intensity.parse(mode))
        assert lazy_normalizations(lazy, intensity=Intensity.parse(mode)) == expected, (image.dtype, mode)
    for seed in (17, 21, 34, 50, 153):  # float64 percentiles that numpy rounds from the upper neighbour
        image = np.random.default_rng(seed).normal(10, 3, (24, 20))
        expected = normalizations_for(image, image_layout(image.shape), intensity=AUTO)
        assert lazy_normalizations(lazy_image(da.from_array(image, chunks=7)), intensity=AUTO) == expected
    bad = rng_image((16, 16))
    bad[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        lazy_normalizations(lazy_image(bad))
    zarr.open_group(str(tmp_path / "plate.zarr"), mode="w")
    with pytest.raises(InputError, match="without OME-NGFF multiscales"):
        open_lazy(tmp_path / "plate.zarr")


# --- output -----------------------------------------------------------------------------------------------


def test_pyramid_levels_and_metadata(model, tmp_path):
    image = rng_image((64, 48, 3), np.uint8)
    source = lazy_image(image, pixel_size=PixelSize(0.6, 0.4, "um"))
    result = drive(
        upscale_to_ome_zarr(source, model, tmp_path / "p.ome.zarr", config=CONFIG, block=16, levels=3)
    )
    assert result.shapes == [(3, 256, 192), (3, 128, 96), (3, 64, 48)]
    multiscales = get_metadata(zarr.open_group(str(result.path), mode="r"))["multiscales"][0]
    assert [a["name"] for a in multiscales["axes"]] == ["c", "y", "x"]
    assert multiscales["axes"][1]["unit"] == "micrometer"
    scales = [d["coordinateTransformations"][0]["scale"] for d in multiscales["datasets"]]
    assert np.allclose(scales, [[1.0, 0.15, 0.1], [1.0, 0.3, 0.2], [1.0, 0.6, 0.4]])
    shifts = [d["coordinateTransformations"][1]["translation"] for d in multiscales["datasets"]]
    assert shifts[0] == pytest.approx([0.0, -0.225, -0.15])  # centres on the input's (-0.375 input pixels)
    assert shifts[2] == pytest.approx([0.0, 0.0, 0.0])  # level 2's 4x4 means centre on the input pixels
    levels = [zarr.open_array(str(result.path / str(k)))[:] for k in range(3)]
    halved = levels[0].reshape(3, 128, 2, 96, 2).astype(np.float64).mean(axis=(2, 4))
    np.testing.assert_array_equal(levels[1], np.rint(halved).astype(np.uint8))
    pyramid = open_pyramid(result.path)
    assert [level.shape for level in pyramid.levels] == [(256, 192, 3), (128, 96, 3), (64, 48, 3)]
    assert pyramid.rgb
    assert pyramid.scale == pytest.approx((0.15, 0.1))
    assert pyramid.translate == pytest.approx((-0.225, -0.15))
    assert pyramid.provenance["model"] == "tiny"
    assert pyramid.provenance["levels"] == 3


def test_outputs_are_never_overwritten_and_provenance_lets_a_rerun_skip(model, tmp_path):
    image = rng_image((30, 30), np.uint8)
    store = write_ome_zarr(tmp_path / "in.ome.zarr", image, ["y", "x"])
    made_with = {"input_identity": store_identity(store), "model_sha256": "ab" * 32, "tile": 24}
    target = tmp_path / "in_x4.ome.zarr"
    paths = [drive(upscale_to_ome_zarr(open_lazy(store), model, target, config=CONFIG, record=made_with)).path
             for _ in range(2)]  # fmt: skip
    assert [p.name for p in paths] == ["in_x4.ome.zarr", "in_x4-1.ome.zarr"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ome.zarr", "in_x4-1.ome.zarr", "in_x4.ome.zarr"]
    assert read_store_provenance(paths[0])["input_identity"] == made_with["input_identity"]
    wanted = {key: read_store_provenance(paths[0]).get(key) for key in batch.OUTPUT_SETTINGS} | made_with
    assert batch.done_output(target, wanted) == target
    assert batch.done_output(target, wanted | {"input_identity": "changed"}) is None
    assert batch.expand_inputs([tmp_path]) == [store, *paths[::-1]]  # stores are images, not folders
    assert batch.expand_inputs([store]) == [store]
    (store / "s0" / "extra").write_bytes(b"x")
    assert store_identity(store) != made_with["input_identity"]


def test_a_stopped_job_leaves_nothing_and_a_rerun_block_writes_the_same_bits(model, tmp_path):
    source = lazy_image(rng_image((64, 64)))
    stop = StopFlag()
    job = upscale_to_ome_zarr(source, model, tmp_path / "s.ome.zarr", config=CONFIG, block=16, stop=stop)
    next(job)
    assert any(p.name.startswith(".s.ome.zarr.") for p in tmp_path.iterdir())  # the hidden temporary store
    stop.set()
    assert drive(job) is None
    assert list(tmp_path.iterdir()) == []

    result = drive(upscale_to_ome_zarr(source, model, tmp_path / "s.ome.zarr", config=CONFIG, block=16))
    level0 = zarr.open_array(str(result.path / "0"), mode="r")
    before = level0[:]
    norms = lazy_normalizations(source)
    upscale_block(source, result.path, (), Region(16, 32, 32, 48), model, norms, config=CONFIG)
    np.testing.assert_array_equal(level0[:], before)


# --- resuming an interrupted job ------------------------------------------------------------------------

IDENTIFIED = {"input_path": "/data/field.tif", "input_sha256": "cd" * 32}
"""An input identity: a job with one (and a LoadedModel) can be resumed."""


@pytest.fixture
def computed(monkeypatch):
    """The names of the blocks computed (upscaled or averaged), counted as the job calls them."""
    names = []
    upscale_one, average_one = ome_zarr.upscale_block, ome_zarr.downsample_block

    def upscale_counted(image, store, plane, block, *args, **kwargs):
        names.append(("upscale", plane, block))
        return upscale_one(image, store, plane, block, *args, **kwargs)

    def average_counted(store, level, index, block):
        names.append(("average", level, block))
        average_one(store, level, index, block)

    monkeypatch.setattr(ome_zarr, "upscale_block", upscale_counted)
    monkeypatch.setattr(ome_zarr, "downsample_block", average_counted)
    return names


def interrupted(source, model, target, steps, **settings):
    """A job taken ``steps`` blocks (or, with None, to its last block, before it is put in place) and then
    closed, as a kill leaves it: its hidden store and the markers of its written blocks."""
    job = upscale_to_ome_zarr(source, model, target, record=IDENTIFIED, **settings)
    events = [next(job) for _ in range(steps)] if steps is not None else list(_all_but_return(job))
    job.close()
    return events


def _all_but_return(job):
    event = next(job)
    while event.done < event.total:
        yield event
        event = next(job)
    yield event


def assert_same_store(ours, theirs):
    ours, theirs = (zarr.open_group(str(path), mode="r") for path in (ours, theirs))
    assert sorted(ours.array_keys()) == sorted(theirs.array_keys())
    for key in theirs.array_keys():
        np.testing.assert_array_equal(ours[key][:], theirs[key][:])
    assert dict(ours.attrs) == dict(theirs.attrs)  # the same provenance, and no markers or start record


@pytest.mark.parametrize("steps", [7, None])
def test_a_rerun_resumes_an_interrupted_store_and_writes_the_bits_of_an_uninterrupted_run(
    model, tmp_path, computed, steps
):
    """64 x 48 RGB in 16-pixel blocks: 12 upscaled, then 4 + 1 averaged into levels 1 and 2."""
    source = lazy_image(rng_image((64, 48, 3), np.uint8))
    settings = {"config": CONFIG, "block": 16, "levels": 3}
    (tmp_path / "clean").mkdir()
    clean = drive(upscale_to_ome_zarr(source, model, tmp_path / "clean" / "c.ome.zarr", record=IDENTIFIED,
                                      **settings))  # fmt: skip
    assert len(computed) == 17
    (tmp_path / "run").mkdir()
    target = tmp_path / "run" / "c.ome.zarr"
    interrupted(source, model, target, steps, **settings)
    (left,) = (tmp_path / "run").iterdir()
    assert left.name.startswith(".c.ome.zarr.")
    assert left.name.endswith(".tmp")
    kept = unfinished.done_blocks(left)
    assert len(kept) == (steps or 17)
    computed.clear()

    events = []
    result = drive(upscale_to_ome_zarr(source, model, target, record=IDENTIFIED, **settings), events.append)
    assert result.path == target
    assert result.reused == len(kept)
    assert len(computed) == 17 - len(kept)  # the blocks marked written are not computed again
    assert [event.done for event in events] == list(range(len(kept), 18))  # the bar starts where it stopped
    assert {event.total for event in events} == {17}
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["c.ome.zarr"]  # no hidden store left
    assert_same_store(result.path, clean.path)
    assert result.provenance == clean.provenance


def test_without_resume_an_interrupted_store_is_deleted_and_the_job_starts_anew(model, tmp_path, computed):
    source = lazy_image(rng_image((32, 32)))
    target = tmp_path / "s.ome.zarr"
    interrupted(source, model, target, 2, config=CONFIG, block=16)
    (left,) = tmp_path.iterdir()
    assert len(unfinished.done_blocks(left)) == 2
    computed.clear()
    job = upscale_to_ome_zarr(source, model, target, config=CONFIG, block=16, record=IDENTIFIED, resume=False)
    result = drive(job)
    assert (result.path, result.reused, len(computed)) == (target, 0, 4)
    assert list(tmp_path.iterdir()) == [target]  # the interrupted store is gone


def test_a_store_of_other_settings_or_input_is_left_alone(model, tmp_path, computed, caplog):
    source = lazy_image(rng_image((32, 32)))
    target = tmp_path / "s.ome.zarr"
    interrupted(source, model, target, 2, config=CONFIG, block=16)
    (left,) = tmp_path.iterdir()
    computed.clear()
    other = UpscaleConfig(tile=16, device="cpu")
    result = drive(upscale_to_ome_zarr(source, model, target, config=other, block=16, record=IDENTIFIED))
    assert result.reused == 0
    assert len(computed) == 4  # every block of the 32 x 32 image: one level
    assert f"{left} is an unfinished store of another run" in caplog.text
    assert "delete it when no run is writing it" in caplog.text
    assert sorted(tmp_path.iterdir()) == sorted([left, target])
    assert len(unfinished.done_blocks(left)) == 2  # untouched

    record = IDENTIFIED | {"input_sha256": "ef" * 32}  # the same pixels under another identity: another input
    result = drive(upscale_to_ome_zarr(source, model, target, config=CONFIG, block=16, record=record))
    assert result.reused == 0
    assert left.exists()
    result = drive(upscale_to_ome_zarr(source, model, target, config=CONFIG, block=16, record=IDENTIFIED))
    assert result.reused == 2
    assert not left.exists()


def test_a_store_cut_off_as_it_is_put_in_place_is_put_in_place_by_the_rerun(
    model, tmp_path, computed, monkeypatch
):
    source = lazy_image(rng_image((32, 32)))
    target = tmp_path / "s.ome.zarr"
    (tmp_path / "clean").mkdir()
    clean = drive(upscale_to_ome_zarr(source, model, tmp_path / "clean" / "s.ome.zarr", config=CONFIG,
                                      block=16, record=IDENTIFIED))  # fmt: skip
    publish = ome_zarr._publish

    def cut_off(tmp, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(ome_zarr, "_publish", cut_off)
    with pytest.raises(KeyboardInterrupt):
        drive(upscale_to_ome_zarr(source, model, target, config=CONFIG, block=16, record=IDENTIFIED))
    monkeypatch.setattr(ome_zarr, "_publish", publish)
    computed.clear()
    result = drive(upscale_to_ome_zarr(source, model, target, config=CONFIG, block=16, record=IDENTIFIED))
    assert (result.path, result.reused, computed) == (target, 4, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "s.ome.zarr"]
    assert_same_store(result.path, clean.path)


def test_a_store_that_records_no_run_is_left_alone(model, tmp_path, caplog):
    source = lazy_image(rng_image((32, 32)))
    target = tmp_path / "s.ome.zarr"
    cut = tmp_path / ".s.ome.zarr.x1.tmp"
    cut.mkdir()
    (cut / "zarr.json").write_text("[]")  # metadata cut off as the store was made
    result = drive(upscale_to_ome_zarr(source, model, target, config=CONFIG, block=16, record=IDENTIFIED))
    assert (result.path, result.reused) == (target, 0)
    assert f"{cut} is an unfinished store that records no run (cut off as it began)" in caplog.text
    assert cut.exists()


def test_a_store_being_written_by_a_live_job_is_not_taken(model, tmp_path, computed):
    source = lazy_image(rng_image((32, 32)))
    target = tmp_path / "s.ome.zarr"
    live = upscale_to_ome_zarr(source, model, target, config=CONFIG, block=16, record=IDENTIFIED)
    next(live)
    next(live)  # holds its store's lock, as another process writing it would
    (theirs,) = tmp_path.iterdir()
    result = drive(upscale_to_ome_zarr(source, model, target, config=CONFIG, block=16, record=IDENTIFIED))
    assert result.reused == 0
    assert result.path == target
    assert theirs.exists()
    assert len(unfinished.done_blocks(theirs)) == 2
    assert drive(live).path == tmp_path / "s-1.ome.zarr"  # the live job goes on in its own store
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s-1.ome.zarr", "s.ome.zarr"]


def test_a_job_without_an_input_identity_is_not_resumed(model, tmp_path, computed):
    source = lazy_image(rng_image((32, 32)))
    job = upscale_to_ome_zarr(source, model, tmp_path / "s.ome.zarr", config=CONFIG, block=16)
    next(job)
    job.close()
    assert list(tmp_path.iterdir()) == []  # removed: nothing could tell a rerun it is the same job


_PEAK = """
import ctypes, resource, sys
ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # large arrays mapped alone, returned when freed (bench_scale)
from napari_microdisk_sr.core.infer import UpscaleConfig
from napari_microdisk_sr.core.lazy import open_lazy
from napari_microdisk_sr.core.models import LoadedModel, ModelSpec
from napari_microdisk_sr.core.ome_zarr import upscale_to_ome_zarr
from napari_microdisk_sr.core.progress import drive
spec = ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 4})
model = LoadedModel(spec.build().eval(), spec, "tiny", "test", "ab" * 32)
source = open_lazy(sys.argv[1])
config = UpscaleConfig(tile=256, device="cpu")
warm = upscale_to_ome_zarr(open_lazy(sys.argv[3]), model, sys.argv[4], config=config, levels=3)
drive(warm)  # thread pools and caches are made by the first job
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = drive(upscale_to_ome_zarr(source, model, sys.argv[2], config=config))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024)
"""


def test_peak_memory_is_bounded_by_the_block_not_the_image(tmp_path):
    """A 1280 x 1280 float32 field to 5120 x 5120 (100 MiB in memory) with the peak RSS growing far less."""
    side = 1280
    field = da.random.default_rng(0).random((side, side), chunks=256).astype(np.float32)
    store = write_ome_zarr(tmp_path / "field.ome.zarr", field, ["y", "x"], chunks=256, levels=1)
    small = write_ome_zarr(
        tmp_path / "small.ome.zarr", rng_image((512, 512)), ["y", "x"], chunks=256, levels=1
    )
    env = os.environ | {
        "PYTHONPATH": str(Path(napari_microdisk_sr.__file__).parents[1]),
        "OMP_NUM_THREADS": "2",
    }
    run = subprocess.run(
        [sys.executable, "-c", _PEAK, store, tmp_path / "out.ome.zarr", small, tmp_path / "w.ome.zarr"],
        capture_output=True, text=True, env=env, timeout=600, check=True,
    )  # fmt: skip
    growth = int(run.stdout.split()[-1])
    in_memory = (4 * side) ** 2 * 4
    assert growth < in_memory / 4, f"peak RSS grew by {growth / 2**20:.0f} MiB"
    out = open_lazy(tmp_path / "out.ome.zarr")
    assert out.data.shape == (4 * side, 4 * side)
