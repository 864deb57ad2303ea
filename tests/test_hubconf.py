"""torch.hub entry points of the repository's hubconf.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, tiny_checkpoint

from segkit.checkpoint import save_checkpoint
from segkit.cli import main
from segkit.models import list_models


def hub_entries() -> dict[str, object]:
    """What ``torch.hub.list`` shows (it reads GitHub repositories only): public callables of hubconf.py."""
    spec = importlib.util.spec_from_file_location("hubconf_under_test", REPO_ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {
        name: getattr(module, name)
        for name in dir(module)
        if callable(getattr(module, name)) and not name.startswith("_")
    }


def test_every_model_by_name() -> None:
    entries = hub_entries()
    assert sorted(entries) == sorted([*list_models(), "checkpoint"])
    assert "Ronneberger" in entries["unet"].__doc__
    model = torch.hub.load(str(REPO_ROOT), "unet", source="local", num_classes=3)
    assert model(torch.zeros(1, 3, 32, 48)).shape == (1, 3, 32, 48)
    small = torch.hub.load(str(REPO_ROOT), "unet", source="local", num_classes=1, base_channels=4, depth=2)
    assert small(torch.zeros(2, 3, 20, 20)).shape == (2, 1, 20, 20)


@pytest.mark.parametrize("form", ["pt", "hf"])
def test_checkpoint_entry_is_ready_with_its_card(form: str, tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(("background", "cat"), seed=1)
    path = tmp_path / "best.pt"
    save_checkpoint(checkpoint, path)
    if form == "hf":
        assert main(["export", str(path), "--format", "hf", "--out", str(tmp_path / "model")]) == 0
        path = tmp_path / "model"
    model = torch.hub.load(str(REPO_ROOT), "checkpoint", str(path), source="local")
    assert not model.training and model.card.classes == ["background", "cat"]
    expected = checkpoint.build_model().eval()
    images = torch.randn(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.allclose(model(images), expected(images), atol=1e-5)
    assert model.predictor.predict(torch.zeros(30, 41, 3, dtype=torch.uint8).numpy()).shape == (30, 41)
