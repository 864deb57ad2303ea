"""The classic U-Net (Ronneberger, Fischer & Brox, MICCAI 2015).

An encoder of ``depth`` max-pool down-samplings and a symmetric decoder joined
by skip connections (concatenation). Each stage is two 3x3 convolutions with
BatchNorm and ReLU (BatchNorm was not in the paper; it is the usual modern
choice and makes training from scratch stable). Convolutions use padding 1, so
unlike the paper's unpadded version the output has the input's size.

Widths double at every level: ``base_channels * 2**level``. The paper uses
``base_channels=64`` (about 31 M parameters); segkit defaults to 16 (about
2 M), which trains well on small datasets in 1/16 of the compute — what a time
budget on a laptop CPU allows (benchmarks/README.md); pass ``base_channels=32``
or 64 for more capacity.
"""

from __future__ import annotations

import torch
from torch import nn

from segkit.models.base import SegmentationModel
from segkit.models.registry import register_model

UPSAMPLING_MODES = ("bilinear", "transpose")


class DoubleConv(nn.Sequential):
    """(3x3 conv -> BatchNorm -> ReLU) x 2, the U-Net stage."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UpStage(nn.Module):
    """Up-sample by 2, concatenate the skip connection, DoubleConv.

    ``transpose`` learns a 2x2 stride-2 transposed convolution that also halves
    the channels (as in the paper); ``bilinear`` interpolates and lets the
    DoubleConv reduce the concatenated channels (no checkerboard artefacts).
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, upsampling: str) -> None:
        super().__init__()
        if upsampling == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(in_channels, skip_channels, kernel_size=2, stride=2)
            merged = 2 * skip_channels
        else:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            merged = in_channels + skip_channels
        self.conv = DoubleConv(merged, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


@register_model(
    "unet",
    family="unet",
    paper="Ronneberger et al., U-Net, MICCAI 2015",
    output_stride=16,
    test_kwargs={"base_channels": 4, "depth": 2},
)
class UNet(SegmentationModel):
    """U-Net returning logits at the input size for any input size.

    Args:
        num_classes: output channels (1 for binary mode).
        in_channels: input image channels.
        base_channels: width of the first stage; level ``i`` has ``base_channels * 2**i``
            (default 16; the paper uses 64).
        depth: number of down-samplings (default 4 as in the paper); inputs are
            padded to a multiple of ``2**depth``.
        upsampling: ``"bilinear"`` (default) or ``"transpose"`` (the paper's up-convolution).
        dropout: channel dropout probability after the bottleneck (the paper puts
            dropout at the end of the contracting path); 0 disables it.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        base_channels: int = 16,
        depth: int = 4,
        upsampling: str = "bilinear",
        dropout: float = 0.0,
    ) -> None:
        _check_int("base_channels", base_channels, minimum=1)
        _check_int("depth", depth, minimum=1)
        if upsampling not in UPSAMPLING_MODES:
            raise ValueError(f"upsampling must be one of {', '.join(UPSAMPLING_MODES)}, got {upsampling!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        super().__init__(stride=2**depth)
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.stem = DoubleConv(in_channels, widths[0])
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[level], widths[level + 1])) for level in range(depth)
        )
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.up = nn.ModuleList(
            UpStage(widths[level + 1], widths[level], widths[level], upsampling) for level in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for stage in self.down:
            skips.append(stage(skips[-1]))
        x = self.dropout(skips.pop())
        for stage in self.up:
            x = stage(x, skips.pop())
        return self.head(x)


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
