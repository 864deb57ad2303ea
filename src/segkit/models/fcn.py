"""Fully Convolutional Networks (Long, Shelhamer & Darrell, CVPR 2015).

``fcn8s`` is written here because no library ships it (torchvision has only
the ResNet FCNs, smp and timm have none): VGG16 (torchvision, ImageNet
weights) with fc6/fc7 turned into 7x7 and 1x1 convolutions, class scores from
fc7, pool4 and pool3 fused by two learned 2x up-samplings ("skip" layers,
initialised to bilinear interpolation), and a fixed bilinear 8x up-sampling to
the input size, as in the paper. The scoring layers start at zero as in the
paper. Differences: convolutions keep the input size (padding 1 and padding
to a multiple of 32 instead of the original's 100-pixel padding and crops),
and the net is trained in one stage rather than FCN-32s -> 16s -> 8s.

``fcn-resnet50`` is torchvision's FCN with a dilated ResNet-50 (output
stride 8 by default; 16 or 32 dilate less and cost less) and the FCN head;
only its ImageNet backbone is pretrained (torchvision's COCO weights cover 21
classes; load them with ``--weights`` to fine-tune, the head is re-initialised).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from segkit.models.base import Output, SegmentationModel
from segkit.models.encoders import (
    adapt_first_conv,
    pretrained_torchvision,
    scaled,
    vgg16_fully_convolutional,
)
from segkit.models.registry import register_model

PAPER = "Long et al., Fully Convolutional Networks, CVPR 2015"


def bilinear_upsampling(channels: int, factor: int) -> nn.ConvTranspose2d:
    """A ``factor``-times transposed convolution initialised to per-channel bilinear interpolation."""
    kernel_size = 2 * factor
    layer = nn.ConvTranspose2d(channels, channels, kernel_size, stride=factor, padding=factor // 2, bias=False)
    center = factor - 0.5
    ramp = 1 - (torch.arange(kernel_size, dtype=torch.float32) - center).abs() / factor
    kernel = ramp[:, None] * ramp[None, :]
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[range(channels), range(channels)] = kernel.to(layer.weight.device)
    return layer


def zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 1x1 scoring convolution starting at zero (the paper's initialisation)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)  # type: ignore[arg-type]  # a bias was asked for
    return conv


@register_model(
    "fcn8s",
    family="fcn",
    paper=PAPER,
    pretrained_encoder=True,
    output_stride=32,
    test_kwargs={"width_mult": 0.0625},
)
class FCN8s(SegmentationModel):
    """FCN-8s on VGG16: scores from fc7, pool4 and pool3, logits at the input size.

    Args:
        num_classes: output channels (1 for binary mode).
        in_channels: input image channels.
        pretrained: start VGG16 (convolutions and fc6/fc7) from ImageNet weights.
        width_mult: scales every width (1 is the paper's VGG16; smaller values
            give fast experiments without pretrained weights).
        dropout: dropout after fc6 and fc7 (0.5 as in VGG and the paper).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        pretrained: bool = False,
        width_mult: float = 1.0,
        dropout: float = 0.5,
    ) -> None:
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        super().__init__(stride=32)
        self.encoder, fc6, fc7 = vgg16_fully_convolutional(
            width_mult=width_mult, pretrained=pretrained, in_channels=in_channels
        )
        self.fc = nn.Sequential(
            fc6, nn.ReLU(inplace=True), nn.Dropout2d(dropout), fc7, nn.ReLU(inplace=True), nn.Dropout2d(dropout)
        )
        self.score_fr = zero_conv(fc7.out_channels, num_classes)
        self.score_pool4 = zero_conv(scaled(512, width_mult), num_classes)
        self.score_pool3 = zero_conv(scaled(256, width_mult), num_classes)
        self.upscore2 = bilinear_upsampling(num_classes, 2)
        self.upscore_pool4 = bilinear_upsampling(num_classes, 2)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        pools = []
        for layer in self.encoder:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                pools.append(x)
        pool3, pool4, pool5 = pools[2:]
        scores = self.upscore2(self.score_fr(self.fc(pool5))) + self.score_pool4(pool4)
        # 1/8-resolution scores; SegmentationModel up-samples them bilinearly (the paper's fixed upscore8).
        return self.upscore_pool4(scores) + self.score_pool3(pool3)


class TorchvisionFCN(SegmentationModel):
    """torchvision's FCN: ``out`` in eval mode, ``[out, aux]`` in training when ``aux_loss``."""

    def __init__(self, net: nn.Module, stride: int) -> None:
        super().__init__(stride)
        self.net = net

    @property
    def encoder(self) -> nn.Module:
        """The dilated ResNet backbone."""
        return cast(nn.Module, self.net.backbone)

    def forward_padded(self, x: torch.Tensor) -> Output:
        outputs = self.net(x)
        if self.training and "aux" in outputs:
            return [outputs["out"], outputs["aux"]]
        return outputs["out"]


@register_model(
    "fcn-resnet50",
    family="fcn",
    paper=PAPER + " (torchvision ResNet-50 variant)",
    pretrained_encoder=True,
    output_stride=8,
    test_kwargs={"output_stride": 32},
)
def fcn_resnet50(
    num_classes: int,
    in_channels: int = 3,
    pretrained: bool = False,
    output_stride: int = 8,
    aux_loss: bool = False,
) -> nn.Module:
    """torchvision's ``fcn_resnet50``: dilated ResNet-50 and the FCN head (3x3 conv, BN, ReLU, dropout, 1x1).

    Args:
        num_classes: output channels (1 for binary mode).
        in_channels: input image channels.
        pretrained: start the ResNet-50 from ImageNet weights.
        output_stride: 8 (torchvision's choice: layer3 and layer4 dilated), 16
            (layer4 dilated) or 32 (no dilation; cheapest).
        aux_loss: add torchvision's auxiliary head on layer3 (deep supervision:
            training returns ``[out, aux]``, whose losses are summed).
    """
    from torchvision.models import resnet50

    # torchvision's own builder hard-codes output stride 8; _fcn_resnet assembles
    # backbone + heads exactly as fcn_resnet50 does (same state-dict keys).
    from torchvision.models.segmentation.fcn import _fcn_resnet

    dilations = {8: [False, True, True], 16: [False, False, True], 32: [False, False, False]}
    if output_stride not in dilations:
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
    backbone = pretrained_torchvision(resnet50, pretrained, replace_stride_with_dilation=dilations[output_stride])
    backbone.conv1 = adapt_first_conv(cast(nn.Conv2d, backbone.conv1), in_channels)
    return TorchvisionFCN(_fcn_resnet(backbone, num_classes, aux_loss), stride=output_stride)
