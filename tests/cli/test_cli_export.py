"""``microdisk-sr export``: a weights file to a zoo package; errors instead of overwriting."""

import zipfile

import pytest
import yaml

from napari_microdisk_sr.cli import main
from napari_microdisk_sr.core.models import ModelSpec, load_model, save_model

pytest.importorskip("bioimageio.spec")


def test_exports_a_weights_file_and_refuses_to_overwrite(tmp_path, capsys):
    spec = ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2})
    weights = save_model(spec.build(), spec, tmp_path / "tiny.pth")
    out = tmp_path / "tiny.zip"
    args = [
        "export",
        str(weights),
        "--out",
        str(out),
        "--author",
        "A. Tester",
        "--dtype",
        "float32",
        "--gray",
    ]
    assert main(args) == 0
    assert f"{out} (" in capsys.readouterr().out
    with zipfile.ZipFile(out) as archive:
        assert {"rdf.yaml", "weights.pth", "weights_torchscript.pt", "SRVGGNetCompact.py"} <= set(
            archive.namelist()
        )
        assert "Not recorded (a bare weights file)" in archive.read("README.md").decode()
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
    assert rdf["inputs"][0]["axes"][1]["channel_names"] == ["gray"]
    assert rdf["inputs"][0]["data"]["type"] == "float32"
    assert load_model(out).spec == spec
    before = out.read_bytes()
    assert main(args) == 2
    assert "error:" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "m.zip")]) == 2
    assert "does not exist" in capsys.readouterr().err
