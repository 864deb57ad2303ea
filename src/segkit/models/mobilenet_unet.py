"""MobileNetV2 U-Net: a MobileNetV2 encoder (Sandler et al., CVPR 2018) with a U-Net decoder.

Written here because no library ships this exact model: smp's ``Unet`` with a
MobileNetV2 encoder uses a different decoder (nearest up-sampling and two
3x3 convolutions per stage). This is the widely used light U-Net of the
TensorFlow segmentation tutorial: the encoder is torchvision's MobileNetV2
(ImageNet weights) up to its last 320-channel block (output stride 32), and
each decoder stage is a stride-2 transposed convolution, BatchNorm and ReLU
whose output is concatenated with the encoder features at 1/16, 1/8, 1/4 and
1/2 of the input size; a last transposed convolution gives the class scores
at full resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from segkit.models.base import SegmentationModel
from segkit.models.encoders import adapt_first_conv, check_width, pretrained_torchvision
from segkit.models.registry import register_model

SKIP_BLOCKS = (1, 3, 6, 13)  # last MobileNetV2 block at 1/2, 1/4, 1/8, 1/16 of the input
LAST_BLOCK = 17  # the 320-channel block at 1/32; block 18 (1x1 conv to 1280) is the classifier's


def block_channels(block: nn.Module) -> int:
    """Output channels of a torchvision MobileNetV2 feature block."""
    return int(cast(Any, block).out_channels)


def up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Double the resolution: 3x3 stride-2 transposed convolution, BatchNorm, ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


@register_model(
    "mobilenetv2-unet",
    family="unet",
    paper="Sandler et al., MobileNetV2, CVPR 2018 + U-Net decoder",
    pretrained_encoder=True,
    output_stride=32,
    test_kwargs={"width_mult": 0.35, "decoder_channels": [16, 16, 8, 8]},
)
class MobileNetV2UNet(SegmentationModel):
    """MobileNetV2 encoder, transposed-convolution decoder with skip concatenations.

    Args:
        num_classes: output channels (1 for binary mode).
        in_channels: input image channels.
        pretrained: start the encoder from torchvision's ImageNet MobileNetV2.
        width_mult: MobileNetV2 width multiplier (pretrained weights need 1).
        decoder_channels: output widths of the four up-sampling stages, from
            1/32 -> 1/16 to 1/4 -> 1/2 (default 512, 256, 128, 64 as in the tutorial).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        pretrained: bool = False,
        width_mult: float = 1.0,
        decoder_channels: Sequence[int] = (512, 256, 128, 64),
    ) -> None:
        from torchvision.models import mobilenet_v2

        check_width(width_mult, pretrained)
        if len(decoder_channels) != len(SKIP_BLOCKS) or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in decoder_channels
        ):
            raise ValueError(f"decoder_channels must be {len(SKIP_BLOCKS)} positive integers, got {decoder_channels!r}")
        super().__init__(stride=32)
        features = cast(nn.Sequential, pretrained_torchvision(mobilenet_v2, pretrained, width_mult=width_mult).features)
        stem = cast(nn.Sequential, features[0])
        stem[0] = adapt_first_conv(cast(nn.Conv2d, stem[0]), in_channels)
        self.encoder = features[: LAST_BLOCK + 1]
        channels = block_channels(self.encoder[LAST_BLOCK])
        self.decoder = nn.ModuleList()
        for out_channels, block in zip(decoder_channels, reversed(SKIP_BLOCKS)):
            self.decoder.append(up_block(channels, out_channels))
            channels = out_channels + block_channels(self.encoder[block])
        self.head = nn.ConvTranspose2d(channels, num_classes, 3, stride=2, padding=1, output_padding=1)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for index, block in enumerate(self.encoder):
            x = block(x)
            if index in SKIP_BLOCKS:
                skips.append(x)
        for stage in self.decoder:
            x = torch.cat([stage(x), skips.pop()], dim=1)
        return self.head(x)
