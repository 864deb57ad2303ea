"""U-Net configurations, parameter counts and the stride padding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segkit.models import create_model
from segkit.models.base import pad_to_multiple
from segkit.models.unet import UNet


def double_conv_params(c_in: int, c_out: int) -> int:
    """Two bias-free 3x3 convolutions, each followed by BatchNorm (weight + bias)."""
    return 9 * c_in * c_out + 9 * c_out * c_out + 4 * c_out


def expected_params(in_channels: int, num_classes: int, base: int, depth: int, upsampling: str) -> int:
    """The U-Net parameter count derived from the architecture, stage by stage."""
    widths = [base * 2**level for level in range(depth + 1)]
    total = double_conv_params(in_channels, widths[0])
    total += sum(double_conv_params(widths[level], widths[level + 1]) for level in range(depth))
    for level in range(depth):
        low, high = widths[level], widths[level + 1]
        if upsampling == "transpose":  # 2x2 up-convolution to `low` channels (with bias), then concat
            total += 4 * high * low + low + double_conv_params(2 * low, low)
        else:
            total += double_conv_params(high + low, low)
    return total + widths[0] * num_classes + num_classes


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("base", [4, 6])
@pytest.mark.parametrize("upsampling", ["bilinear", "transpose"])
def test_configurations(depth: int, base: int, upsampling: str) -> None:
    model = create_model("unet", 3, in_channels=2, base_channels=base, depth=depth, upsampling=upsampling)
    assert model.stride == 2**depth
    assert sum(p.numel() for p in model.parameters()) == expected_params(2, 3, base, depth, upsampling)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 2, 19, 27)).shape == (2, 3, 19, 27)


@pytest.mark.parametrize(
    ("kwargs", "millions"),
    [
        ({}, 1.96),  # segkit default: base 16, depth 4, bilinear
        ({"base_channels": 32}, 7.85),
        ({"base_channels": 64, "upsampling": "transpose"}, 31.04),  # the paper's widths (~31 M)
    ],
)
def test_parameter_count_sanity(kwargs: dict, millions: float) -> None:
    with torch.device("meta"):
        model = create_model("unet", 2, in_channels=1, **kwargs)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, abs=0.01)


def test_padding_is_zeros_to_the_stride_and_cropped_back() -> None:
    torch.manual_seed(0)
    model = UNet(2, base_channels=4, depth=3).eval()
    images = torch.randn(1, 3, 21, 10)
    padded = pad_to_multiple(images, 8)
    assert padded.shape[-2:] == (24, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(images), model.forward_padded(padded)[..., :21, :10])
        assert model(torch.randn(1, 3, 1, 1)).shape == (1, 2, 1, 1)


def test_dropout_only_in_training() -> None:
    model = UNet(2, base_channels=4, depth=2, dropout=0.5)
    assert any(isinstance(module, nn.Dropout2d) for module in model.modules())
    assert not any(isinstance(module, nn.Dropout2d) for module in UNet(2, base_channels=4, depth=2).modules())
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(images), model(images))
        model.train()
        assert not torch.equal(model(images), model(images))


@pytest.mark.parametrize(
    "kwargs",
    [{"depth": 0}, {"base_channels": 0}, {"base_channels": 2.5}, {"upsampling": "nearest"}, {"dropout": 1.0}],
)
def test_invalid_options(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        UNet(2, **kwargs)
