"""Hugging-Face-style export: the offline folder round trip through the CLI, and every command taking the folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_checkpoint
from evaluation.test_html_report import make_dataset

import segkit
from segkit.checkpoint import load_pretrained, save_checkpoint
from segkit.cli import main
from segkit.errors import SegkitError
from segkit.evaluation.metrics import compute_metrics
from segkit.exporters.hf import push_to_hub

CLASSES = ("background", "road", "car")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint with a training summary, as the trainer writes it."""
    checkpoint = tiny_checkpoint(CLASSES, seed=2, zero_head_bias=True)
    training = checkpoint.card.training
    training.epoch, training.best_epoch, training.seconds = 4, 3, 90.0
    training.metrics = compute_metrics(np.array([[50, 3, 1], [4, 30, 0], [0, 2, 9]]), CLASSES, 5)
    training.config = {"data": "data/streets", "val_split": 0.2, "lr": 0.001, "optimizer": "adamw"}
    path = tmp_path_factory.mktemp("hf") / "best.pt"
    save_checkpoint(checkpoint, path)
    return path


def test_folder_round_trip(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model"
    assert main(["export", str(trained), "--format", "hf", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(path.name for path in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]  # no staging folder left

    original = segkit.load(str(trained), device="cpu")
    loaded = segkit.load(str(out), device="cpu")
    assert loaded.card.to_dict() == original.card.to_dict()
    assert json.loads((out / "config.json").read_text()) == original.card.to_dict()
    image = np.random.default_rng(0).integers(0, 255, (37, 51, 3), dtype=np.uint8)
    assert np.array_equal(loaded.predict(image), original.predict(image))
    checkpoint = load_pretrained(out)
    for name, tensor in original.model.state_dict().items():
        assert torch.equal(checkpoint.state_dict[name], tensor.cpu())

    readme = (out / "README.md").read_text()
    assert readme.startswith("---\nlibrary_name: segkit\n")
    for text in ("| 1 | road |", "## Metrics", "mIoU 0.", "## Intended use", "data/streets", "Trained 4 epochs"):
        assert text in readme

    # Refuses to overwrite without --overwrite, then replaces.
    assert main(["export", str(trained), "--format", "hf", "--out", str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(trained), "--format", "hf", "--out", str(out), "--overwrite"]) == 0


def test_commands_take_the_folder(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    assert main(["export", str(trained), "--format", "hf", "--out", str(out)]) == 0
    photos = tmp_path / "photos"
    photos.mkdir()
    from PIL import Image

    Image.fromarray(np.random.default_rng(1).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(photos / "a.png")
    assert main(["predict", str(out), str(photos), "--out", str(tmp_path / "masks"), "--device", "cpu"]) == 0
    assert (tmp_path / "masks" / "a.png").is_file()
    assert main(["export", str(out), "--format", "hf", "--out", str(tmp_path / "again")]) == 0  # folder to folder
    data = make_dataset(tmp_path / "data", count=2)
    assert main(["evaluate", str(out), str(data), "--device", "cpu", "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["num_images"] == 2

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from segkit.serving.app import create_app

    with TestClient(create_app(out, device="cpu")) as client:
        assert client.get("/info").json()["classes"] == list(CLASSES)


def test_bad_folders_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(SegkitError, match="config.json: not found"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(SegkitError, match="not a readable model card"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(tiny_checkpoint().card.to_dict()))
    with pytest.raises(SegkitError, match="not a readable safetensors file"):
        load_pretrained(tmp_path)


def test_push_to_hub_needs_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved login
    with pytest.raises(SegkitError, match="needs a Hugging Face token"):
        push_to_hub(tmp_path, "someone/model")
