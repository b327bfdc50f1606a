"""ModelSpec, architecture inference, the registry, and loading/saving models."""

import json
import logging

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from napari_microdisk_sr.core import models
from napari_microdisk_sr.core.archs import RRDBNet, SRVGGNetCompact
from napari_microdisk_sr.core.errors import InputError, OutputError, WeightsError
from napari_microdisk_sr.core.intensity import Intensity
from napari_microdisk_sr.core.model_cache import ModelCache
from napari_microdisk_sr.core.models import (
    DEFAULT_MODEL,
    REGISTRY,
    LoadedModel,
    ModelSpec,
    load_model,
    recorded_intensity_of,
    save_model,
    sidecar_path,
    spec_from_state_dict,
)
from napari_microdisk_sr.core.weights import EMBEDDED, embedded_files, file_sha256

TINY_RRDB = {"num_in_ch": 1, "num_out_ch": 1, "num_feat": 4, "num_block": 1, "num_grow_ch": 2}


def _tiny_rrdb_spec(**overrides) -> ModelSpec:
    return ModelSpec("RRDBNet", {**TINY_RRDB, **overrides})


# --------------------------------------------------------------------------------------------------------
# ModelSpec


def test_spec_is_normalised_to_every_argument_in_order():
    short = ModelSpec("SRVGGNetCompact", {"upscale": 2})
    spelled_out = ModelSpec(
        "SRVGGNetCompact",
        (
            ("act_type", "prelu"),
            ("num_conv", 16),
            ("upscale", 2),
            ("num_feat", 64),
            ("num_in_ch", 3),
            ("num_out_ch", 3),
        ),
    )
    assert short == spelled_out
    assert len({short, spelled_out}) == 1
    assert [name for name, _ in short.params] == [
        "num_in_ch",
        "num_out_ch",
        "num_feat",
        "num_conv",
        "upscale",
        "act_type",
    ]
    assert (short.scale, short.in_channels, short.out_channels) == (2, 3, 3)
    assert str(short).startswith("SRVGGNetCompact(num_in_ch=3, ")


@pytest.mark.parametrize(
    ("arch", "params", "match"),
    [
        ("ESRGAN", {}, "unknown architecture 'ESRGAN'; choose one of RRDBNet, SRVGGNetCompact"),
        ("RRDBNet", {"num_in_ch": 3, "num_out_ch": 3, "blocks": 6}, "RRDBNet has no parameter blocks"),
        ("RRDBNet", {"num_in_ch": 3}, "RRDBNet needs num_out_ch"),
        ("RRDBNet", {"num_in_ch": 3, "num_out_ch": 3, "scale": 8}, "scale 4, 2 or 1"),
        ("SRVGGNetCompact", [1, 2], "mapping or"),
    ],
)
def test_invalid_specs_are_refused(arch, params, match):
    with pytest.raises(InputError, match=match):
        ModelSpec(arch, params)


def test_spec_json_round_trip():
    spec = _tiny_rrdb_spec(scale=2)
    written = json.loads(json.dumps(spec.to_json()))
    assert (written["scale"], written["in_channels"]) == (2, 1)
    assert ModelSpec.from_json(written) == spec
    with pytest.raises(InputError, match="scale=4 but its params give 2"):
        ModelSpec.from_json({**written, "scale": 4})
    with pytest.raises(InputError, match="'arch'"):
        ModelSpec.from_json({"params": {}})


def test_build_gives_the_network_of_the_spec():
    net = _tiny_rrdb_spec(scale=2).build()
    assert isinstance(net, RRDBNet)
    assert net(torch.rand(1, 1, 6, 8)).shape == (1, 1, 12, 16)


def _measured_radius(spec: ModelSpec, size: int) -> int:
    """The largest distance, in input pixels, from an output pixel to an input pixel it depends on."""
    torch.manual_seed(0)
    net = spec.build().double()
    x = torch.randn(1, spec.in_channels, size, size, dtype=torch.float64, requires_grad=True)
    y = net(x)
    centre, radius = size * spec.scale // 2, 0
    for oy in range(centre - 4, centre + 4):  # every phase of the up- and down-samplings
        (grad,) = torch.autograd.grad(y[0, 0, oy, centre], x, retain_graph=True)
        rows = grad[0].abs().sum(dim=(0, 2)).nonzero()[:, 0]
        iy = oy // spec.scale
        radius = max(radius, iy - rows.min().item(), rows.max().item() - iy)
    return radius


@pytest.mark.parametrize(
    ("spec", "size"),
    [
        (_tiny_rrdb_spec(scale=4), 64),
        (_tiny_rrdb_spec(scale=2), 96),
        (_tiny_rrdb_spec(scale=1), 176),
        (ModelSpec("SRVGGNetCompact", {"num_in_ch": 1, "num_out_ch": 1, "num_feat": 4, "num_conv": 3}), 32),
    ],
    ids=["rrdb-x4", "rrdb-x2", "rrdb-x1", "srvgg"],
)
def test_receptive_radius_is_exact(spec, size):
    assert _measured_radius(spec, size) == spec.receptive_radius


def test_tile_pad_follows_the_receptive_field():
    assert REGISTRY["realesr-animevideov3"].spec.tile_pad == 18
    assert REGISTRY["realesrgan-x4plus"].spec.tile_pad == 32
    assert ModelSpec("RRDBNet", {"num_in_ch": 3, "num_out_ch": 3, "scale": 2}).tile_pad == 64
    assert _tiny_rrdb_spec().tile_pad == 19  # a shallow network: its whole receptive field


def test_srvgg_tiles_padded_by_tile_pad_equal_the_whole_image():
    spec = ModelSpec(
        "SRVGGNetCompact", {"num_in_ch": 1, "num_out_ch": 1, "num_feat": 4, "num_conv": 2, "upscale": 2}
    )
    torch.manual_seed(0)
    net, x = spec.build().eval(), torch.rand(1, 1, 24, 24)
    with torch.no_grad():
        whole = net(x)

        def left_half(pad):
            out = net(x[..., : 12 + pad])
            return out[..., : 12 * spec.scale]

        assert torch.equal(left_half(spec.tile_pad), whole[..., : 12 * spec.scale])
        assert not torch.equal(left_half(spec.tile_pad - 1), whole[..., : 12 * spec.scale])


# --------------------------------------------------------------------------------------------------------
# spec_from_state_dict


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec("RRDBNet", {"num_in_ch": 3, "num_out_ch": 3}),
        ModelSpec("RRDBNet", {"num_in_ch": 3, "num_out_ch": 3, "num_block": 6}),  # x4plus anime 6B
        ModelSpec("RRDBNet", {"num_in_ch": 3, "num_out_ch": 3, "scale": 2}),  # x2plus: 12 unshuffled channels
        ModelSpec("RRDBNet", {"num_in_ch": 3, "num_out_ch": 3, "scale": 1, "num_feat": 32}),
        ModelSpec(
            "RRDBNet", {"num_in_ch": 1, "num_out_ch": 1, "scale": 2, "num_block": 3, "num_grow_ch": 16}
        ),
        ModelSpec("RRDBNet", {"num_in_ch": 1, "num_out_ch": 3}),
        ModelSpec("SRVGGNetCompact", {}),  # animevideov3
        ModelSpec("SRVGGNetCompact", {"num_conv": 32}),  # general-x4v3
        ModelSpec(
            "SRVGGNetCompact", {"num_in_ch": 1, "num_out_ch": 1, "num_feat": 16, "num_conv": 0, "upscale": 3}
        ),
    ],
    ids=str,
)
def test_spec_round_trips_through_a_state_dict(spec):
    with torch.device("meta"):
        state = spec.build().state_dict()
    assert spec_from_state_dict(state) == spec


def test_srvgg_without_prelu_needs_its_sidecar():
    with torch.device("meta"):
        state = SRVGGNetCompact(num_conv=2, act_type="relu").state_dict()
    with pytest.raises(WeightsError, match=r"cannot be identified .* sidecar"):
        spec_from_state_dict(state)


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"encoder.weight": (2, 2)}, r"neither an RRDBNet nor an SRVGGNetCompact .*encoder\.weight"),
        (
            {"conv_first.weight": (8,), "conv_last.weight": (3, 8, 3, 3)},
            r"conv_first\.weight has shape \(8,\)",
        ),
        (
            {"body.0.weight": (8, 3, 3, 3), "body.1.weight": (8,), "body.2.weight": (50, 8, 3, 3)},
            "not 3 channels",
        ),
        ({"body.0.weight": (48, 3, 3, 3), "body.1.weight": (48,)}, "no valid SRVGGNetCompact"),
    ],
)
def test_state_dicts_of_no_known_network(state, match):
    with pytest.raises(WeightsError, match=match):
        spec_from_state_dict({k: torch.zeros(shape) for k, shape in state.items()})


# --------------------------------------------------------------------------------------------------------
# Registry and load_model


def test_registry_describes_the_embedded_models():
    assert DEFAULT_MODEL == "realesrgan-x4plus"
    assert set(REGISTRY) == {"realesrgan-x4plus", "realesr-animevideov3"}
    for name, entry in REGISTRY.items():
        assert entry.spec == ModelSpec(EMBEDDED[name].arch, EMBEDDED[name].kwargs)
        assert EMBEDDED[name].stem in entry.source
        assert entry.description
    assert REGISTRY["realesr-animevideov3"].spec == ModelSpec("SRVGGNetCompact", {})
    assert REGISTRY[DEFAULT_MODEL].spec == ModelSpec("RRDBNet", {"num_in_ch": 3, "num_out_ch": 3})


def test_load_registry_model():
    loaded = load_model("realesr-animevideov3")
    assert isinstance(loaded, LoadedModel)
    assert isinstance(loaded.module, SRVGGNetCompact)
    assert not loaded.module.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in loaded.module.parameters())
    assert loaded.name == "realesr-animevideov3"
    assert loaded.spec == REGISTRY["realesr-animevideov3"].spec
    assert loaded.sha256 == file_sha256(embedded_files("realesr-animevideov3")[1])
    assert "REALESRGAN_ANIMAVIDEOV3_UP4X" in loaded.source


def test_load_default_model_strictly():
    loaded = load_model(DEFAULT_MODEL)
    assert isinstance(loaded.module, RRDBNet)
    assert sum(p.numel() for p in loaded.module.parameters()) == 16_697_987
    with torch.no_grad():
        out = loaded.module(torch.rand(1, 3, 4, 4))
    assert out.shape == (1, 3, 16, 16)
    assert torch.isfinite(out).all()


def _camera() -> tuple[np.ndarray, np.ndarray]:
    """skimage's camera, top-left 256x256 (HR) and area-downsampled x4 (LR, 64x64), float in [0, 1]."""
    hr = data.camera()[:256, :256].astype(np.float32) / 255
    return hr, cv2.resize(hr, (64, 64), interpolation=cv2.INTER_AREA)


def _psnr(ref: np.ndarray, img: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((ref - img) ** 2)))


def _upscale_gray(module: torch.nn.Module, lr: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(lr)[None, None].repeat(1, 3, 1, 1)
    with torch.no_grad():
        return module.eval()(x)[0].mean(dim=0).clamp(0, 1).numpy()


def _area_down4(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (img.shape[1] // 4, img.shape[0] // 4), interpolation=cv2.INTER_AREA)


@pytest.mark.slow
def test_genuine_x4plus_output_downsamples_back_to_its_input():
    """The embedded x4plus weights are genuine: their x4 output, area-downsampled, reproduces the input
    (measured 34.1 dB); the same network randomly initialised does not (14.6 dB)."""
    _, lr = _camera()
    assert _psnr(lr, _area_down4(_upscale_gray(load_model("realesrgan-x4plus").module, lr))) >= 32
    torch.manual_seed(0)
    assert _psnr(lr, _area_down4(_upscale_gray(REGISTRY["realesrgan-x4plus"].spec.build(), lr))) < 25


def test_genuine_animevideov3_beats_nearest_neighbour():
    """The compact model adds a learnt residual to the nearest-neighbour upscaled input: genuine weights
    bring it near bicubic quality (measured 28.8 dB vs 28.8 bicubic); random ones stay at the nearest-
    neighbour level (25.8-26.0 dB vs 26.3)."""
    hr, lr = _camera()
    assert _psnr(hr, _upscale_gray(load_model("realesr-animevideov3").module, lr)) >= 28
    torch.manual_seed(0)
    assert _psnr(hr, _upscale_gray(REGISTRY["realesr-animevideov3"].spec.build(), lr)) < 27


def test_unknown_name_lists_the_registry():
    with pytest.raises(
        WeightsError, match="unknown model 'esrgan': choose one of realesrgan-x4plus, realesr-"
    ):
        load_model("esrgan")


# --------------------------------------------------------------------------------------------------------
# save_model and loading files


def _trained(spec: ModelSpec, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = spec.build()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return net


def test_save_and_load_round_trip(tmp_path):
    spec = _tiny_rrdb_spec(scale=2)
    net = _trained(spec)
    path = save_model(net, spec, tmp_path / "finetuned.pth", info={"epochs": 3, "base": "realesrgan-x4plus"})
    assert path == tmp_path / "finetuned.pth"
    record = json.loads(sidecar_path(path).read_text())
    assert sidecar_path(path) == tmp_path / "finetuned.json"
    assert record["spec"] == spec.to_json()
    assert record["info"] == {"epochs": 3, "base": "realesrgan-x4plus"}
    assert record["sha256"] == file_sha256(path)
    # Real-ESRGAN's convention: a plain state dict under params_ema, loadable without our code
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"params_ema"}
    RRDBNet(**spec.kwargs).load_state_dict(raw["params_ema"], strict=True)

    loaded = load_model(path)
    assert (loaded.spec, loaded.name, loaded.source, loaded.sha256) == (
        spec,
        "finetuned",
        str(path),
        record["sha256"],
    )
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), net.eval()(x))


def test_model_cache_reuses_the_last_model_until_its_weights_change(tmp_path):
    cache = ModelCache()
    compact = cache.load("realesr-animevideov3")
    assert cache.load("realesr-animevideov3") is compact
    spec = _tiny_rrdb_spec()
    cache.load(save_model(_trained(spec), spec, tmp_path / "other.pth"))
    assert cache.load("realesr-animevideov3") is not compact  # only the last model is kept

    path = save_model(_trained(spec), spec, tmp_path / "m.pth", info={"name": "first"})
    first = cache.load(path)
    assert cache.load(str(path)) is first
    assert first.name == "first"
    save_model(_trained(spec, seed=1), spec, path, info={"name": "second"}, overwrite=True)
    second = cache.load(path)
    assert second is not first
    assert (second.name, second.sha256) == ("second", file_sha256(path))
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(second.module(x), _trained(spec, seed=1).eval()(x))

    record = json.loads(sidecar_path(path).read_text())  # a sidecar edited alone is read again too
    record["info"]["name"] = "renamed"
    sidecar_path(path).write_text(json.dumps(record) + "\n")
    assert cache.load(path).name == "renamed"

    path.unlink()
    with pytest.raises(WeightsError, match=r"m\.pth"):
        cache.load(path)


def test_save_strips_wrapper_prefixes_and_keeps_float32(tmp_path):
    spec = _tiny_rrdb_spec()
    state = {f"module.{k}": v.half() for k, v in _trained(spec).state_dict().items()}
    path = save_model(state, spec, tmp_path / "m.pth")
    saved = torch.load(path, weights_only=True)["params_ema"]
    assert set(saved) == set(spec.build().state_dict())
    assert all(v.dtype == torch.float32 for v in saved.values())


def test_save_never_overwrites_unless_asked(tmp_path):
    spec = _tiny_rrdb_spec()
    path = save_model(_trained(spec), spec, tmp_path / "m.pth")
    with pytest.raises(OutputError, match=r"m\.pth exists"):
        save_model(_trained(spec, seed=1), spec, path)
    path.unlink()
    with pytest.raises(OutputError, match=r"m\.json exists"):  # nor its sidecar, alone
        save_model(_trained(spec, seed=1), spec, path)
    save_model(_trained(spec, seed=1), spec, path, overwrite=True)
    assert load_model(path).sha256 == json.loads(sidecar_path(path).read_text())["sha256"]


def test_save_refuses_other_formats_and_misfits(tmp_path):
    spec = _tiny_rrdb_spec()
    with pytest.raises(InputError, match=r"saved as \.pth"):
        save_model(_trained(spec), spec, tmp_path / "m.safetensors")
    with pytest.raises(WeightsError, match="mis-shaped"):
        save_model(_trained(spec), _tiny_rrdb_spec(num_feat=8), tmp_path / "m.pth")
    assert list(tmp_path.iterdir()) == []


def test_sidecar_names_activations_that_weights_cannot(tmp_path):
    spec = ModelSpec("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "act_type": "leakyrelu"})
    path = save_model(_trained(spec), spec, tmp_path / "v.pth")
    assert load_model(path).spec == spec
    sidecar_path(path).unlink()
    with pytest.raises(WeightsError, match=r"v\.pth: .*keep the sidecar"):
        load_model(path)


def test_file_without_sidecar_is_inferred(tmp_path):
    spec = ModelSpec("RRDBNet", {"num_in_ch": 3, "num_out_ch": 3, "scale": 2, "num_feat": 8, "num_block": 2})
    path = tmp_path / "x2.pth"
    torch.save({"params": _trained(spec).state_dict()}, path)
    assert load_model(path).spec == spec


def test_stale_sidecar_is_ignored(tmp_path, caplog):
    spec = _tiny_rrdb_spec()
    path = save_model(_trained(spec), spec, tmp_path / "m.pth")
    other = _tiny_rrdb_spec(num_block=2)
    torch.save({"params_ema": _trained(other).state_dict()}, path)  # replaced without its sidecar
    with caplog.at_level(logging.WARNING, logger=models.__name__):
        assert load_model(path).spec == other
    assert "another version" in caplog.text


def test_a_model_s_recorded_mapping_is_read_without_loading_it(tmp_path):
    spec = _tiny_rrdb_spec()
    tuned = save_model(_trained(spec), spec, tmp_path / "tuned.pth", info={"fine_tuning": {"config": {}}})
    assert recorded_intensity_of(tuned) is None  # a run from before the intensity setting, of no bit depth
    info = {"fine_tuning": {"config": {"intensity": "percentile:2,99"}}}
    tuned = save_model(_trained(spec), spec, tmp_path / "tuned.pth", info=info, overwrite=True)
    assert recorded_intensity_of(tuned) == load_model(tuned).intensity == Intensity.parse("percentile:2,99")
    assert recorded_intensity_of(DEFAULT_MODEL) is None
    assert recorded_intensity_of(tmp_path / "missing.pth") is None
    torch.save({"params_ema": _trained(spec).state_dict()}, tuned)  # replaced without its sidecar
    assert recorded_intensity_of(tuned) is None
    tuned.with_suffix(".json").write_text("{")
    with pytest.raises(WeightsError, match="cannot use the sidecar"):
        recorded_intensity_of(tuned)


def test_weights_with_nan_or_inf_are_refused_at_the_door(tmp_path):
    spec = _tiny_rrdb_spec()
    state = _trained(spec).state_dict()
    state["conv_first.weight"][0, 0, 0, :2] = torch.tensor([float("nan"), float("inf")])
    state["conv_last.bias"][0] = float("nan")
    path = tmp_path / "diverged.pth"
    torch.save({"params_ema": state}, path)
    with pytest.raises(
        WeightsError, match=r"diverged\.pth holds 3 NaN or infinite weight\(s\) \(in conv_first"
    ):
        load_model(path)


def test_wrong_architecture_names_the_file_and_the_keys(tmp_path):
    spec = _tiny_rrdb_spec(num_block=2)
    path = tmp_path / "m.pth"
    torch.save(_trained(spec).state_dict(), path)
    sidecar = sidecar_path(path)
    sidecar.write_text(json.dumps({"spec": _tiny_rrdb_spec(num_block=3).to_json()}))
    with pytest.raises(
        WeightsError, match=r"m\.pth does not hold weights of RRDBNet.*30 missing \(body\.2\.rdb1"
    ):
        load_model(path)
    sidecar.write_text(json.dumps({"spec": _tiny_rrdb_spec(num_block=1).to_json()}))
    with pytest.raises(WeightsError, match=r"30 unexpected \(body\.1\.rdb1\.conv1\.weight"):
        load_model(path)
    sidecar.write_text(json.dumps({"spec": _tiny_rrdb_spec(num_block=2, num_grow_ch=3).to_json()}))
    with pytest.raises(
        WeightsError, match=r"mis-shaped \(body\.0\.rdb1\.conv1\.weight \(2, 4, 3, 3\) vs \(3, 4"
    ):
        load_model(path)
    sidecar.write_text("{not json")
    with pytest.raises(WeightsError, match=r"sidecar .*m\.json of m\.pth .*fix or remove it"):
        load_model(path)


def test_foreign_state_dict_names_the_file(tmp_path):
    torch.save({"encoder.weight": torch.zeros(2, 2)}, tmp_path / "unet.pth")
    with pytest.raises(WeightsError, match=r"unet\.pth: the weights are neither"):
        load_model(tmp_path / "unet.pth")
