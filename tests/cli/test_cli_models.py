"""``microdisk-sr models``: listing the registry, its cache state, and the optional official download."""

import dataclasses
import hashlib
import socket

import pytest

from napari_microdisk_sr.cli import main
from napari_microdisk_sr.core import weights
from napari_microdisk_sr.core.weights import OfficialDownload, embedded_cache_path, embedded_weights


@pytest.fixture
def own_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MICRODISK_SR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _section(out: str, name: str) -> str:
    """The lines printed for one model, from its name to the next blank line."""
    start = out.index(f"\n{name}")
    end = out.find("\n\n", start + 1)
    return out[start : end if end > 0 else len(out)]


def test_lists_every_model_with_its_source_and_cache_state(own_cache, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert f"weights cache: {own_cache}" in out
    x4plus, compact = _section(out, "realesrgan-x4plus"), _section(out, "realesr-animevideov3")
    assert "realesrgan-x4plus (default)" in x4plus
    assert "16,697,987 parameters" in x4plus
    assert "REALESRGAN_X4PLUS_UP4X.param/.bin" in x4plus
    assert "official fp32 file: not downloaded (microdisk-sr models --download realesrgan-x4plus)" in x4plus
    assert "621,424 parameters" in compact
    assert "(default)" not in compact
    assert "official" not in compact
    assert "cached:  no (converted to fp32 on first use)" in compact

    embedded_weights("realesr-animevideov3")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert f"cached:  {embedded_cache_path('realesr-animevideov3')}" in _section(out, "realesr-animevideov3")
    assert "cached:  no" in _section(out, "realesrgan-x4plus")


def _pin(monkeypatch, url: str, payload: bytes) -> None:
    entry = weights.EMBEDDED["realesrgan-x4plus"]
    official = OfficialDownload(url=url, sha256=hashlib.sha256(payload).hexdigest(), size=len(payload))
    monkeypatch.setitem(weights.EMBEDDED, "realesrgan-x4plus", dataclasses.replace(entry, official=official))


def test_download_offline_is_a_clear_error(monkeypatch, own_cache, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _pin(monkeypatch, f"http://127.0.0.1:{port}/RealESRGAN_x4plus.pth", b"")
    assert main(["models", "--download", "realesrgan-x4plus", "--timeout", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot download the official realesrgan-x4plus weights")
    assert "use the embedded default 'realesrgan-x4plus'" in err
    assert err.count("\n") == 1


def test_download_prints_the_verified_file(monkeypatch, own_cache, tmp_path, capsys):
    served = tmp_path / "release" / "RealESRGAN_x4plus.pth"
    served.parent.mkdir()
    served.write_bytes(b"official bytes")
    _pin(monkeypatch, served.as_uri(), b"official bytes")
    assert main(["models", "--download", "realesrgan-x4plus"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(own_cache / "official" / "RealESRGAN_x4plus.pth")
    assert main(["models"]) == 0
    assert f"official fp32 file: {printed}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["models", "--download", "realesr-animevideov3"],  # nothing pinned for it
        ["models", "--download", "realesrgan-x4plus", "--timeout", "0"],
        ["models", "--download", "realesrgan-x4plus", "--timeout", "soon"],
    ],
)
def test_bad_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: microdisk-sr models" in capsys.readouterr().err
