"""The z and t spacing, origin and units of an OME-NGFF input reach its x4 store at every level."""

import warnings

import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr.axes import KNOWN_SPATIAL_UNITS, KNOWN_TEMPORAL_UNITS
from ome_zarr.writer import get_metadata, write_image, write_multiscales_metadata

from napari_microdisk_sr.core.errors import InputError
from napari_microdisk_sr.core.infer import UpscaleConfig
from napari_microdisk_sr.core.lazy import AxisGeometry, lazy_image, open_lazy, open_pyramid
from napari_microdisk_sr.core.models import LoadedModel, ModelSpec
from napari_microdisk_sr.core.ome_zarr import create_store, upscale_to_ome_zarr
from napari_microdisk_sr.core.progress import drive


@pytest.fixture(scope="module")
def model():
    spec = ModelSpec("SRVGGNetCompact", {"num_feat": 4, "num_conv": 1, "upscale": 4})
    return LoadedModel(spec.build().eval(), spec, "tiny", "test", "ef" * 32)


def write_ngff(path, image, axes, scale, translation, units, multiscales_transforms=()):
    """A one-level OME-NGFF 0.5 image written with zarr and ome-zarr's metadata writer."""
    root = zarr.open_group(str(path), mode="w")
    root.create_array("0", data=image)
    transforms = [{"type": "scale", "scale": scale}, {"type": "translation", "translation": translation}]
    described = [{"name": a, "type": "time" if a == "t" else "space"} for a in axes]
    described = [
        axis | ({"unit": units[axis["name"]]} if axis["name"] in units else {}) for axis in described
    ]
    write_multiscales_metadata(root, [{"path": "0", "coordinateTransformations": transforms}], axes=described)
    if multiscales_transforms:  # ome-zarr writes none: added to its metadata
        ome = root.attrs["ome"]
        ome["multiscales"][0]["coordinateTransformations"] = list(multiscales_transforms)
        root.attrs["ome"] = ome
    return path


def store_metadata(path):
    """The axes and each level's (scale, translation) of a store's first image."""
    image = get_metadata(zarr.open_group(str(path), mode="r"))["multiscales"][0]
    levels = [({t["type"]: t[t["type"]] for t in d["coordinateTransformations"]}) for d in image["datasets"]]
    return image["axes"], [(level["scale"], level["translation"]) for level in levels]


def test_a_z_stack_keeps_its_z_spacing_origin_and_unit_at_every_level(model, tmp_path):
    image = np.random.default_rng(0).integers(0, 4000, (2, 20, 24), dtype=np.uint16)
    source_path = write_ngff(tmp_path / "stack.ome.zarr", image, "zyx", [2.0, 0.5, 0.5], [10.0, 3.0, 1.0],
                             dict.fromkeys("zyx", "micrometer"))  # fmt: skip
    source = open_lazy(source_path)
    assert source.geometry("z") == AxisGeometry(2.0, 10.0, "micrometer")
    assert source.origin == (3.0, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ome-zarr accepts what is written
        job = upscale_to_ome_zarr(source, model, tmp_path / "stack_x4.ome.zarr",
                                  config=UpscaleConfig(device="cpu"), block=16, levels=3)  # fmt: skip
        result = drive(job)
    axes, levels = store_metadata(result.path)
    assert axes == [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    for k, (scale, translation) in enumerate(levels):
        side = 0.125 * 2**k
        assert scale == pytest.approx([2.0, side, side])
        assert translation == pytest.approx([10.0, 3.0 + (side - 0.5) / 2, 1.0 + (side - 0.5) / 2])
    written, given = open_pyramid(result.path), open_pyramid(source_path)
    assert (written.scale[0], written.translate[0]) == (given.scale[0], given.translate[0]) == (2.0, 10.0)
    assert written.translate[1:] == pytest.approx((3.0 - 0.1875, 1.0 - 0.1875))  # y/x as before


def test_a_time_series_keeps_its_time_step_and_time_unit(tmp_path):
    image = np.zeros((3, 2, 8, 8), np.uint8)
    units = {"t": "second"} | dict.fromkeys("zyx", "micrometer")
    scale, translation = [30.0, 1.5, 0.2, 0.2], [5.0, -1.0, 0.0, 0.0]
    path = write_ngff(tmp_path / "movie.ome.zarr", image, "tzyx", scale, translation, units)
    source = open_lazy(path)
    assert source.geometry("t") == AxisGeometry(30.0, 5.0, "second")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_store(tmp_path / "movie_x4.ome.zarr", source, scale=4, levels=2)
    axes, levels = store_metadata(tmp_path / "movie_x4.ome.zarr")
    assert [(a["type"], a.get("unit")) for a in axes] == [("time", "second"), *[("space", "micrometer")] * 3]
    for k, (scale, translation) in enumerate(levels):
        assert scale[:2] == [30.0, 1.5]
        assert translation[:2] == [5.0, -1.0]
        assert scale[2:] == pytest.approx([0.05 * 2**k] * 2)
    assert open_pyramid(tmp_path / "movie_x4.ome.zarr").scale[:2] == (30.0, 1.5)


@pytest.mark.parametrize(
    ("axis", "unit", "written"),
    [
        ("t", "ms", "millisecond"),
        ("t", "minute", "minute"),
        ("t", "micrometer", None),
        ("z", "um", "micrometer"),
        ("z", "second", None),
        ("z", "pixel", None),
    ],
)
def test_units_are_written_only_as_ome_ngff_names_them(tmp_path, axis, unit, written):
    image = lazy_image(np.zeros((2, 8, 8), np.uint8), axes=(axis, "y", "x"),
                       lead_geometry={axis: AxisGeometry(2.0, 0.0, unit)})  # fmt: skip
    create_store(tmp_path / "out.ome.zarr", image, scale=4, levels=1)
    axes, _ = store_metadata(tmp_path / "out.ome.zarr")
    assert axes[0].get("unit") == written
    assert written is None or written in (KNOWN_TEMPORAL_UNITS if axis == "t" else KNOWN_SPATIAL_UNITS)


def test_an_input_without_z_spacing_keeps_scale_1_and_origin_0(tmp_path):
    path = tmp_path / "plain.ome.zarr"
    write_image(np.zeros((2, 16, 16), np.uint16), zarr.open_group(str(path), mode="w"), axes="zyx",
                scale={"y": 0.5, "x": 0.5}, scale_factors=[])  # fmt: skip
    create_store(tmp_path / "plain_x4.ome.zarr", open_lazy(path), scale=4, levels=2)
    axes, levels = store_metadata(tmp_path / "plain_x4.ome.zarr")
    assert "unit" not in axes[0]
    assert [(scale[0], translation[0]) for scale, translation in levels] == [(1.0, 0.0), (1.0, 0.0)]


def test_multiscales_transforms_apply_after_the_datasets(tmp_path):
    path = write_ngff(tmp_path / "s.ome.zarr", np.zeros((2, 8, 8), np.uint8), "zyx", [2.0, 0.5, 0.5],
                      [10.0, 1.0, 0.0], {}, [{"type": "scale", "scale": [1.5, 2.0, 2.0]}])  # fmt: skip
    source = open_lazy(path)
    assert source.geometry("z") == AxisGeometry(3.0, 15.0, "")
    assert (source.pixel_size.y, source.origin) == (1.0, (2.0, 0.0))


def test_spacing_for_an_axis_the_image_lacks_is_refused():
    with pytest.raises(InputError, match="not the image's leading"):
        lazy_image(np.zeros((8, 8), np.uint8), lead_geometry={"z": AxisGeometry(2.0)})


def test_an_imagej_hyperstack_gives_its_z_spacing_and_frame_interval(tmp_path):
    path = tmp_path / "movie.tif"
    metadata = {"axes": "TZYX", "spacing": 2.5, "unit": "um", "finterval": 30.0}
    tifffile.imwrite(
        path, np.zeros((3, 2, 8, 8), np.uint16), imagej=True, resolution=(2, 2), metadata=metadata
    )
    source = open_lazy(path)
    assert (source.geometry("t"), source.geometry("z")) == (
        AxisGeometry(30.0, 0.0, "sec"),
        AxisGeometry(2.5, 0.0, "um"),
    )
    create_store(tmp_path / "movie_x4.ome.zarr", source, scale=4, levels=1)
    axes, [(scale, translation)] = store_metadata(tmp_path / "movie_x4.ome.zarr")
    assert [a.get("unit") for a in axes] == ["second", "micrometer", "micrometer", "micrometer"]
    assert (scale[:2], translation[:2]) == ([30.0, 2.5], [0.0, 0.0])
    fiji = {"axes": "ZYX", "spacing": 250.0, "unit": "\\u00B5m", "zunit": "nm"}  # as Fiji writes them
    tifffile.imwrite(tmp_path / "fiji.tif", np.zeros((2, 8, 8), np.uint16), imagej=True, resolution=(2, 2),
                     metadata=fiji)  # fmt: skip
    stack = open_lazy(tmp_path / "fiji.tif")
    assert (stack.geometry("z"), stack.pixel_size.unit) == (AxisGeometry(250.0, 0.0, "nm"), "µm")
    create_store(tmp_path / "fiji_x4.ome.zarr", stack, scale=4, levels=1)
    axes, _ = store_metadata(tmp_path / "fiji_x4.ome.zarr")
    assert [a.get("unit") for a in axes] == ["nanometer", "micrometer", "micrometer"]
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((2, 8, 8), np.uint16))
    assert open_lazy(tmp_path / "plain.tif").geometry("z") == AxisGeometry()
