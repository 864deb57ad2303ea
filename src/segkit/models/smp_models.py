"""Architectures from segmentation-models-pytorch (smp), with smp and timm encoders.

smp implements these papers with any encoder: its own (``resnet34``,
``efficientnet-b0``, ``mit_b0``, ...; see ``smp.encoders.get_encoder_names()``)
or any timm model as ``tu-<timm name>`` (e.g. ``tu-convnext_tiny``).
``pretrained=True`` downloads the encoder's ImageNet weights through smp/timm.

Names: ``unet-resnet34`` and ``unet-efficientnet-b0`` are U-Nets with a fixed
encoder; ``unet-encoder`` is the U-Net with ``encoder=NAME``; the other
architectures (``unetplusplus``, ``fpn``, ``deeplabv3``, ``deeplabv3plus``,
``pspnet``, ``segformer``) take ``encoder=NAME`` with the paper's backbone
family as default.

Deviations from smp's defaults, to follow the papers: DeepLab's atrous rates
follow the output stride (6, 12, 18 at 16; 12, 24, 36 at 8); PSPNet uses the
whole dilated encoder at output stride 8 (smp's default truncates the encoder
at stride 8 instead) with dropout 0.1. One deviation from the papers: the
image-pooling branch of DeepLab's ASPP normalises with GroupNorm (one group)
instead of BatchNorm, whose statistics over a 1x1 map are undefined for a batch
of one image.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import nn

from segkit.models.base import PaddedModel
from segkit.models.pretrained import downloading
from segkit.models.registry import register_model

UNET = "Ronneberger et al., U-Net, MICCAI 2015"
UNETPP = "Zhou et al., UNet++, DLMIA 2018"
FPN = "Kirillov et al., Panoptic FPN (semantic branch), CVPR 2019"
DEEPLABV3 = "Chen et al., DeepLabV3 (Rethinking Atrous Convolution), arXiv 2017"
DEEPLABV3PLUS = "Chen et al., DeepLabV3+ (Atrous Separable Convolution), ECCV 2018"
PSPNET = "Zhao et al., Pyramid Scene Parsing Network, CVPR 2017"
SEGFORMER = "Xie et al., SegFormer, NeurIPS 2021"

UNET_DECODER = (256, 128, 64, 32, 16)
PAPER_ATROUS_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
TINY_ENCODER = "tu-test_resnet"  # timm's 80 k-parameter ResNet made for tests
TINY_UNET = {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}


class SmpModel(PaddedModel):
    """An smp network padded to its encoder's output stride, exposing ``encoder``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__(net, stride=int(cast(Any, net).encoder.output_stride))

    @property
    def encoder(self) -> nn.Module:
        """The smp encoder (see :meth:`SegmentationModel.freeze_encoder`)."""
        return cast(nn.Module, self.net.encoder)


def check_encoder(encoder: str) -> None:
    """Reject names that are neither smp encoders nor ``tu-<timm model>``."""
    import segmentation_models_pytorch as smp
    import timm

    if encoder.startswith("tu-"):
        if not timm.is_model(encoder[3:]):
            raise ValueError(f"unknown timm encoder {encoder[3:]!r} (see timm.list_models())")
    elif encoder not in smp.encoders.get_encoder_names():
        raise ValueError(
            f"unknown encoder {encoder!r}; use an smp encoder (smp.encoders.get_encoder_names()) "
            "or tu-<timm model name>"
        )


def encoder_weights(encoder: str, pretrained: bool) -> str | bool | None:
    """smp's ``encoder_weights`` value: ImageNet weights (or the encoder's only weights) or none."""
    import segmentation_models_pytorch as smp

    if not pretrained:
        return None
    if encoder.startswith("tu-"):
        return True  # timm picks the model's default pretrained tag
    settings = smp.encoders.encoders[encoder]["pretrained_settings"]
    if not settings:
        raise ValueError(f"encoder {encoder!r} has no pretrained weights")
    return "imagenet" if "imagenet" in settings else next(iter(settings))


def build(
    architecture: str, encoder: str, pretrained: bool, num_classes: int, in_channels: int, **options: Any
) -> SmpModel:
    """``smp.<architecture>(encoder, ...)`` wrapped as a segkit model; downloads weights when ``pretrained``."""
    import segmentation_models_pytorch as smp

    check_encoder(encoder)
    for key, value in options.items():
        if isinstance(value, list):
            options[key] = tuple(value)
    weights = encoder_weights(encoder, pretrained)
    with downloading(f"encoder {encoder}") if pretrained else contextlib.nullcontext():
        net = construct(
            lambda: getattr(smp, architecture)(
                encoder_name=encoder, encoder_weights=weights, in_channels=in_channels, classes=num_classes, **options
            )
        )
    return SmpModel(net)


def construct(factory: Callable[[], nn.Module]) -> nn.Module:
    """``factory()``, also under ``torch.device("meta")`` (used to count FLOPs without memory).

    Some encoders (smp's Mix Transformer) read tensor values while being
    built, which meta tensors cannot do; those are built on the CPU and moved
    to the meta device.
    """
    if torch.get_default_device().type != "meta":
        return factory()
    try:
        return factory()
    except RuntimeError:
        with torch.device("cpu"):
            return factory().to("meta")


def unet(
    encoder: str,
    num_classes: int,
    in_channels: int,
    pretrained: bool,
    encoder_depth: int,
    decoder_channels: Sequence[int],
    decoder_attention: str | None,
    architecture: str = "Unet",
) -> SmpModel:
    """smp's ``Unet`` (or another U-Net-shaped ``architecture`` with the same options, ``UnetPlusPlus``)."""
    return build(
        architecture,
        encoder,
        pretrained,
        num_classes,
        in_channels,
        encoder_depth=encoder_depth,
        decoder_channels=decoder_channels,
        decoder_attention_type=decoder_attention,
    )


@register_model(
    "unet-resnet34",
    family="unet",
    paper=UNET + " + ResNet-34 (He et al., CVPR 2016)",
    pretrained_encoder=True,
    output_stride=32,
    test_kwargs=TINY_UNET,
)
def unet_resnet34(
    num_classes: int,
    in_channels: int = 3,
    pretrained: bool = False,
    encoder_depth: int = 5,
    decoder_channels: Sequence[int] = UNET_DECODER,
    decoder_attention: str | None = None,
) -> SmpModel:
    """smp U-Net with a ResNet-34 encoder (He et al., CVPR 2016).

    Args:
        num_classes: output channels (1 for binary mode).
        in_channels: input image channels.
        pretrained: start the encoder from ImageNet weights.
        encoder_depth: encoder stages used (3-5); ``decoder_channels`` needs as many widths.
        decoder_channels: decoder widths from the deepest stage up.
        decoder_attention: ``"scse"`` adds concurrent spatial/channel squeeze-and-excitation.
    """
    return unet("resnet34", num_classes, in_channels, pretrained, encoder_depth, decoder_channels, decoder_attention)


@register_model(
    "unet-efficientnet-b0",
    family="unet",
    paper=UNET + " + EfficientNet-B0 (Tan & Le, ICML 2019)",
    pretrained_encoder=True,
    output_stride=32,
    test_kwargs=TINY_UNET,
)
def unet_efficientnet_b0(
    num_classes: int,
    in_channels: int = 3,
    pretrained: bool = False,
    encoder_depth: int = 5,
    decoder_channels: Sequence[int] = UNET_DECODER,
    decoder_attention: str | None = None,
) -> SmpModel:
    """smp U-Net with timm's EfficientNet-B0 encoder (Tan & Le, ICML 2019); options as ``unet-resnet34``."""
    return unet(
        "tu-efficientnet_b0", num_classes, in_channels, pretrained, encoder_depth, decoder_channels, decoder_attention
    )


@register_model(
    "unet-encoder",
    family="unet",
    paper=UNET + " + any smp/timm encoder",
    pretrained_encoder=True,
    output_stride=32,
    test_kwargs={"encoder": TINY_ENCODER, **TINY_UNET},
)
def unet_encoder(
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "resnet34",
    pretrained: bool = False,
    encoder_depth: int = 5,
    decoder_channels: Sequence[int] = UNET_DECODER,
    decoder_attention: str | None = None,
) -> SmpModel:
    """smp U-Net with any smp encoder or ``tu-<timm model>``; options as ``unet-resnet34``."""
    return unet(encoder, num_classes, in_channels, pretrained, encoder_depth, decoder_channels, decoder_attention)


@register_model(
    "unetplusplus",
    family="unetplusplus",
    paper=UNETPP,
    pretrained_encoder=True,
    output_stride=32,
    test_kwargs={"encoder": TINY_ENCODER, **TINY_UNET},
)
def unetplusplus(
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "resnet34",
    pretrained: bool = False,
    encoder_depth: int = 5,
    decoder_channels: Sequence[int] = UNET_DECODER,
    decoder_attention: str | None = None,
) -> SmpModel:
    """UNet++: nested, densely connected skip pathways between encoder and decoder (smp).

    Options as ``unet-encoder``. Deep supervision of the nested outputs
    (optional in the paper) is not used.
    """
    return unet(
        encoder,
        num_classes,
        in_channels,
        pretrained,
        encoder_depth,
        decoder_channels,
        decoder_attention,
        architecture="UnetPlusPlus",
    )


@register_model(
    "fpn",
    family="fpn",
    paper=FPN,
    pretrained_encoder=True,
    output_stride=32,
    test_kwargs={"encoder": TINY_ENCODER, "pyramid_channels": 16, "segmentation_channels": 32},
)
def fpn(
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "resnet34",
    pretrained: bool = False,
    pyramid_channels: int = 256,
    segmentation_channels: int = 128,
    dropout: float = 0.2,
) -> SmpModel:
    """Semantic FPN: a top-down feature pyramid (P2-P5), each level up-sampled to 1/4 and summed (smp).

    Args:
        num_classes: output channels (1 for binary mode).
        in_channels: input image channels.
        encoder: smp encoder or ``tu-<timm model>``.
        pretrained: start the encoder from ImageNet weights.
        pyramid_channels: width of the pyramid (256 in the papers).
        segmentation_channels: width of each level's segmentation branch (128 in Kirillov et al.;
            a multiple of 32, its GroupNorm has 32 groups).
        dropout: dropout before the classifier.
    """
    return build(
        "FPN",
        encoder,
        pretrained,
        num_classes,
        in_channels,
        decoder_pyramid_channels=pyramid_channels,
        decoder_segmentation_channels=segmentation_channels,
        decoder_dropout=dropout,
    )


def group_norm_in_image_pooling(model: SmpModel) -> SmpModel:
    """Replace BatchNorm in DeepLab's ASPP image-pooling branch by GroupNorm (works for a batch of one)."""
    from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPPPooling

    for module in model.modules():
        if isinstance(module, ASPPPooling):
            for index, layer in enumerate(module):
                if isinstance(layer, nn.BatchNorm2d):
                    module[index] = nn.GroupNorm(1, layer.num_features, device=layer.weight.device)
    return model


def deeplab(
    architecture: str,
    encoder: str,
    num_classes: int,
    in_channels: int,
    pretrained: bool,
    output_stride: int,
    atrous_rates: Sequence[int] | None,
    decoder_channels: int,
    **options: Any,
) -> SmpModel:
    if output_stride not in PAPER_ATROUS_RATES:
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride!r}")
    rates = PAPER_ATROUS_RATES[output_stride] if atrous_rates is None else atrous_rates
    if len(rates) != 3 or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in rates):
        raise ValueError(f"atrous_rates must be three positive integers, got {atrous_rates!r}")
    model = build(
        architecture,
        encoder,
        pretrained,
        num_classes,
        in_channels,
        encoder_output_stride=output_stride,
        decoder_atrous_rates=tuple(rates),
        decoder_channels=decoder_channels,
        **options,
    )
    return group_norm_in_image_pooling(model)


DEEPLAB_TEST = {"encoder": TINY_ENCODER, "decoder_channels": 16}


@register_model(
    "deeplabv3",
    family="deeplab",
    paper=DEEPLABV3,
    pretrained_encoder=True,
    output_stride=16,
    test_kwargs=DEEPLAB_TEST,
)
def deeplabv3(
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "resnet50",
    pretrained: bool = False,
    output_stride: int = 16,
    atrous_rates: Sequence[int] | None = None,
    decoder_channels: int = 256,
) -> SmpModel:
    """DeepLabV3: dilated encoder and ASPP (1x1 conv, three atrous 3x3 convs, image pooling) (smp).

    Args:
        num_classes: output channels (1 for binary mode).
        in_channels: input image channels.
        encoder: smp encoder or ``tu-<timm model>`` (the paper uses ResNet-101: ``"resnet101"``).
        pretrained: start the encoder from ImageNet weights.
        output_stride: 16 (the paper's training setting) or 8 (finer, about 4x the cost).
        atrous_rates: the three ASPP rates; default (6, 12, 18) at stride 16, (12, 24, 36) at 8.
        decoder_channels: ASPP width (256 in the paper).
    """
    return deeplab(
        "DeepLabV3", encoder, num_classes, in_channels, pretrained, output_stride, atrous_rates, decoder_channels
    )


@register_model(
    "deeplabv3plus",
    family="deeplab",
    paper=DEEPLABV3PLUS,
    pretrained_encoder=True,
    output_stride=16,
    test_kwargs=DEEPLAB_TEST,
)
def deeplabv3plus(
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "resnet50",
    pretrained: bool = False,
    output_stride: int = 16,
    atrous_rates: Sequence[int] | None = None,
    decoder_channels: int = 256,
    separable: bool = True,
) -> SmpModel:
    """DeepLabV3+: DeepLabV3's ASPP plus a decoder that fuses stride-4 low-level features (smp).

    Options as ``deeplabv3``; ``separable`` uses depthwise-separable atrous
    convolutions in the ASPP as in the paper.
    """
    return deeplab(
        "DeepLabV3Plus",
        encoder,
        num_classes,
        in_channels,
        pretrained,
        output_stride,
        atrous_rates,
        decoder_channels,
        decoder_aspp_separable=separable,
    )


@register_model(
    "pspnet",
    family="pspnet",
    paper=PSPNET,
    pretrained_encoder=True,
    output_stride=8,
    test_kwargs={"encoder": TINY_ENCODER, "psp_channels": 16},
)
def pspnet(
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "resnet50",
    pretrained: bool = False,
    output_stride: int = 8,
    psp_channels: int = 512,
    dropout: float = 0.1,
) -> SmpModel:
    """PSPNet: dilated encoder and pyramid pooling at 1x1, 2x2, 3x3 and 6x6 bins (smp).

    Args:
        num_classes: output channels (1 for binary mode).
        in_channels: input image channels.
        encoder: smp encoder or ``tu-<timm model>`` (the paper uses dilated ResNet-50/101).
        pretrained: start the encoder from ImageNet weights.
        output_stride: 8 as in the paper, 16, or 32 (no dilation; cheapest).
        psp_channels: width after fusing the pyramid (512 in the paper).
        dropout: dropout before the classifier (0.1 in the paper).
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
    return build(
        "PSPNet",
        encoder,
        pretrained,
        num_classes,
        in_channels,
        encoder_depth=5,
        output_stride=output_stride,
        upsampling=output_stride,
        psp_out_channels=psp_channels,
        psp_dropout=dropout,
    )


@register_model(
    "segformer",
    family="segformer",
    paper=SEGFORMER,
    pretrained_encoder=True,
    output_stride=32,
    test_kwargs={"decoder_channels": 16},
)
def segformer(
    num_classes: int,
    in_channels: int = 3,
    encoder: str = "mit_b0",
    pretrained: bool = False,
    decoder_channels: int = 256,
) -> SmpModel:
    """SegFormer: Mix Transformer encoder (MiT-B0..B5) and the all-MLP decoder (smp).

    Args:
        num_classes: output channels (1 for binary mode).
        in_channels: input image channels.
        encoder: ``mit_b0`` ... ``mit_b5`` (or another smp/timm encoder).
        pretrained: start the encoder from ImageNet weights.
        decoder_channels: MLP decoder width (256 for B0/B1, 768 for B2-B5 in the paper).
    """
    return build(
        "Segformer", encoder, pretrained, num_classes, in_channels, decoder_segmentation_channels=decoder_channels
    )
