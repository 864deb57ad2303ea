"""Torchvision backbones shared by the hand-written models (FCN-8s, SegNet, MobileNetV2-U-Net).

The backbones come from torchvision (architecture and ImageNet weights);
this module only scales their widths for small experiments (pretrained
weights exist for ``width_mult=1`` only), adapts the first convolution to other
input channel counts, and turns failed downloads into a clear error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from segkit.models.pretrained import downloading

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def check_width(width_mult: float, pretrained: bool) -> None:
    """Reject widths that are not positive, and pretrained weights for scaled networks."""
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or width_mult <= 0:
        raise ValueError(f"width_mult must be a positive number, got {width_mult!r}")
    if pretrained and width_mult != 1:
        raise ValueError(f"pretrained weights exist only for width_mult=1, got {width_mult}")


def scaled(channels: int, width_mult: float) -> int:
    """``channels * width_mult`` rounded, at least 1."""
    return max(1, round(channels * width_mult))


def pretrained_torchvision(builder: Callable[..., nn.Module], pretrained: bool, **kwargs: Any) -> nn.Module:
    """``builder(weights="DEFAULT" if pretrained else None, **kwargs)``, with a clear error when offline."""
    if not pretrained:
        return builder(weights=None, **kwargs)
    with downloading(f"torchvision {builder.__name__}"):
        return builder(weights="DEFAULT", **kwargs)


def adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs, its filters derived from the RGB ones.

    Uses timm's ``adapt_input_conv`` (as smp and timm do for their encoders):
    one channel sums the RGB filters, more channels cycle them scaled by
    ``3 / in_channels``, so pretrained filters stay useful and the activation
    scale is kept.
    """
    from timm.models import adapt_input_conv

    if in_channels == conv.in_channels:
        return conv
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        cast(Any, conv.kernel_size),
        cast(Any, conv.stride),
        cast(Any, conv.padding),
        cast(Any, conv.dilation),
        conv.groups,
        conv.bias is not None,
        device=conv.weight.device,
    )
    with torch.no_grad():
        new.weight.copy_(adapt_input_conv(in_channels, conv.weight.detach()))
        if conv.bias is not None and new.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _vgg16(batch_norm: bool, width_mult: float, pretrained: bool) -> tuple[nn.Sequential, nn.Sequential | None]:
    """VGG16's ``features`` and, when pretrained, its ImageNet ``classifier``."""
    from torchvision.models import vgg16, vgg16_bn
    from torchvision.models.vgg import make_layers

    check_width(width_mult, pretrained)
    if pretrained:
        net = pretrained_torchvision(vgg16_bn if batch_norm else vgg16, True)
        return cast(nn.Sequential, net.features), cast(nn.Sequential, net.classifier)
    config: list[str | int] = []
    for block in VGG16_BLOCKS:
        config += [scaled(channels, width_mult) for channels in block] + ["M"]
    return make_layers(config, batch_norm=batch_norm), None


def vgg16_features(*, batch_norm: bool, width_mult: float, pretrained: bool, in_channels: int) -> nn.Sequential:
    """The 13 convolutions and 5 max-pools of VGG16 (``torchvision.models.vgg16[_bn]().features``).

    Keys match torchvision's ``features`` so its weights (or a file of them) load directly.
    """
    features, _ = _vgg16(batch_norm, width_mult, pretrained)
    features[0] = adapt_first_conv(cast(nn.Conv2d, features[0]), in_channels)
    return features


def vgg16_fully_convolutional(
    *, width_mult: float, pretrained: bool, in_channels: int
) -> tuple[nn.Sequential, nn.Conv2d, nn.Conv2d]:
    """VGG16 ``features`` plus fc6 and fc7 as convolutions (7x7 and 1x1), as FCN converts them.

    With ``pretrained`` the ImageNet fully connected weights are reshaped into
    the convolutions (the paper's "convolutionalization").
    """
    features, classifier = _vgg16(False, width_mult, pretrained)
    features[0] = adapt_first_conv(cast(nn.Conv2d, features[0]), in_channels)
    fc_in, fc_channels = scaled(512, width_mult), scaled(4096, width_mult)
    fc6 = nn.Conv2d(fc_in, fc_channels, kernel_size=7, padding=3)
    fc7 = nn.Conv2d(fc_channels, fc_channels, kernel_size=1)
    if classifier is not None:
        with torch.no_grad():
            for conv, linear in ((fc6, cast(nn.Linear, classifier[0])), (fc7, cast(nn.Linear, classifier[3]))):
                conv.weight.copy_(linear.weight.view(conv.weight.shape))
                cast(torch.Tensor, conv.bias).copy_(linear.bias)
    return features, fc6, fc7
