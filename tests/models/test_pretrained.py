"""Pretrained weights without network, loading weight files, and frozen encoders."""

from __future__ import annotations

import logging
import socket
import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn

from segkit.errors import SegkitError
from segkit.models import create_model
from segkit.models.pretrained import (
    downloading,
    load_weights,
    read_state_dict,
)

TINY_SMP = {"encoder": "tu-test_resnet", "encoder_depth": 3, "decoder_channels": [8, 8, 8]}
TINY_SEGNET = {"width_mult": 0.0625}


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """No network: every download entry point of torchvision, smp and timm fails at once (and sockets too).

    Returns the list of attempted downloads, so tests can check the library really tried.
    """
    import segmentation_models_pytorch.encoders as smp_encoders
    import timm.models._builder as timm_builder
    import timm.models._hub as timm_hub
    import torchvision.models._api as torchvision_api

    attempts: list[str] = []

    def refuse(*args: object, **kwargs: object):
        attempts.append(str(args[0] if args else kwargs))
        raise urllib.error.URLError("network disabled in tests")

    def no_socket(*args: object, **kwargs: object):
        raise OSError("network disabled in tests")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty weights cache
    monkeypatch.setattr(torchvision_api, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(smp_encoders, "hf_hub_download", refuse)
    monkeypatch.setattr(timm_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(timm_builder, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(socket.socket, "connect", no_socket)
    return attempts


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("mobilenetv2-unet", {}),  # torchvision weights
        ("fcn-resnet50", {"output_stride": 32}),  # torchvision backbone weights
        ("unet-resnet34", {"encoder_depth": 3, "decoder_channels": [8, 8, 8]}),  # smp weights (Hugging Face hub)
        ("unet-efficientnet-b0", {"encoder_depth": 3, "decoder_channels": [8, 8, 8]}),  # timm weights
        ("segformer", {"decoder_channels": 16}),  # smp Mix Transformer weights
    ],
)
def test_pretrained_without_network_is_one_clear_error(offline: list[str], name: str, kwargs: dict) -> None:
    with pytest.raises(SegkitError) as caught:
        create_model(name, 2, pretrained=True, **kwargs)
    message = str(caught.value)
    assert message.startswith("could not download pretrained weights for ")
    assert "(no network?); download them elsewhere and pass --weights FILE, or train without --pretrained" in message
    assert offline, "the library never tried to download"


def test_downloading_lets_other_errors_through() -> None:
    with pytest.raises(KeyError), downloading("x"):
        raise KeyError("not a download problem")


# ------------------------------------------------------------------ load_weights
def head_keys(model: nn.Module) -> set[str]:
    return {key for key in model.state_dict() if key.startswith("decoder.4.3.")}  # SegNet's scoring convolution


def assert_same(state: dict[str, torch.Tensor], model: nn.Module, keys: set[str]) -> None:
    current = model.state_dict()
    for key in keys:
        torch.testing.assert_close(current[key], state[key], msg=key)


def test_fine_tuning_file_with_another_head(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Weights trained for 3 classes load into a 5-class model; the head keeps its fresh initialisation."""
    torch.manual_seed(0)
    source = create_model("segnet", 3, **TINY_SEGNET)
    torch.save(source.state_dict(), tmp_path / "three.pth")
    target = create_model("segnet", 5, **TINY_SEGNET)
    fresh_head = {key: target.state_dict()[key].clone() for key in head_keys(target)}
    with caplog.at_level(logging.INFO, logger="segkit.models.pretrained"):
        report = load_weights(target, tmp_path / "three.pth")
    assert set(report.mismatched) == head_keys(target) == {"decoder.4.3.weight", "decoder.4.3.bias"}
    assert not report.missing and not report.unexpected and report.prefix == ""
    shared = set(source.state_dict()) - head_keys(target)
    assert_same(source.state_dict(), target, shared)
    assert_same(fresh_head, target, head_keys(target))
    (record,) = caplog.records
    assert "2 mismatched (decoder.4.3.bias, decoder.4.3.weight)" in record.getMessage()
    with pytest.raises(SegkitError, match="does not match the model exactly"):
        load_weights(target, tmp_path / "three.pth", strict=True)


@pytest.mark.parametrize("wrapper", ["segkit", "state_dict", "model", "ddp", "compiled"])
def test_checkpoint_wrappers_and_prefixes(tmp_path: Path, wrapper: str) -> None:
    torch.manual_seed(0)
    source = create_model("unet-encoder", 2, **TINY_SMP)
    state = source.state_dict()
    content = {
        "segkit": {"format": "segkit-checkpoint", "model": {"name": "unet-encoder", "kwargs": {}}, "state_dict": state},
        "state_dict": {"state_dict": state, "epoch": 3},
        "model": {"model": state, "optimizer": {}},
        "ddp": {f"module.{key}": value for key, value in state.items()},
        "compiled": {f"_orig_mod.{key}": value for key, value in state.items()},
    }[wrapper]
    torch.save(content, tmp_path / "weights.pt")
    target = create_model("unet-encoder", 2, **TINY_SMP)
    report = load_weights(target, tmp_path / "weights.pt", strict=True)
    assert len(report.loaded) == len(state)
    assert_same(state, target, set(state))


def test_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = create_model("segnet", 2, **TINY_SEGNET)
    state = {key: value.contiguous() for key, value in source.state_dict().items()}
    save_file(state, tmp_path / "model.safetensors")
    target = create_model("segnet", 2, **TINY_SEGNET)
    load_weights(target, tmp_path / "model.safetensors", strict=True)
    assert_same(state, target, set(state))


def test_encoder_only_file_lands_in_the_encoder(tmp_path: Path) -> None:
    """A backbone state dict (as timm/smp save it) is placed under the model's encoder."""
    torch.manual_seed(0)
    source = create_model("unet-encoder", 2, **TINY_SMP)
    torch.save(source.encoder.state_dict(), tmp_path / "backbone.pth")
    target = create_model("unet-encoder", 2, **TINY_SMP)
    report = load_weights(target, tmp_path / "backbone.pth")
    assert report.prefix == "net.encoder."
    assert len(report.loaded) == len(source.encoder.state_dict()) and not report.unexpected
    assert all(key.startswith(("net.decoder.", "net.segmentation_head.")) for key in report.missing)
    encoder_state = {f"net.encoder.{key}": value for key, value in source.encoder.state_dict().items()}
    assert_same(encoder_state, target, set(encoder_state))


def test_torchvision_classifier_file_lands_in_the_encoder(tmp_path: Path) -> None:
    """A torchvision VGG16-BN file (``features.*`` and ``classifier.*``) loads into SegNet's encoder."""
    torch.manual_seed(0)
    source = create_model("segnet", 2, **TINY_SEGNET)
    torchvision_like = {f"features.{key}": value for key, value in source.encoder.state_dict().items()}
    torchvision_like["classifier.6.weight"] = torch.randn(1000, 4096)
    torch.save(torchvision_like, tmp_path / "vgg16_bn.pth")
    target = create_model("segnet", 2, **TINY_SEGNET)
    report = load_weights(target, tmp_path / "vgg16_bn.pth")
    assert report.prefix == "encoder."
    assert report.unexpected == ("classifier.6.weight",)
    encoder_state = {f"encoder.{key}": value for key, value in source.encoder.state_dict().items()}
    assert_same(encoder_state, target, set(encoder_state))


def test_explicit_prefix(tmp_path: Path) -> None:
    source = create_model("segnet", 2, **TINY_SEGNET)
    torch.save(source.encoder.state_dict(), tmp_path / "encoder.pt")
    report = load_weights(create_model("segnet", 2, **TINY_SEGNET), tmp_path / "encoder.pt", prefix="encoder.")
    assert report.prefix == "encoder." and len(report.loaded) == len(source.encoder.state_dict())


class NotATensor:
    pass


def test_unusable_files_are_one_line_errors(tmp_path: Path) -> None:
    model = create_model("segnet", 2, **TINY_SEGNET)
    with pytest.raises(SegkitError, match="weights file not found"):
        load_weights(model, tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(SegkitError, match="garbage.pt: not a readable weights file"):
        load_weights(model, tmp_path / "garbage.pt")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(SegkitError, match="not a readable safetensors file"):
        load_weights(model, tmp_path / "garbage.safetensors")
    torch.save({"weights": NotATensor()}, tmp_path / "pickled.pt")
    with pytest.raises(SegkitError, match="refused to load"):
        load_weights(model, tmp_path / "pickled.pt")
    torch.save({"epoch": 3}, tmp_path / "empty.pt")
    with pytest.raises(SegkitError, match="contains no tensors"):
        read_state_dict(tmp_path / "empty.pt")
    torch.save({"layer.weight": torch.zeros(7, 7, 7)}, tmp_path / "other.pt")
    with pytest.raises(SegkitError, match="no tensor in the file matches the model"):
        load_weights(model, tmp_path / "other.pt")


# ------------------------------------------------------------ SegmentationModel.freeze_encoder
def batchnorm_stats(module: nn.Module) -> list[torch.Tensor]:
    return [m.running_mean.clone() for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize(
    ("name", "kwargs", "decoder"),
    [
        ("unet-encoder", TINY_SMP, "net.decoder"),
        ("mobilenetv2-unet", {"width_mult": 0.35, "decoder_channels": [8, 8, 8, 8]}, "decoder"),
        ("segnet", TINY_SEGNET, "decoder"),
    ],
)
def test_frozen_encoder_keeps_weights_and_batchnorm_statistics(name: str, kwargs: dict, decoder: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, 2, **kwargs)
    model.freeze_encoder()
    assert model.encoder_frozen
    model.train()  # the trainer calls this every epoch; frozen BatchNorm must stay in eval mode
    decoder_module = model.get_submodule(decoder)
    encoder_weights = [p.clone() for p in model.encoder.parameters()]
    encoder_stats, decoder_stats = batchnorm_stats(model.encoder), batchnorm_stats(decoder_module)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(torch.randn(2, 3, 64, 64) * 3 + 1).square().mean()
    loss.backward()
    optimizer.step()
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.encoder.parameters())
    for before, after in zip(encoder_weights, model.encoder.parameters()):
        torch.testing.assert_close(before, after)
    for before, after in zip(encoder_stats, batchnorm_stats(model.encoder)):
        torch.testing.assert_close(before, after)
    assert any(not torch.equal(b, a) for b, a in zip(decoder_stats, batchnorm_stats(decoder_module)))

    model.freeze_encoder(frozen=False)
    assert not model.encoder_frozen
    assert all(p.requires_grad for p in model.encoder.parameters())
    assert all(m.training for m in model.encoder.modules() if isinstance(m, nn.BatchNorm2d))
    model(torch.randn(2, 3, 64, 64) * 3 + 1)
    assert any(not torch.equal(b, a) for b, a in zip(encoder_stats, batchnorm_stats(model.encoder)))


def test_freezing_twice_and_models_without_encoder() -> None:
    model = create_model("unet-encoder", 2, **TINY_SMP)
    model.freeze_encoder().freeze_encoder()
    model.freeze_encoder(frozen=False)
    assert not model.encoder_frozen
    assert not any(m._forward_pre_hooks for m in model.encoder.modules())
    with pytest.raises(SegkitError, match="model UNet has no encoder"):
        create_model("unet", 2, base_channels=4, depth=2).freeze_encoder()
