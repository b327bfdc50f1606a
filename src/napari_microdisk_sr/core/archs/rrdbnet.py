"""ESRGAN's RRDBNet, the network of Real-ESRGAN x4plus, and its adapter.

:class:`RRDBNet` is the ESRGAN generator (Wang et al., ECCV Workshops 2018): a deep trunk of
Residual-in-Residual Dense Blocks at the input resolution, then two nearest-neighbour x2 upsamplings each
followed by a convolution. Real-ESRGAN (Wang et al., ICCVW 2021) runs its x2 and x1 models on a
pixel-unshuffled input so that the trunk always works at a quarter of the output resolution. The module names,
hence the state-dict keys, and the constructor signature are exactly basicsr 1.4.2's
(``basicsr.archs.rrdbnet_arch.RRDBNet``), so official weights load unchanged; the test suite checks that both
implementations give the same output for the same weights.

:class:`RRDBNetArch` tells the rest of the package how to recognise, tile, group and freeze it.
"""

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ._base import Architecture, check_positive, conv3x3, indices, shape_of

__all__ = ["RRDBNet", "RRDBNetArch"]

_LRELU_SLOPE = 0.2  # ESRGAN's leaky ReLU
_RESIDUAL_SCALE = 0.2  # ESRGAN's residual scaling of dense blocks and RRDBs
_INIT_SCALE = 0.1  # ESRGAN's "smaller initialisation" of the dense-block convolutions
_TRUNK_PAD = 32
"""Tile padding in trunk pixels: the exact receptive radius (349 pixels for x4plus) is far larger than the
effective one (how 32 was chosen is in benchmarks/README.md)."""


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions with a scaled residual connection.

    Each of the first four convolutions sees the block input concatenated with all earlier outputs and adds
    ``num_grow_ch`` channels; the fifth maps the concatenation back to ``num_feat`` channels.

    Parameters
    ----------
    num_feat : int
        Channels of the block input and output.
    num_grow_ch : int
        Channels added by each of the first four convolutions.
    """

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = conv3x3(num_feat, num_grow_ch)
        self.conv2 = conv3x3(num_feat + num_grow_ch, num_grow_ch)
        self.conv3 = conv3x3(num_feat + 2 * num_grow_ch, num_grow_ch)
        self.conv4 = conv3x3(num_feat + 3 * num_grow_ch, num_grow_ch)
        self.conv5 = conv3x3(num_feat + 4 * num_grow_ch, num_feat)
        self.lrelu = nn.LeakyReLU(negative_slope=_LRELU_SLOPE, inplace=True)
        # He initialisation scaled by 0.1, in its uniform form (same variance as the normal one, and fast on
        # the meta device, where normal_ is not)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
                bound = _INIT_SCALE * math.sqrt(6.0 / conv.weight[0].numel())
                conv.weight.uniform_(-bound, bound)
                conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` of shape (N, num_feat, H, W) to the same shape."""
        features = [x, self.lrelu(self.conv1(x))]
        for conv in (self.conv2, self.conv3, self.conv4):
            features.append(self.lrelu(conv(torch.cat(features, dim=1))))
        return x + _RESIDUAL_SCALE * self.conv5(torch.cat(features, dim=1))


class RRDB(nn.Module):
    """Residual-in-Residual Dense Block: three dense blocks in a row inside a scaled residual connection.

    Parameters
    ----------
    num_feat : int
        Channels of the block input and output.
    num_grow_ch : int
        Growth channels of each dense block.
    """

    def __init__(self, num_feat: int, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` of shape (N, num_feat, H, W) to the same shape."""
        return x + _RESIDUAL_SCALE * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """ESRGAN's RRDB generator as used by Real-ESRGAN (x4, and x2/x1 with a pixel-unshuffled input).

    The trunk always upsamples its features x4. For ``scale=2`` the input is first pixel-unshuffled by 2
    (``num_in_ch * 4`` channels at half the size), for ``scale=1`` by 4 (``num_in_ch * 16`` channels at a
    quarter of the size), so the output is ``scale`` times the input.

    Parameters
    ----------
    num_in_ch, num_out_ch : int
        Channels of the input and output images (3 for RGB).
    scale : {4, 2, 1}
        Upscaling factor.
    num_feat : int
        Feature channels of the trunk.
    num_block : int
        Number of RRDBs in the trunk (23 in Real-ESRGAN x4plus, 6 in its anime model).
    num_grow_ch : int
        Growth channels of the dense blocks.

    Notes
    -----
    For ``scale=2`` the input height and width must be even, for ``scale=1`` multiples of 4.
    """

    def __init__(
        self,
        num_in_ch: int,
        num_out_ch: int,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ) -> None:
        super().__init__()
        self.validate(num_in_ch, num_out_ch, scale, num_feat, num_block, num_grow_ch)
        self.scale = scale
        self.unshuffle = 4 // scale
        self.conv_first = conv3x3(num_in_ch * self.unshuffle**2, num_feat)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = conv3x3(num_feat, num_feat)
        self.conv_up1 = conv3x3(num_feat, num_feat)
        self.conv_up2 = conv3x3(num_feat, num_feat)
        self.conv_hr = conv3x3(num_feat, num_feat)
        self.conv_last = conv3x3(num_feat, num_out_ch)
        self.lrelu = nn.LeakyReLU(negative_slope=_LRELU_SLOPE, inplace=True)

    @staticmethod
    def validate(
        num_in_ch: int,
        num_out_ch: int,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ) -> None:
        """Raise :class:`InputError` unless the arguments describe a network that can be built."""
        check_positive(
            num_in_ch=num_in_ch,
            num_out_ch=num_out_ch,
            num_feat=num_feat,
            num_block=num_block,
            num_grow_ch=num_grow_ch,
        )
        if scale not in (1, 2, 4):
            raise InputError(f"RRDBNet supports scale 4, 2 or 1, got {scale!r}")

    @staticmethod
    def receptive_radius(
        num_in_ch: int,
        num_out_ch: int,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ) -> int:
        """How many input pixels on each side an output pixel depends on, at most.

        ``conv_first``, the 15 convolutions of each RRDB and ``conv_body`` reach one trunk pixel each; the
        four convolutions after the nearest-neighbour upsamplings reach two more trunk pixels; a
        pixel-unshuffle by ``f`` makes each trunk pixel ``f`` input pixels. (x4plus: 349 pixels; the
        effective receptive field is much smaller, see ``ModelSpec.tile_pad``.)
        """
        return (4 // scale) * (2 + 15 * num_block + 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upscale ``x`` of shape (N, num_in_ch, H, W) to (N, num_out_ch, H * scale, W * scale)."""
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


class RRDBNetArch(Architecture):
    """RRDBNet: scale 4, 2 or 1 (by its ``scale`` argument); trunk blocks are its RRDBs."""

    name = "RRDBNet"
    network = RRDBNet

    def scale(self, kwargs: Mapping[str, Any]) -> int:
        return int(kwargs["scale"])

    def size_multiple(self, kwargs: Mapping[str, Any]) -> int:
        """x2: 2, x1: 4 (the pixel-unshuffled input), else 1."""
        return 4 // self.scale(kwargs)

    def tile_pad(self, kwargs: Mapping[str, Any]) -> int:
        """32 trunk pixels (x4plus: 32 input pixels; x2: 64; x1: 128), or the receptive radius if smaller."""
        return min(self.receptive_radius(kwargs), self.size_multiple(kwargs) * _TRUNK_PAD)

    def detect(self, state_dict: Mapping[str, torch.Tensor]) -> "dict[str, Any] | None":
        """Any width, depth, growth and channel count; x4, and x2/x1 by the pixel-unshuffled input of
        ``conv_first`` (assuming as many input as output channels for those)."""
        if "conv_first.weight" not in state_dict or "conv_last.weight" not in state_dict:
            return None
        num_feat, first_in, _, _ = shape_of(state_dict, "conv_first.weight", 4)
        num_out_ch = shape_of(state_dict, "conv_last.weight", 4)[0]
        num_grow_ch = shape_of(state_dict, "body.0.rdb1.conv1.weight", 4)[0]
        ratio, rest = divmod(first_in, num_out_ch)
        scale = {16: 1, 4: 2}.get(ratio, 4) if rest == 0 else 4
        return {
            "num_in_ch": first_in // (4 // scale) ** 2,
            "num_out_ch": num_out_ch,
            "scale": scale,
            "num_feat": num_feat,
            "num_block": max(indices(state_dict, r"body\.(\d+)\.rdb1\.conv1\.weight")) + 1,
            "num_grow_ch": num_grow_ch,
        }

    def group_prefixes(self, module: nn.Module) -> dict[str, tuple[str, ...]]:
        """``conv_first`` is "first"; ``conv_up1``, ``conv_up2``, ``conv_hr`` and ``conv_last`` are
        "upsampler"; the RRDBs and ``conv_body`` are "body"."""
        return {
            "first": ("conv_first.",),
            "upsampler": ("conv_up1.", "conv_up2.", "conv_hr.", "conv_last."),
        }

    def leading_layers(self, module: nn.Module, n: int) -> list[nn.Module]:
        """``conv_first`` and ``body.0`` to ``body.{n-1}``."""
        if n > len(module.body):
            raise self.too_many(n, len(module.body), "RRDB blocks")
        return [module.conv_first, *module.body[:n]]
