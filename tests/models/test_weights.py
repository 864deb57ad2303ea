"""ImageNet encoder weights found offline under every known name, loaded into the encoder, fast fallback."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import torch

from segkit.checkpoint import ModelSpec
from segkit.cli import main
from segkit.errors import SegkitError
from segkit.models import weights
from segkit.models.weights import find_weights, network_reachable, pretrained_model, weights_status


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty torch hub and Hugging Face caches, no $SEGKIT_WEIGHTS, and no network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("SEGKIT_WEIGHTS", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(weights, "network_reachable", lambda host, timeout=1.5: False)
    return tmp_path


def torchvision_mobilenet_file(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict shaped like torchvision's ImageNet MobileNetV2 file (random values), saved at ``path``."""
    from torchvision.models import mobilenet_v2

    torch.manual_seed(seed)
    state = mobilenet_v2(weights=None).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_every_known_name_in_every_cache_is_found(caches: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_weights("mobilenet_v2") is None and find_weights("resnet34") is None
    old = caches / "torch" / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"  # the older torchvision file
    old.parent.mkdir(parents=True)
    old.write_bytes(b"x")
    assert find_weights("mobilenet_v2") == old
    snapshot = caches / "hf" / "models--smp-hub--resnet34.imagenet" / "snapshots" / "7a57b34" / "model.safetensors"
    snapshot.parent.mkdir(parents=True)
    snapshot.write_bytes(b"x")
    assert find_weights("resnet34") == snapshot
    mine = caches / "mine" / "resnet34-333f7ec4.pth"
    mine.parent.mkdir()
    mine.write_bytes(b"x")
    monkeypatch.setenv("SEGKIT_WEIGHTS", str(mine.parent))
    assert find_weights("resnet34") == mine  # $SEGKIT_WEIGHTS first


def test_found_file_lands_in_the_encoder(caches: Path) -> None:
    state = torchvision_mobilenet_file(caches / "torch" / "hub" / "checkpoints" / "mobilenet_v2-7ebf99e0.pth")
    model = pretrained_model(ModelSpec("mobilenetv2-unet", 3))
    loaded = model.state_dict()
    assert torch.equal(loaded["encoder.0.0.weight"], state["features.0.0.weight"])
    assert torch.equal(loaded["encoder.17.conv.2.weight"], state["features.17.conv.2.weight"])


def test_a_file_of_another_architecture_is_refused(caches: Path) -> None:
    path = caches / "torch" / "hub" / "checkpoints" / "mobilenet_v2-7ebf99e0.pth"
    path.parent.mkdir(parents=True)
    torch.save({"features.0.0.weight": torch.zeros(32, 3, 3, 3)}, path)
    with pytest.raises(SegkitError, match="does not fit encoder mobilenet_v2"):
        pretrained_model(ModelSpec("mobilenetv2-unet", 3))


def test_offline_without_weights_is_one_clear_line(caches: Path) -> None:
    start = time.monotonic()
    with pytest.raises(SegkitError, match="no ImageNet weights for encoder resnet34 here and no network"):
        pretrained_model(ModelSpec("unet-resnet34", 2))
    assert time.monotonic() - start < 2.0


def test_network_test_gives_up_within_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(*args: object, **kwargs: object) -> None:
        time.sleep(5)
        raise TimeoutError("timed out")  # what a real connection attempt ends with

    monkeypatch.setattr(socket, "create_connection", hang)
    network_reachable.cache_clear()
    start = time.monotonic()
    assert network_reachable("example.invalid", timeout=0.5) is False
    assert time.monotonic() - start < 1.0
    network_reachable.cache_clear()


def test_segkit_weights_lists_what_is_here(caches: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = caches / "torch" / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    assert main(["weights"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert str(path) in lines["mobilenet_v2"] and "mobilenetv2-unet" in lines["mobilenet_v2"]
    assert "not available" in lines["resnet34"]
    assert weights_status("mobilenet_v2").available and not weights_status("resnet34").available
