"""The two super-resolution networks of Real-ESRGAN, written for this package.

Both classes use exactly the module names, hence the state-dict keys, and the constructor signatures of
basicsr 1.4.2 (``basicsr.archs.rrdbnet_arch.RRDBNet`` and ``basicsr.archs.srvgg_arch.SRVGGNetCompact``), so
official Real-ESRGAN weights and checkpoints fine-tuned here load into either implementation unchanged. The
test suite checks that both produce the same output for the same weights.

- :class:`RRDBNet` is the ESRGAN generator (Wang et al., ECCV Workshops 2018): a deep trunk of
  Residual-in-Residual Dense Blocks at the input resolution, then two nearest-neighbour x2 upsamplings each
  followed by a convolution. Real-ESRGAN (Wang et al., ICCVW 2021) runs its x2 and x1 models on a
  pixel-unshuffled input so that the trunk always works at a quarter of the output resolution.
- :class:`SRVGGNetCompact` is Real-ESRGAN's compact model: a plain stack of 3x3 convolutions and activations
  at the input resolution, a sub-pixel (pixel-shuffle) upsampling, and a global residual: the network predicts
  the difference to the nearest-neighbour upscaled input.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError

__all__ = ["ARCHITECTURES", "RRDBNet", "SRVGGNetCompact"]

_LRELU_SLOPE = 0.2  # ESRGAN's leaky ReLU
_RESIDUAL_SCALE = 0.2  # ESRGAN's residual scaling of dense blocks and RRDBs
_INIT_SCALE = 0.1  # ESRGAN's "smaller initialisation" of the dense-block convolutions
_SRVGG_ACTIVATIONS = ("relu", "prelu", "leakyrelu")
_SRVGG_LEAKY_SLOPE = 0.1


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")


def _conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=1)


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
        self.conv1 = _conv3x3(num_feat, num_grow_ch)
        self.conv2 = _conv3x3(num_feat + num_grow_ch, num_grow_ch)
        self.conv3 = _conv3x3(num_feat + 2 * num_grow_ch, num_grow_ch)
        self.conv4 = _conv3x3(num_feat + 3 * num_grow_ch, num_grow_ch)
        self.conv5 = _conv3x3(num_feat + 4 * num_grow_ch, num_feat)
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
        self.conv_first = _conv3x3(num_in_ch * self.unshuffle**2, num_feat)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = _conv3x3(num_feat, num_feat)
        self.conv_up1 = _conv3x3(num_feat, num_feat)
        self.conv_up2 = _conv3x3(num_feat, num_feat)
        self.conv_hr = _conv3x3(num_feat, num_feat)
        self.conv_last = _conv3x3(num_feat, num_out_ch)
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
        _check_positive(
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
        layers: list[nn.Module] = [_conv3x3(num_in_ch, num_feat), self._activation(act_type, num_feat)]
        for _ in range(num_conv):
            layers += [_conv3x3(num_feat, num_feat), self._activation(act_type, num_feat)]
        layers.append(_conv3x3(num_feat, num_out_ch * upscale**2))
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
        _check_positive(num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat, upscale=upscale)
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


ARCHITECTURES: dict[str, type[nn.Module]] = {"RRDBNet": RRDBNet, "SRVGGNetCompact": SRVGGNetCompact}
"""The networks by the class names used in basicsr, Real-ESRGAN and our sidecar files."""
