"""BioImage Model Zoo packages: export of a fine-tuning run, bioimageio.core's own test, and import back.

One tiny run (an SRVGGNetCompact of 8 features and 2 convolutions, 2 epochs on 40 px crops) is exported once
per module; its package is tested by ``bioimageio.core.test_model`` (both weight formats, six input shapes
each) in about 15 s on a CPU.
"""

import ast
import hashlib
import io
import shutil
import zipfile

import numpy as np
import pytest
import torch
import yaml

from napari_microdisk_sr.core import train
from napari_microdisk_sr.core.archs import RRDBNet, SRVGGNetCompact
from napari_microdisk_sr.core.errors import InputError, OutputError, WeightsError
from napari_microdisk_sr.core.export import architecture_source, export_package
from napari_microdisk_sr.core.infer import upscale_array
from napari_microdisk_sr.core.io import read_csv
from napari_microdisk_sr.core.models import ModelSpec, load_model, save_model
from napari_microdisk_sr.core.progress import drive
from napari_microdisk_sr.core.sample import make_scene

pytest.importorskip("bioimageio.spec")

PARAMS = {"num_feat": 8, "num_conv": 2}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished fine-tuning run of a tiny network: model.pth, model.json, history.csv."""
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    spec = ModelSpec("SRVGGNetCompact", PARAMS)
    parent = save_model(spec.build(), spec, root / "parent.pth")
    crops = [make_scene(seed=s, size=(16, 16), n_disks=0, rgb=True).hr[:40, :40] for s in range(6)]
    config = train.FineTuneConfig(
        model=str(parent), epochs=2, lr=1e-3, batch_size=2, patch=16, pairs_per_epoch=4, device="cpu"
    )
    drive(train.fine_tune(crops, config, root / "run"))
    return root / "run"


@pytest.fixture(scope="module")
def package(run_dir):
    return export_package(run_dir, run_dir.parent / "tiny.zip", authors=("A. Tester",))


def _rdf(path):
    with zipfile.ZipFile(path) as archive:
        return yaml.safe_load(archive.read("rdf.yaml")), archive


def _read(path, name):
    with zipfile.ZipFile(path) as archive:
        return archive.read(name)


def _array(path, name, tmp_path):
    (tmp_path / name).write_bytes(_read(path, name))
    return np.load(tmp_path / name)


def test_bioimageio_core_passes_the_package(package):
    test_model = pytest.importorskip("bioimageio.core").test_model
    summary = test_model(package.path)
    failed = [d.name for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", failed
    names = " ".join(d.name for d in summary.details)
    assert "(pytorch_state_dict)" in names
    assert "(torchscript)" in names


def test_package_describes_x4_axes_flat_weights_and_a_self_contained_architecture(package):
    rdf, _ = _rdf(package.path)
    spec = ModelSpec("SRVGGNetCompact", PARAMS)
    assert rdf["format_version"].startswith("0.5.")
    out_axes = {a["id"]: a for a in rdf["outputs"][0]["axes"] if a["type"] == "space"}
    for axis in ("y", "x"):
        assert out_axes[axis]["scale"] == 0.25
        assert out_axes[axis]["size"] == {"tensor_id": "input", "axis_id": axis}
        assert out_axes[axis]["halo"] == 4 * spec.tile_pad
    weights = rdf["weights"]["pytorch_state_dict"]
    state = torch.load(io.BytesIO(_read(package.path, weights["source"])), weights_only=True)
    assert set(state) == set(spec.build().state_dict())  # flat: no params_ema wrapper
    arch = weights["architecture"]
    assert arch["callable"] == "SRVGGNetCompact"
    assert arch["kwargs"] == spec.kwargs
    source = _read(package.path, arch["source"])
    assert hashlib.sha256(source).hexdigest() == arch["sha256"]
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).partition(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported == {"torch"}
    assert rdf["weights"]["torchscript"]["parent"] == "pytorch_state_dict"
    assert package.torchscript_max_abs_diff < 1e-5


def test_value_mapping_is_declared_and_matches_upscale(package, run_dir, tmp_path):
    rdf, _ = _rdf(package.path)
    pre = [p["id"] for p in rdf["inputs"][0]["preprocessing"]]
    post = [p["id"] for p in rdf["outputs"][0]["postprocessing"]]
    assert rdf["inputs"][0]["data"]["type"] == "uint8"
    assert pre == ["ensure_dtype", "scale_linear", "ensure_dtype"]
    assert post[0] == "clip"
    assert post[1] == "scale_linear"
    test_in = _array(package.path, "test_input.npy", tmp_path)
    test_out = _array(package.path, "test_output.npy", tmp_path)
    assert test_in.dtype == np.uint8
    assert test_out.shape == (1, 3, 4 * test_in.shape[2], 4 * test_in.shape[3])
    ours = upscale_array(
        test_in[0].transpose(1, 2, 0), load_model(run_dir / "model.pth"), tile=0, device="cpu"
    )
    # the package's output is float32 in the input's range; ours is the same rounded to uint8
    assert np.abs(ours.astype(np.float32) - test_out[0].transpose(1, 2, 0)).max() <= 0.5 + 1e-3


def test_readme_holds_the_validation_table_recipe_citation_and_cover(package, run_dir):
    readme = _read(package.path, "README.md").decode()
    history = read_csv(run_dir / "history.csv")
    assert "## Validation" in readme
    for row in history:
        assert f"| {row['epoch']} | {float(row['val_psnr']):.2f} |" in readme
    assert "epochs: 2 of 2" in readme
    assert "degradation (how LR patches were made): realistic" in readme
    assert "10.1109/ICCVW54120.2021.00217" in readme
    assert "BSD-3-Clause" in readme
    rdf, _ = _rdf(package.path)
    assert rdf["cite"][0]["doi"] == "10.1109/ICCVW54120.2021.00217"
    assert rdf["authors"] == [{"name": "A. Tester"}]
    import imageio.v3 as iio

    cover = iio.imread(_read(package.path, rdf["covers"][0]["source"]), extension=".png")
    assert cover.shape[1] == 2 * cover.shape[0]


def test_package_loads_as_a_model_and_upscales_like_its_run(package, run_dir, tmp_path):
    image = make_scene(seed=3, size=(40, 40), rgb=True).lr
    from_run = upscale_array(image, load_model(run_dir / "model.pth"), device="cpu")
    loaded = load_model(package.path)
    assert loaded.spec == ModelSpec("SRVGGNetCompact", PARAMS)
    assert np.array_equal(upscale_array(image, loaded, device="cpu"), from_run)
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(package.path) as archive:
        archive.extractall(unpacked)
    from_yaml = load_model(unpacked / "rdf.yaml")
    assert np.array_equal(upscale_array(image, from_yaml, device="cpu"), from_run)
    (unpacked / "weights.pth").unlink()
    with pytest.raises(WeightsError, match=r"weights\.pth that .*rdf\.yaml names are missing"):
        load_model(unpacked / "rdf.yaml")


def test_a_12_bit_export_declares_uint16_scaled_by_4095(run_dir, tmp_path):
    result = export_package(run_dir / "model.pth", tmp_path / "twelve.zip", intensity="bits:12")
    rdf, _ = _rdf(result.path)
    assert rdf["inputs"][0]["data"] == {"type": "uint16", "range": [0.0, 4095.0]}
    gain = rdf["inputs"][0]["preprocessing"][1]["kwargs"]["gain"]
    assert gain == pytest.approx(1 / 4095)
    test_in = _array(result.path, "test_input.npy", tmp_path)
    test_out = _array(result.path, "test_output.npy", tmp_path)
    assert test_in.dtype == np.uint16
    assert test_in.max() <= 4095
    ours = upscale_array(
        test_in[0].transpose(1, 2, 0),
        load_model(run_dir / "model.pth"),
        tile=0,
        device="cpu",
        intensity="bits:12",
    )
    assert np.abs(ours.astype(np.float32) - test_out[0].transpose(1, 2, 0)).max() <= 0.5 + 1e-2
    for refused in (
        {"intensity": "percentile"},
        {"dtype": "uint16"},
    ):  # the run's auto is percentile for uint16
        with pytest.raises(InputError, match="cannot invert a percentile map"):
            export_package(run_dir / "model.pth", tmp_path / "p.zip", **refused)


def test_a_gray_package_passes_bioimageio_core_and_matches_upscale_of_gray_images(run_dir, tmp_path):
    result = export_package(run_dir, tmp_path / "gray.zip", gray=True)
    rdf, _ = _rdf(result.path)
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["callable"] == "GraySRVGGNetCompact"
    test_in = _array(result.path, "test_input.npy", tmp_path)
    test_out = _array(result.path, "test_output.npy", tmp_path)
    assert test_in.shape[:2] == (1, 1)
    assert test_out.shape[:2] == (1, 1)
    ours = upscale_array(test_in[0, 0], load_model(run_dir / "model.pth"), tile=0, device="cpu")
    assert np.abs(ours.astype(np.float32) - test_out[0, 0]).max() <= 0.5 + 1e-3
    assert np.array_equal(
        load_model(result.path).module.state_dict()["body.0.weight"],
        load_model(run_dir / "model.pth").module.state_dict()["body.0.weight"],
    )
    summary = pytest.importorskip("bioimageio.core").test_model(result.path)
    assert summary.status == "passed", [d.name for d in summary.details if d.status == "failed"]


def test_export_refuses_a_run_without_a_model_and_an_existing_package(run_dir, package, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(run_dir / "checkpoint.pth", unfinished / "checkpoint.pth")
    with pytest.raises(InputError, match=r"no model\.pth: its run has saved no model yet"):
        export_package(unfinished, tmp_path / "a.zip")
    assert not (tmp_path / "a.zip").exists()
    before = package.path.read_bytes()
    with pytest.raises(OutputError, match="not overwritten"):
        export_package(run_dir, package.path)
    assert package.path.read_bytes() == before
    assert [p.name for p in package.path.parent.iterdir() if p.name.startswith(".")] == []


def test_a_package_of_foreign_or_altered_weights_is_refused(package, tmp_path):
    rdf, _ = _rdf(package.path)
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("rdf.yaml", yaml.safe_dump(rdf))
        buffer = io.BytesIO()
        torch.save({"encoder.weight": torch.zeros(3, 3)}, buffer)
        archive.writestr("weights.pth", buffer.getvalue())
    with pytest.raises(WeightsError, match="SHA-256"):
        load_model(foreign)
    rdf["weights"]["pytorch_state_dict"].pop("sha256")
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("rdf.yaml", yaml.safe_dump(rdf))
        archive.writestr("weights.pth", buffer.getvalue())
    with pytest.raises(WeightsError, match=r"foreign\.zip"):
        load_model(foreign)


@pytest.mark.parametrize(
    ("network", "params"),
    [
        (SRVGGNetCompact, {"num_feat": 8, "num_conv": 2, "act_type": "leakyrelu"}),
        (
            RRDBNet,
            {"num_in_ch": 3, "num_out_ch": 3, "scale": 2, "num_feat": 8, "num_block": 1, "num_grow_ch": 4},
        ),
    ],
)
def test_architecture_source_builds_the_same_network_without_this_package(network, params, tmp_path):
    path = tmp_path / "arch.py"
    path.write_text(architecture_source(network))
    namespace = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)  # a file of ours, written just now
    torch.manual_seed(0)
    ours = network(**params).eval()
    theirs = namespace[network.__name__](**params).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(theirs(x), ours(x))
    assert "napari_microdisk_sr" not in path.read_text()
