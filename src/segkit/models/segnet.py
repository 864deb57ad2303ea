"""SegNet (Badrinarayanan, Kendall & Cipolla, TPAMI 2017).

Written here because no library ships it (torchvision, smp and timm have no
SegNet). The encoder is VGG16-BN's 13 convolutions (torchvision, ImageNet
weights); each of its 5 max-poolings remembers where the maxima were, and the
decoder up-samples with those indices (``nn.MaxUnpool2d``: sparse, no learned
up-sampling) followed by convolutions that mirror the encoder. The last
decoder convolution (3x3, as in the authors' Caffe model) gives the class
scores. Convolutions keep the size, inputs are padded to a multiple of 32.
"""

from __future__ import annotations

import torch
from torch import nn

from segkit.models.base import SegmentationModel
from segkit.models.encoders import VGG16_BLOCKS, scaled, vgg16_features
from segkit.models.registry import register_model


def conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    """3x3 convolution, BatchNorm, ReLU (the SegNet encoder and decoder layer)."""
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def decoder_block(widths: list[int], out_channels: int | None, num_classes: int) -> nn.Sequential:
    """The mirror of an encoder block: its convolutions, the last one narrowing to the previous block's width.

    ``out_channels`` is ``None`` for the block nearest the input, which ends
    in the scoring convolution instead.
    """
    layers: list[nn.Module] = []
    for index, width in enumerate(widths):
        last = index == len(widths) - 1
        if not last:
            layers += conv_bn_relu(width, width)
        elif out_channels is None:
            layers.append(nn.Conv2d(width, num_classes, 3, padding=1))
        else:
            layers += conv_bn_relu(width, out_channels)
    return nn.Sequential(*layers)


@register_model(
    "segnet",
    family="segnet",
    paper="Badrinarayanan et al., SegNet, TPAMI 2017",
    pretrained_encoder=True,
    output_stride=32,
    test_kwargs={"width_mult": 0.0625},
)
class SegNet(SegmentationModel):
    """SegNet with a VGG16-BN encoder and max-unpooling decoder.

    Args:
        num_classes: output channels (1 for binary mode).
        in_channels: input image channels.
        pretrained: start the encoder from torchvision's ImageNet VGG16-BN.
        width_mult: scales every width (1 is the paper's network; smaller values
            give fast experiments without pretrained weights).
    """

    def __init__(
        self, num_classes: int, in_channels: int = 3, pretrained: bool = False, width_mult: float = 1.0
    ) -> None:
        super().__init__(stride=32)
        self.encoder = vgg16_features(
            batch_norm=True, width_mult=width_mult, pretrained=pretrained, in_channels=in_channels
        )
        for layer in self.encoder:
            if isinstance(layer, nn.MaxPool2d):
                layer.return_indices = True
        blocks = [[scaled(width, width_mult) for width in block] for block in VGG16_BLOCKS]
        self.unpool = nn.MaxUnpool2d(kernel_size=2, stride=2)
        self.decoder = nn.ModuleList(
            decoder_block(blocks[level], blocks[level - 1][-1] if level else None, num_classes)
            for level in reversed(range(len(blocks)))
        )

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        pooled: list[tuple[torch.Tensor, torch.Size]] = []
        for layer in self.encoder:
            if isinstance(layer, nn.MaxPool2d):
                size = x.shape
                x, indices = layer(x)
                pooled.append((indices, size))
            else:
                x = layer(x)
        for block in self.decoder:
            indices, size = pooled.pop()
            x = block(self.unpool(x, indices, output_size=size))
        return x
