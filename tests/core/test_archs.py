"""Our RRDBNet and SRVGGNetCompact against basicsr 1.4.2, the reference implementation; their adapters."""

import pytest
import torch
from torch import nn

from napari_microdisk_sr.core.archs import (
    ARCHITECTURES,
    ResidualDenseBlock,
    RRDBNet,
    SRVGGNetCompact,
    architecture,
    architecture_of,
    detect_architecture,
    freeze_first_blocks,
    layer_groups,
)
from napari_microdisk_sr.core.errors import InputError, TrainingError, WeightsError

RRDB_CONFIGS = [
    pytest.param({"num_in_ch": 3, "num_out_ch": 3}, id="x4plus"),
    pytest.param({"num_in_ch": 1, "num_out_ch": 1, "scale": 2, "num_block": 6}, id="gray-x2-6blocks"),
    pytest.param(
        {"num_in_ch": 3, "num_out_ch": 3, "scale": 1, "num_feat": 16, "num_block": 2, "num_grow_ch": 8},
        id="x1-small",
    ),
]
SRVGG_CONFIGS = [
    pytest.param({}, id="animevideov3"),
    pytest.param({"num_conv": 3, "upscale": 2, "act_type": "relu"}, id="relu-x2"),
    pytest.param(
        {
            "num_in_ch": 1,
            "num_out_ch": 1,
            "num_feat": 8,
            "num_conv": 2,
            "upscale": 3,
            "act_type": "leakyrelu",
        },
        id="gray-leakyrelu-x3",
    ),
]


def _assert_same_network(ours: torch.nn.Module, reference: torch.nn.Module, in_ch: int, scale: int) -> None:
    """Same keys in the same order and shapes; the same output for the same (random) weights."""
    ref_state = reference.state_dict()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in ref_state.items()
    ]
    generator = torch.Generator().manual_seed(0)
    weights = {k: torch.randn(v.shape, generator=generator) * 0.05 for k, v in ref_state.items()}
    reference.load_state_dict(weights, strict=True)
    ours.load_state_dict(weights, strict=True)
    x = torch.rand(1, in_ch, 8, 12, generator=generator)
    with torch.no_grad():
        expected, got = reference.eval()(x), ours.eval()(x)
    assert got.shape == (1, in_ch, 8 * scale, 12 * scale)
    assert expected.abs().max() > 1e-3  # the comparison is not between two zero images
    assert (got - expected).abs().max().item() <= 1e-5


@pytest.mark.basicsr
@pytest.mark.parametrize("kwargs", RRDB_CONFIGS)
def test_rrdbnet_matches_basicsr(basicsr_archs, kwargs):
    reference_cls, _ = basicsr_archs
    _assert_same_network(
        RRDBNet(**kwargs), reference_cls(**kwargs), kwargs["num_in_ch"], kwargs.get("scale", 4)
    )


@pytest.mark.basicsr
@pytest.mark.parametrize("kwargs", SRVGG_CONFIGS)
def test_srvggnet_matches_basicsr(basicsr_archs, kwargs):
    _, reference_cls = basicsr_archs
    in_ch = kwargs.get("num_in_ch", 3)
    _assert_same_network(SRVGGNetCompact(**kwargs), reference_cls(**kwargs), in_ch, kwargs.get("upscale", 4))


def test_x4plus_has_the_published_parameter_count():
    with torch.device("meta"):
        net = RRDBNet(3, 3, scale=4, num_feat=64, num_block=23, num_grow_ch=32)
    assert sum(p.numel() for p in net.parameters()) == 16_697_987


def test_pixel_unshuffle_input_for_x2_and_x1():
    assert RRDBNet(3, 3, scale=2, num_feat=8, num_block=1, num_grow_ch=4).conv_first.in_channels == 12
    assert RRDBNet(1, 1, scale=1, num_feat=8, num_block=1, num_grow_ch=4).conv_first.in_channels == 16


def test_dense_blocks_start_near_identity():
    """ESRGAN's smaller initialisation: a fresh dense block changes its input by ~2 %, not ~7 % as with
    PyTorch's default initialisation."""
    torch.manual_seed(0)
    block = ResidualDenseBlock(16, 8)
    x = torch.randn(1, 16, 12, 12)
    with torch.no_grad():
        change = (block(x) - x).abs().mean() / x.abs().mean()
    assert change < 0.03


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (RRDBNet, {"num_in_ch": 3, "num_out_ch": 3, "scale": 3}, "scale 4, 2 or 1"),
        (RRDBNet, {"num_in_ch": 3, "num_out_ch": 3, "num_block": 0}, "num_block must be a positive integer"),
        (RRDBNet, {"num_in_ch": 3.0, "num_out_ch": 3}, "num_in_ch must be a positive integer"),
        (SRVGGNetCompact, {"act_type": "gelu"}, "act_type must be one of relu, prelu, leakyrelu"),
        (SRVGGNetCompact, {"num_in_ch": 1, "num_out_ch": 3}, "num_in_ch == num_out_ch"),
        (SRVGGNetCompact, {"num_conv": -1}, "num_conv must be a non-negative integer"),
    ],
)
def test_invalid_hyper_parameters_are_refused(cls, kwargs, match):
    with pytest.raises(InputError, match=match):
        cls(**kwargs)


# -- adapters --------------------------------------------------------------------------------------------

RRDB_PARAMS = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_block": 2, "num_grow_ch": 4}


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("RRDBNet", RRDB_PARAMS | {"scale": 4}),
        ("RRDBNet", RRDB_PARAMS | {"scale": 2}),
        ("SRVGGNetCompact", {"num_feat": 8, "num_conv": 2, "upscale": 3}),
    ],
)
def test_each_adapter_builds_and_recognises_its_own_network(name, params):
    arch = architecture(name)
    net = arch.build(params)
    assert architecture_of(net) is arch
    detected, found = detect_architecture(net.state_dict())
    assert detected is arch
    assert {k: found[k] for k in params} == params


def test_the_registry_knows_each_network_by_its_basicsr_name():
    assert sorted(ARCHITECTURES) == ["RRDBNet", "SRVGGNetCompact"]
    assert all(arch.name == name for name, arch in ARCHITECTURES.items())
    with pytest.raises(InputError, match="unknown architecture 'EDSR'; choose one of RRDBNet, SRVGG"):
        architecture("EDSR")
    with pytest.raises(TrainingError, match="cannot fine-tune a Linear"):
        architecture_of(nn.Linear(2, 2))
    with pytest.raises(WeightsError, match="neither an RRDBNet nor an SRVGGNetCompact"):
        detect_architecture({"head.weight": torch.zeros(1)})


def test_layer_groups_of_both_networks():
    groups = layer_groups(RRDBNet(**RRDB_PARAMS))
    assert {k for k, g in groups.items() if g == "first"} == {"conv_first.weight", "conv_first.bias"}
    assert {k.split(".")[0] for k, g in groups.items() if g == "upsampler"} == {
        "conv_up1",
        "conv_up2",
        "conv_hr",
        "conv_last",
    }
    assert groups["conv_body.weight"] == "body"
    assert groups["body.1.rdb3.conv5.bias"] == "body"
    groups = layer_groups(SRVGGNetCompact(num_feat=8, num_conv=2))
    assert groups["body.0.weight"] == "first"
    assert groups["body.1.weight"] == "body"
    assert groups["body.6.weight"] == "upsampler"
    assert groups["body.5.weight"] == "body"


def test_freeze_blocks_skips_their_gradients():
    net = RRDBNet(**RRDB_PARAMS)
    frozen = freeze_first_blocks(net, 1)
    assert {name.split(".")[0] for name in frozen} == {"conv_first", "body"}
    assert all(name.startswith(("conv_first.", "body.0.")) for name in frozen)
    net(torch.rand(1, 3, 8, 8)).mean().backward()
    for name, param in net.named_parameters():
        assert (param.grad is None) == (name in frozen), name

    srvgg = SRVGGNetCompact(num_feat=8, num_conv=2)
    assert freeze_first_blocks(srvgg, 2) == [
        "body.0.weight",
        "body.0.bias",
        "body.1.weight",
        "body.2.weight",
        "body.2.bias",
        "body.3.weight",
    ]
    with pytest.raises(InputError, match="at most 3"):
        freeze_first_blocks(SRVGGNetCompact(num_feat=8, num_conv=2), 4)
    with pytest.raises(InputError, match="at most 2"):
        freeze_first_blocks(RRDBNet(**RRDB_PARAMS), 3)
