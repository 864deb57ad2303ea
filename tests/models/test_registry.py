"""The model registry, the shared pad/crop behaviour and the `segkit models` command."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator

import pytest
import segmentation_models_pytorch as smp
import torch
from torch import nn

from segkit.cli import models as models_cli
from segkit.errors import SegkitError
from segkit.models import (
    PaddedModel,
    SegmentationModel,
    count_flops,
    create_model,
    crop,
    list_models,
    model_info,
    model_options,
    pad_to_multiple,
    register_model,
    summarize_model,
    unregister_model,
)


@pytest.fixture
def scratch_registry() -> Iterator[None]:
    """Registrations made by a test vanish after it."""
    before = set(list_models())
    yield
    for name in set(list_models()) - before:
        unregister_model(name)


def test_list_models_filters_with_shell_patterns() -> None:
    assert "unet" in list_models()
    assert list_models() == sorted(list_models())
    assert list_models("un*") == [name for name in list_models() if name.startswith("un")]
    assert list_models("UNET") == ["unet"]
    assert list_models("no-such-*") == []


def test_model_info() -> None:
    info = model_info("unet")
    assert (info.family, info.pretrained_encoder, info.output_stride) == ("unet", False, 16)
    assert "Ronneberger" in info.paper


def test_model_options_lists_defaults() -> None:
    assert model_options("unet") == {"base_channels": 16, "depth": 4, "upsampling": "bilinear", "dropout": 0.0}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: create_model("nope", 2), "unknown model 'nope'; available: "),
        (lambda: model_info("nope"), "unknown model 'nope'"),
        (lambda: create_model("unet", 2, widht=8), "model 'unet' has no option 'widht'; options: base_channels"),
        (lambda: create_model("unet", 2, depth=0), "cannot build model 'unet'"),
        (lambda: create_model("unet", 2, upsampling="nearest"), "upsampling must be one of bilinear, transpose"),
        (lambda: create_model("unet", 0), "num_classes must be a positive integer"),
        (lambda: create_model("unet", 2, in_channels=2.5), "in_channels must be a positive integer"),
        (lambda: create_model("unet", 2, dropout=torch.tensor(0.1)), "must be a plain value"),
    ],
)
def test_user_errors_are_one_line_segkit_errors(call, message: str) -> None:
    with pytest.raises(SegkitError) as caught:
        call()
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_register_duplicate_name_fails(scratch_registry: None) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("unet", family="x", paper="x")(lambda num_classes, in_channels=3: nn.Identity())


def test_registered_smp_model_is_padded_and_gets_kwargs(scratch_registry: None) -> None:
    """A third-party network needing sides divisible by 32 works at any size through PaddedModel."""

    @register_model("smp_unet_test", family="smp", paper="test", pretrained_encoder=True, output_stride=32)
    def build(num_classes: int, in_channels: int = 3, pretrained: bool = True, **kwargs: object) -> nn.Module:
        net = smp.Unet(
            "resnet18",
            encoder_weights="imagenet" if pretrained else None,
            in_channels=in_channels,
            classes=num_classes,
            **kwargs,
        )
        return PaddedModel(net, stride=32)

    assert "smp_unet_test" in list_models("smp_*")
    model = create_model("smp_unet_test", 2, pretrained=False, decoder_channels=(16, 16, 16, 16, 16)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 45, 70)).shape == (1, 2, 45, 70)
    with pytest.raises(SegkitError, match="cannot build model 'smp_unet_test'"):
        create_model("smp_unet_test", 2, pretrained=False, encoder_depth=9)
    assert summarize_model("smp_unet_test", input_size=64).parameters > 0


class TwoHeads(SegmentationModel):
    """A deep-supervised toy: full-resolution main output and a half-resolution side output."""

    def __init__(self) -> None:
        super().__init__(stride=8)
        self.main = nn.Conv2d(3, 2, 1)
        self.side = nn.Conv2d(3, 2, 2, stride=2)
        self.seen: tuple[int, ...] = ()

    def forward_padded(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.seen = tuple(x.shape)
        return [self.main(x), self.side(x)]


def test_deep_supervision_lists_in_training_and_single_tensor_in_eval() -> None:
    model = TwoHeads()
    images = torch.randn(2, 3, 13, 21)
    outputs = model.train()(images)
    assert model.seen == (2, 3, 16, 24)
    assert [tuple(output.shape) for output in outputs] == [(2, 2, 13, 21)] * 2
    main = model.eval()(images)
    assert isinstance(main, torch.Tensor)
    torch.testing.assert_close(main, outputs[0])


def test_pad_to_multiple_and_crop() -> None:
    x = torch.randn(1, 2, 5, 8)
    padded = pad_to_multiple(x, 4)
    assert padded.shape == (1, 2, 8, 8)
    assert padded[..., 5:, :].abs().sum() == 0
    torch.testing.assert_close(crop(padded, 5, 8), x)
    aligned = x[..., :4, :]
    assert pad_to_multiple(aligned, 4) is aligned


def test_summary_counts_parameters_and_flops_on_meta() -> None:
    summary = summarize_model("unet", input_size=64)
    model = create_model("unet", 2)
    assert summary.parameters == sum(p.numel() for p in model.parameters())
    assert summary.gflops * 1e9 == count_flops(model, (1, 3, 64, 64))
    assert summary.to_dict()["name"] == "unet"


def test_flops_of_one_convolution() -> None:
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    assert count_flops(conv, (1, 3, 10, 10)) == 2 * 3 * 4 * 9 * 10 * 10


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    models_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["models", *argv])
    return args.func(args)


def test_cli_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["unet", "--size", "64"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:4] == ["name", "family", "params", "GFLOPs@64"]
    assert row.split()[:3] == ["unet", "unet", "1.96M"]
    assert run_cli(["--json", "un?t"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["name"] == "unet" and item["parameters"] == 1_964_114 and item["input_size"] == 512
    assert item["gflops"] == pytest.approx(28.0, abs=0.1)


def test_cli_unknown_pattern() -> None:
    with pytest.raises(SegkitError, match="no model matches 'zzz'"):
        run_cli(["zzz"])
