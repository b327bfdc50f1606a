"""The plugin's reader: OME-Zarr images open lazily in napari as multiscale layers, placed by pixel size."""

import dask.array as da
import numpy as np
import zarr
from ome_zarr.writer import write_image, write_multiscales_metadata

from napari_microdisk_sr._reader import get_reader
from napari_microdisk_sr._widgets._sources import read_source
from napari_microdisk_sr._widgets._upscale_jobs import upscale_layers_to_ome_zarr
from napari_microdisk_sr.core.infer import UpscaleConfig
from napari_microdisk_sr.core.io import PixelSize
from napari_microdisk_sr.core.lazy import lazy_image
from napari_microdisk_sr.core.model_cache import ModelCache
from napari_microdisk_sr.core.models import LoadedModel, ModelSpec
from napari_microdisk_sr.core.ome_zarr import upscale_to_ome_zarr
from napari_microdisk_sr.core.progress import StopFlag, drive

PLUGIN = "napari-microdisk-sr"


def test_a_result_opens_as_a_lazy_multiscale_layer_where_its_input_is(make_napari_viewer, tmp_path):
    spec = ModelSpec("SRVGGNetCompact", {"num_feat": 4, "num_conv": 1, "upscale": 4})
    model = LoadedModel(spec.build().eval(), spec, "tiny", "test", "cd" * 32)
    image = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    source = lazy_image(image, pixel_size=PixelSize(0.5, 0.5, "um"))
    config = UpscaleConfig(device="cpu")
    job = upscale_to_ome_zarr(
        source, model, tmp_path / "field_x4.ome.zarr", config=config, block=16, levels=3
    )
    store = drive(job).path
    viewer = make_napari_viewer()
    (layer,) = viewer.open(store, plugin=PLUGIN)
    assert layer.multiscale
    assert layer.rgb
    assert [level.shape for level in layer.data] == [(160, 192, 3), (80, 96, 3), (40, 48, 3)]
    assert all(isinstance(level, da.Array) for level in layer.data)  # read chunk by chunk, on screen
    np.testing.assert_allclose(layer.scale, (0.125, 0.125))
    np.testing.assert_allclose(layer.translate, (-0.1875, -0.1875))  # pixel centres on the input's
    assert layer.metadata["microdisk_sr"]["model"] == "tiny"
    assert layer.name == "field_x4"


def test_any_ome_ngff_image_opens_and_other_folders_are_left_to_other_readers(make_napari_viewer, tmp_path):
    image = np.arange(64 * 64, dtype=np.uint16).reshape(2, 32, 64)
    store = tmp_path / "stack.ome.zarr"
    write_image(image, zarr.open_group(str(store), mode="w"), axes="zyx", scale={"y": 0.3, "x": 0.3},
                scale_factors=[2])  # fmt: skip
    viewer = make_napari_viewer()
    (layer,) = viewer.open(store, plugin=PLUGIN)
    assert layer.multiscale
    np.testing.assert_array_equal(layer.data[0], image)
    np.testing.assert_allclose(layer.scale, (1.0, 0.3, 0.3))
    zarr.open_group(str(tmp_path / "labels.zarr"), mode="w")  # a group that holds no image
    assert get_reader(str(tmp_path / "labels.zarr")) is None
    assert get_reader(str(tmp_path / "x.tif")) is None


def test_a_z_stack_and_its_result_open_aligned_along_z(make_napari_viewer, tmp_path, tiny_model):
    store = tmp_path / "stack.ome.zarr"
    root = zarr.open_group(str(store), mode="w")
    root.create_array("0", data=np.zeros((3, 16, 16), np.uint16))
    transforms = [
        {"type": "scale", "scale": [2.0, 0.5, 0.5]},
        {"type": "translation", "translation": [10.0, 0, 0]},
    ]
    write_multiscales_metadata(root, [{"path": "0", "coordinateTransformations": transforms}], axes="zyx")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(store, plugin=PLUGIN)
    np.testing.assert_allclose(layer.scale, (2.0, 0.5, 0.5))
    np.testing.assert_allclose(layer.translate, (10.0, 0.0, 0.0))
    # Super-resolve's OME-Zarr job writes the layer's z geometry into the store it makes
    job = upscale_layers_to_ome_zarr([read_source(layer, 0.0, lazy=True)], ModelCache(), tiny_model,
                                     UpscaleConfig(device="cpu"), StopFlag())  # fmt: skip
    drive(job)
    (result,) = viewer.open(tmp_path / "stack_microdisk_sr" / "stack_x4_tiny.ome.zarr", plugin=PLUGIN)
    np.testing.assert_allclose(result.scale, (2.0, 0.125, 0.125))
    np.testing.assert_allclose(result.translate, (10.0, -0.1875, -0.1875))
