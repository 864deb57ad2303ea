"""U²-Net and U²-NetP (Qin et al., Pattern Recognition 2020).

Written here because no library ships it (torchvision, smp and timm have no
U²-Net; the authors publish a script, not a package). A two-level nested
U-structure: six encoder and five decoder stages, each a ReSidual U-block
(RSU-L, itself a small U-Net of depth L with a residual connection; RSU-4F
replaces pooling by dilation). Every decoder stage and the deepest encoder
stage give a side output (3x3 convolution), up-sampled to the input size and
fused by a 1x1 convolution. As in the paper all seven outputs are supervised:
training returns ``[fused, side1, ..., side6]`` (the losses are summed), eval
returns the fused logits. The paper trains from scratch, so there is no
pretrained encoder; the outputs are logits (the reference code applies the
sigmoid inside the network).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segkit.models.base import SegmentationModel
from segkit.models.encoders import check_width, scaled
from segkit.models.registry import register_model

PAPER = "Qin et al., U²-Net, Pattern Recognition 2020"

# (height L of the RSU block, mid channels, out channels) per stage; "F" blocks use dilation instead of pooling.
# Encoder stages 1-6, then decoder stages 5d-1d; values from the paper's Table 1 / the reference code.
U2NET_STAGES = {
    "u2net": (
        [(7, 32, 64), (6, 32, 128), (5, 64, 256), (4, 128, 512), ("4F", 256, 512), ("4F", 256, 512)],
        [("4F", 256, 512), (4, 128, 256), (5, 64, 128), (6, 32, 64), (7, 16, 64)],
    ),
    "u2netp": (
        [(7, 16, 64), (6, 16, 64), (5, 16, 64), (4, 16, 64), ("4F", 16, 64), ("4F", 16, 64)],
        [("4F", 16, 64), (4, 16, 64), (5, 16, 64), (6, 16, 64), (7, 16, 64)],
    ),
}


class ConvBNReLU(nn.Sequential):
    """3x3 convolution (optionally dilated), BatchNorm, ReLU: the "REBNCONV" of the reference code."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def upsample_like(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of ``x`` to ``reference``'s spatial size."""
    if x.shape[-2:] == reference.shape[-2:]:
        return x
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=False)


class RSU(nn.Module):
    """ReSidual U-block RSU-L: input conv, an L-level U-Net on its output, and their sum.

    With ``dilated`` (RSU-4F) the levels keep the resolution and grow the
    dilation 1, 2, 4, ... instead of max-pooling, for the low-resolution stages.

    Args:
        height: L, the number of encoder convolutions of the inner U-Net (incl. the dilated bottom).
        in_channels, mid_channels, out_channels: the block's widths.
        dilated: RSU-4F variant.
    """

    def __init__(
        self, height: int, in_channels: int, mid_channels: int, out_channels: int, dilated: bool = False
    ) -> None:
        super().__init__()
        self.dilated = dilated
        self.input = ConvBNReLU(in_channels, out_channels)
        dilations = [2**level if dilated else 1 for level in range(height - 1)]
        bottom_dilation = 2 ** (height - 1) if dilated else 2
        self.encoder = nn.ModuleList(
            ConvBNReLU(out_channels if level == 0 else mid_channels, mid_channels, dilation)
            for level, dilation in enumerate(dilations)
        )
        self.bottom = ConvBNReLU(mid_channels, mid_channels, bottom_dilation)
        self.decoder = nn.ModuleList(
            ConvBNReLU(2 * mid_channels, out_channels if level == 0 else mid_channels, dilation)
            for level, dilation in reversed(list(enumerate(dilations)))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.input(x)
        skips = []
        x = residual
        for level, conv in enumerate(self.encoder):
            if level > 0 and not self.dilated:
                x = F.max_pool2d(x, 2, ceil_mode=True)
            x = conv(x)
            skips.append(x)
        x = self.bottom(x)
        for conv in self.decoder:
            skip = skips.pop()
            x = conv(torch.cat([upsample_like(x, skip), skip], dim=1))
        return x + residual


def rsu(spec: tuple[Any, int, int], in_channels: int, width_mult: float) -> RSU:
    height, mid, out = spec
    dilated = height == "4F"
    return RSU(4 if dilated else int(height), in_channels, scaled(mid, width_mult), scaled(out, width_mult), dilated)


class U2Net(SegmentationModel):
    """U²-Net: nested RSU encoder/decoder, six side outputs fused by a 1x1 convolution.

    Args:
        num_classes: output channels (1 for binary mode, as for salient objects).
        in_channels: input image channels.
        variant: ``"u2net"`` (44 M parameters) or ``"u2netp"`` (1.1 M).
        width_mult: scales every width (1 is the paper's network).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, variant: str = "u2net", width_mult: float = 1.0) -> None:
        check_width(width_mult, pretrained=False)
        super().__init__(stride=32)
        encoder_specs, decoder_specs = U2NET_STAGES[variant]
        self.encoder = nn.ModuleList()
        channels = in_channels
        for spec in encoder_specs:
            self.encoder.append(rsu(spec, channels, width_mult))
            channels = scaled(spec[2], width_mult)
        self.decoder = nn.ModuleList()
        side_channels = [channels]
        skip_channels = [scaled(spec[2], width_mult) for spec in encoder_specs[:-1]]
        for spec in decoder_specs:
            self.decoder.append(rsu(spec, channels + skip_channels.pop(), width_mult))
            channels = scaled(spec[2], width_mult)
            side_channels.append(channels)
        # side[0] is stage 1d (finest) ... side[5] is encoder stage 6 (coarsest), as side1..side6 in the paper.
        self.sides = nn.ModuleList(nn.Conv2d(c, num_classes, 3, padding=1) for c in reversed(side_channels))
        self.fuse = nn.Conv2d(6 * num_classes, num_classes, kernel_size=1)

    def forward_padded(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for level, stage in enumerate(self.encoder):
            if level > 0:
                x = F.max_pool2d(x, 2, ceil_mode=True)
            x = stage(x)
            skips.append(x)
        features = [skips.pop()]
        for stage in self.decoder:
            skip = skips.pop()
            features.append(stage(torch.cat([upsample_like(features[-1], skip), skip], dim=1)))
        finest = features[-1]
        sides = [upsample_like(side(feature), finest) for side, feature in zip(self.sides, reversed(features))]
        return [self.fuse(torch.cat(sides, dim=1)), *sides]


@register_model("u2net", family="u2net", paper=PAPER, output_stride=32, test_kwargs={"width_mult": 0.125})
def u2net(num_classes: int, in_channels: int = 3, width_mult: float = 1.0) -> U2Net:
    """U²-Net (44 M parameters). ``width_mult`` scales every width (1 is the paper's)."""
    return U2Net(num_classes, in_channels, "u2net", width_mult)


@register_model(
    "u2netp", family="u2net", paper=PAPER + " (small U²-NetP)", output_stride=32, test_kwargs={"width_mult": 0.25}
)
def u2netp(num_classes: int, in_channels: int = 3, width_mult: float = 1.0) -> U2Net:
    """U²-NetP, the 1.1 M-parameter version. ``width_mult`` scales every width (1 is the paper's)."""
    return U2Net(num_classes, in_channels, "u2netp", width_mult)
