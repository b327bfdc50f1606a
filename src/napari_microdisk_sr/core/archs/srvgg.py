"""Real-ESRGAN's compact network SRVGGNetCompact (realesr-animevideov3, general-x4v3) and its adapter.

:class:`SRVGGNetCompact` is a plain stack of 3x3 convolutions and activations at the input resolution, a
sub-pixel (pixel-shuffle) upsampling, and a global residual: the network predicts the difference to the
nearest-neighbour upscaled input. The module names and the constructor signature are exactly basicsr 1.4.2's
(``basicsr.archs.srvgg_arch.SRVGGNetCompact``); the test suite checks that both give the same output.

:class:`SRVGGArch` tells the rest of the package how to recognise, tile, group and freeze it.
"""

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, WeightsError
from ._base import Architecture, check_positive, conv3x3, indices, shape_of

__all__ = ["SRVGGArch", "SRVGGNetCompact"]

_SRVGG_ACTIVATIONS = ("relu", "prelu", "leakyrelu")
_SRVGG_LEAKY_SLOPE = 0.1


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact VGG-style network: ``num_conv + 2`` convolutions, pixel shuffle, global residual.

    Parameters
    ----------
    num_in_ch, num_out_ch : int
        Channels of the input and output images; they must be equal (the input, upscaled, is added to the
        output).
    num_feat : int
        Feature channels.
    num_conv : int
        Number of hidden ``num_feat -> num_feat`` convolutions (16 in realesr-animevideov3, 32 in
        realesr-general-x4v3).
    upscale : int
        Upscaling factor, realised by a pixel shuffle.
    act_type : {"prelu", "relu", "leakyrelu"}
        Activation after each convolution but the last (PReLU has one learnt slope per channel).
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
        act_type: str = "prelu",
    ) -> None:
        super().__init__()
        self.validate(num_in_ch, num_out_ch, num_feat, num_conv, upscale, act_type)
        self.upscale = upscale
        layers: list[nn.Module] = [conv3x3(num_in_ch, num_feat), self._activation(act_type, num_feat)]
        for _ in range(num_conv):
            layers += [conv3x3(num_feat, num_feat), self._activation(act_type, num_feat)]
        layers.append(conv3x3(num_feat, num_out_ch * upscale**2))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    @staticmethod
    def validate(
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
        act_type: str = "prelu",
    ) -> None:
        """Raise :class:`InputError` unless the arguments describe a network that can be built."""
        check_positive(num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat, upscale=upscale)
        if isinstance(num_conv, bool) or not isinstance(num_conv, int) or num_conv < 0:
            raise InputError(f"num_conv must be a non-negative integer, got {num_conv!r}")
        if num_in_ch != num_out_ch:
            raise InputError(
                f"SRVGGNetCompact needs num_in_ch == num_out_ch, got {num_in_ch} and {num_out_ch}"
            )
        if act_type not in _SRVGG_ACTIVATIONS:
            raise InputError(f"act_type must be one of {', '.join(_SRVGG_ACTIVATIONS)}, got {act_type!r}")

    @staticmethod
    def receptive_radius(
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
        act_type: str = "prelu",
    ) -> int:
        """How many input pixels on each side an output pixel depends on, at most.

        ``num_conv + 2`` convolutions of radius 1 at the input resolution; the pixel shuffle and the
        nearest-neighbour residual add nothing (realesr-animevideov3: 18 pixels).
        """
        return num_conv + 2

    @staticmethod
    def _activation(act_type: str, num_feat: int) -> nn.Module:
        if act_type == "prelu":
            return nn.PReLU(num_parameters=num_feat)
        if act_type == "leakyrelu":
            return nn.LeakyReLU(negative_slope=_SRVGG_LEAKY_SLOPE, inplace=True)
        return nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upscale ``x`` of shape (N, C, H, W) to (N, C, H * upscale, W * upscale)."""
        out = x
        for layer in self.body:
            out = layer(out)
        base = F.interpolate(x, scale_factor=self.upscale, mode="nearest")
        return self.upsampler(out) + base


class SRVGGArch(Architecture):
    """SRVGGNetCompact: any input size; its blocks are the hidden convolutions with their activations."""

    name = "SRVGGNetCompact"
    network = SRVGGNetCompact

    def scale(self, kwargs: Mapping[str, Any]) -> int:
        return int(kwargs["upscale"])

    def tile_pad(self, kwargs: Mapping[str, Any]) -> int:
        """The receptive radius (realesr-animevideov3: 18), so tiled output equals untiled output exactly."""
        return self.receptive_radius(kwargs)

    def detect(self, state_dict: Mapping[str, torch.Tensor]) -> "dict[str, Any] | None":
        """PReLU networks only: ReLU and leaky ReLU leave no trace in the weights (their files need a
        sidecar)."""
        if "body.0.weight" not in state_dict or "conv_first.weight" in state_dict:
            return None
        if "body.1.weight" not in state_dict:
            raise WeightsError(
                "an SRVGGNetCompact without PReLU weights (ReLU or leaky ReLU) cannot be identified from its "
                "weights; keep the sidecar .json that was saved with it"
            )
        num_feat, num_in_ch, _, _ = shape_of(state_dict, "body.0.weight", 4)
        last = max(
            i for i in indices(state_dict, r"body\.(\d+)\.weight") if state_dict[f"body.{i}.weight"].ndim == 4
        )
        last_out = shape_of(state_dict, f"body.{last}.weight", 4)[0]
        upscale = round((last_out / num_in_ch) ** 0.5)
        if upscale**2 * num_in_ch != last_out:
            raise WeightsError(
                f"the last convolution's {last_out} outputs are not {num_in_ch} channels x upscale^2"
            )
        return {
            "num_in_ch": num_in_ch,
            "num_out_ch": num_in_ch,
            "num_feat": num_feat,
            "num_conv": (last - 2) // 2,
            "upscale": upscale,
            "act_type": "prelu",
        }

    def group_prefixes(self, module: nn.Module) -> dict[str, tuple[str, ...]]:
        """The first convolution ``body.0`` is "first", the last (before the pixel shuffle) "upsampler"."""
        return {"first": ("body.0.",), "upsampler": (f"body.{len(module.body) - 1}.",)}

    def leading_layers(self, module: nn.Module, n: int) -> list[nn.Module]:
        """The first ``n`` convolutions and their activations."""
        limit = (len(module.body) - 1) // 2
        if n > limit:
            raise self.too_many(n, limit, "convolutions before its last one")
        return list(module.body[: 2 * n])
