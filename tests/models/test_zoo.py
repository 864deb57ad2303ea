"""Architecture-specific checks of the model zoo (the shared behaviour is in test_all_models.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segkit.errors import SegkitError
from segkit.models import (
    create_model,
    encoders,
    list_models,
    model_info,
    summarize_model,
)
from segkit.models.fcn import bilinear_upsampling
from segkit.models.u2net import RSU


def parameters_on_meta(name: str, **kwargs: object) -> int:
    """Parameter count at default options, without allocating the weights."""
    if model_info(name).pretrained_encoder:
        kwargs.setdefault("pretrained", False)
    with torch.device("meta"):
        model = create_model(name, 2, **kwargs)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "paper_millions"),
    [("fcn8s", 134.3), ("segnet", 29.4), ("u2net", 44.0), ("u2netp", 1.13)],
)
def test_hand_written_models_have_the_papers_size(name: str, paper_millions: float) -> None:
    assert parameters_on_meta(name) / 1e6 == pytest.approx(paper_millions, rel=0.01)


@pytest.mark.parametrize("name", list_models())
def test_every_model_is_summarised_on_meta(name: str) -> None:
    """`segkit models` builds each model with default options on the meta device and counts its FLOPs."""
    summary = summarize_model(name, input_size=64)
    assert summary.parameters > 0 and summary.gflops > 0


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("fcn8s", {"width_mult": 0.0625}),
        ("segnet", {"width_mult": 0.0625}),
        ("mobilenetv2-unet", {"width_mult": 0.35, "decoder_channels": [8, 8, 8, 8]}),
        ("fcn-resnet50", {"output_stride": 32}),
        ("unet-encoder", {"encoder": "tu-test_resnet", "encoder_depth": 3, "decoder_channels": [8, 8, 8]}),
    ],
)
@pytest.mark.parametrize("in_channels", [1, 4])
def test_other_input_channel_counts(name: str, kwargs: dict, in_channels: int) -> None:
    model = create_model(name, 2, in_channels=in_channels, **kwargs).eval()
    with torch.no_grad():
        assert model(torch.randn(1, in_channels, 35, 45)).shape == (1, 2, 35, 45)


def test_adapted_first_conv_reuses_the_rgb_filters() -> None:
    conv = nn.Conv2d(3, 5, 3, padding=1)
    grey = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        for channels in (1, 6):  # a grey image gives the same response
            adapted = encoders.adapt_first_conv(conv, channels)
            torch.testing.assert_close(adapted(grey.expand(1, channels, 8, 8)), conv(grey.expand(1, 3, 8, 8)))
        four = encoders.adapt_first_conv(conv, 4)
    torch.testing.assert_close(four.weight[:, :3], conv.weight * 0.75)
    torch.testing.assert_close(four.weight[:, 3], conv.weight[:, 0] * 0.75)
    assert encoders.adapt_first_conv(conv, 3) is conv


def test_unknown_encoder_and_bad_options_are_one_line_errors() -> None:
    with pytest.raises(SegkitError, match="unknown encoder 'resnet35'"):
        create_model("unet-encoder", 2, encoder="resnet35")
    with pytest.raises(SegkitError, match="unknown timm encoder 'nope'"):
        create_model("fpn", 2, encoder="tu-nope")
    with pytest.raises(SegkitError, match="output_stride must be 8 or 16"):
        create_model("deeplabv3", 2, encoder="tu-test_resnet", output_stride=32)
    with pytest.raises(SegkitError, match="atrous_rates must be three positive integers"):
        create_model("deeplabv3", 2, encoder="tu-test_resnet", atrous_rates=[6, 12])
    with pytest.raises(SegkitError, match="pretrained weights exist only for width_mult=1"):
        create_model("segnet", 2, pretrained=True, width_mult=0.5)
    with pytest.raises(SegkitError, match="model 'unet-resnet34' has no option 'encoder'"):
        create_model("unet-resnet34", 2, encoder="resnet50")


# ------------------------------------------------------------------ FCN-8s
def test_fcn_upsampling_starts_as_bilinear_interpolation() -> None:
    layer = bilinear_upsampling(2, factor=2)
    x = torch.rand(1, 2, 6, 7)
    with torch.no_grad():
        expected = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        torch.testing.assert_close(layer(x)[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1])


def test_fcn8s_scores_start_at_zero_and_fuse_pool3_pool4_fc7() -> None:
    model = create_model("fcn8s", 3, width_mult=0.0625).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 40, 40)).abs().max() == 0  # zero-initialised scoring layers
        model.score_fr.bias.fill_(1.0)
        model.score_pool4.bias.fill_(10.0)
        model.score_pool3.bias.fill_(100.0)
        out = model(torch.randn(1, 3, 64, 64))
    # Interior of the 8x-upsampled sum: 100 (pool3) + 10 (pool4, bilinear 2x) + 1 (fc7, bilinear 4x).
    torch.testing.assert_close(out[..., 28:36, 28:36], torch.full((1, 3, 8, 8), 111.0))


def test_fcn_converts_vgg_fully_connected_layers_into_convolutions(monkeypatch: pytest.MonkeyPatch) -> None:
    """With pretrained weights, fc6 (7x7 conv) on a 7x7 map equals VGG's first linear layer."""
    from torchvision.models import vgg16

    torch.manual_seed(0)
    imagenet_like = vgg16()
    monkeypatch.setattr(encoders, "pretrained_torchvision", lambda builder, pretrained, **kw: imagenet_like)
    features, fc6, fc7 = encoders.vgg16_fully_convolutional(width_mult=1.0, pretrained=True, in_channels=3)
    assert features is imagenet_like.features
    pool5 = torch.randn(1, 512, 7, 7)
    with torch.no_grad():
        expected = imagenet_like.classifier[0](pool5.flatten(1))
        torch.testing.assert_close(fc6(pool5)[:, :, 3, 3], expected, rtol=1e-4, atol=1e-4)
        hidden = torch.randn(1, 4096)
        torch.testing.assert_close(fc7(hidden[..., None, None])[..., 0, 0], imagenet_like.classifier[3](hidden))


def test_fcn_resnet50_aux_head_is_deep_supervision() -> None:
    model = create_model("fcn-resnet50", 2, output_stride=32, aux_loss=True).train()
    outputs = model(torch.randn(2, 3, 33, 47))
    assert [tuple(o.shape) for o in outputs] == [(2, 2, 33, 47)] * 2
    assert isinstance(model.eval()(torch.randn(1, 3, 33, 47)), torch.Tensor)
    assert model.encoder is model.net.backbone


@pytest.mark.parametrize(("output_stride", "dilated"), [(8, 2), (16, 1), (32, 0)])
def test_fcn_resnet50_output_stride(output_stride: int, dilated: int) -> None:
    with torch.device("meta"):
        model = create_model("fcn-resnet50", 2, output_stride=output_stride)
    assert model.stride == output_stride
    layers = [model.encoder.layer3, model.encoder.layer4]
    assert sum(layer[0].conv2.stride == (1, 1) for layer in layers) == dilated


# ------------------------------------------------------------------ SegNet
def test_segnet_upsamples_with_the_pooling_indices() -> None:
    model = create_model("segnet", 2, width_mult=0.0625).eval()
    pools = [m for m in model.encoder if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 5 and all(pool.return_indices for pool in pools)
    assert not any(isinstance(m, (nn.ConvTranspose2d, nn.Upsample)) for m in model.modules())
    unpooled = []
    model.unpool.register_forward_hook(lambda module, args, out: unpooled.append(out))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert len(unpooled) == 5
    for out in unpooled:  # sparse: at most one value per 2x2 window survives
        assert (out != 0).float().mean() <= 0.25


# ------------------------------------------------------------------ U²-Net
@pytest.mark.parametrize(("height", "dilated"), [(7, False), (4, False), (4, True)])
def test_rsu_block_keeps_size_and_adds_its_input_convolution(height: int, dilated: bool) -> None:
    block = RSU(height, 3, 4, 6, dilated=dilated).eval()
    x = torch.randn(1, 3, 37, 45)
    with torch.no_grad():
        out = block(x)
    assert out.shape == (1, 6, 37, 45)
    dilations = [m.dilation[0] for m in block.modules() if isinstance(m, nn.Conv2d)]
    expected_bottom = 8 if dilated else 2
    assert max(dilations) == expected_bottom
    hooks = []
    block.bottom.register_forward_hook(lambda module, args, out: hooks.append(out.shape[-2:]))
    with torch.no_grad():
        block(x)
    assert (hooks[0] == x.shape[-2:]) == dilated  # RSU-4F never pools


def test_u2net_returns_fused_and_six_sides_in_training() -> None:
    model = create_model("u2netp", 1, width_mult=0.25).train()
    outputs = model(torch.randn(2, 3, 50, 70))
    assert len(outputs) == 7
    assert all(o.shape == (2, 1, 50, 70) for o in outputs)
    with torch.no_grad():
        fused = model.eval()(torch.randn(1, 3, 50, 70))
    assert fused.shape == (1, 1, 50, 70)
    assert model.fuse.in_channels == 6


# ------------------------------------------------------------------ MobileNetV2 U-Net
def test_mobilenet_unet_skips_at_four_scales() -> None:
    model = create_model("mobilenetv2-unet", 2, width_mult=0.35, decoder_channels=[8, 8, 8, 8]).eval()
    merged = []
    for stage in model.decoder:
        stage.register_forward_hook(lambda module, args, out: merged.append(out.shape[-1]))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 96))
    assert merged == [96 // 16, 96 // 8, 96 // 4, 96 // 2]
    for stage in model.decoder:
        assert isinstance(stage[0], nn.ConvTranspose2d) and isinstance(stage[1], nn.BatchNorm2d)


# ------------------------------------------------------------------ smp architectures
def aspp_dilations(model: nn.Module) -> list[int]:
    from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPP

    (aspp,) = [m for m in model.modules() if isinstance(m, ASPP)]
    return sorted({m.dilation[0] for m in aspp.modules() if isinstance(m, nn.Conv2d) and m.dilation[0] > 1})


@pytest.mark.parametrize("name", ["deeplabv3", "deeplabv3plus"])
def test_deeplab_atrous_rates_follow_the_output_stride(name: str) -> None:
    tiny = {"encoder": "tu-test_resnet", "decoder_channels": 16}
    assert aspp_dilations(create_model(name, 2, **tiny)) == [6, 12, 18]
    eight = create_model(name, 2, output_stride=8, **tiny)
    assert aspp_dilations(eight) == [12, 24, 36] and eight.stride == 8
    assert aspp_dilations(create_model(name, 2, atrous_rates=[2, 4, 6], **tiny)) == [2, 4, 6]


def test_deeplab_image_pooling_trains_with_one_image() -> None:
    from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPPPooling

    model = create_model("deeplabv3plus", 2, encoder="tu-test_resnet", decoder_channels=16).train()
    (pooling,) = [m for m in model.modules() if isinstance(m, ASPPPooling)]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in pooling)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)
    assert model.net.decoder.block1[0].out_channels == 48  # V3+'s 48-channel low-level projection


def test_pspnet_pools_1_2_3_6_on_a_dilated_encoder() -> None:
    model = create_model("pspnet", 2, encoder="tu-test_resnet", psp_channels=16)
    assert [block.pool_size for block in model.net.decoder.psp.blocks] == [1, 2, 3, 6]
    assert model.net.encoder.output_stride == 8 == model.stride


def test_smp_encoders() -> None:
    assert type(create_model("segformer", 2, decoder_channels=16).encoder).__name__ == "MixVisionTransformerEncoder"
    efficientnet = create_model("unet-efficientnet-b0", 2, encoder_depth=3, decoder_channels=[8, 8, 8])
    assert type(efficientnet.encoder.model).__name__ == "EfficientNetFeatures"  # timm
    resnet = create_model("unet-resnet34", 2, encoder_depth=3, decoder_channels=[8, 8, 8])
    assert type(resnet.encoder).__name__ == "ResNetEncoder"
