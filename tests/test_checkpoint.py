"""The model card and the checkpoint file (segkit.checkpoint): one owner, checked on load."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_checkpoint

from segkit.checkpoint import (
    CHECKPOINT_VERSION,
    Checkpoint,
    ModelCard,
    load_checkpoint,
    save_checkpoint,
)
from segkit.data.transforms import PreprocessConfig
from segkit.errors import SegkitError
from segkit.visualize import PALETTE


def test_round_trip_through_a_weights_only_file(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint()
    checkpoint.card.training.history = [{"epoch": 1, "val_mIoU": float("nan")}]
    save_checkpoint(checkpoint, tmp_path / "a.pt")
    raw = torch.load(tmp_path / "a.pt", weights_only=True)
    assert raw["format"] == "segkit-checkpoint" and raw["version"] == CHECKPOINT_VERSION and "resume" not in raw
    loaded = load_checkpoint(tmp_path / "a.pt")
    assert loaded.card.training.history == [{"epoch": 1, "val_mIoU": None}]  # NaN stored as null
    loaded.card.training.history = checkpoint.card.training.history = []
    assert loaded.card == checkpoint.card
    model = loaded.build_model()
    assert all(torch.equal(model.state_dict()[key], value) for key, value in checkpoint.state_dict.items())


def test_card_derives_channels_background_and_colours() -> None:
    preprocess = PreprocessConfig(img_size=32)
    card = ModelCard.create("unet", ["_background_", "cat", "dog"], preprocess)
    assert card.model.out_channels == 3 and card.background == 0 and card.palette[0] == [0, 0, 0]
    binary = ModelCard.create("unet", ["background", "crack"], preprocess, binary=True)
    assert binary.model.out_channels == 1 and binary.num_classes == 2
    # class 0 of an aerial dataset is a real class: not background, and not drawn black
    aerial = ModelCard.create("unet", ["Building", "Land", "Road"], preprocess)
    assert aerial.background is None and aerial.palette[0] != [0, 0, 0]
    assert len({tuple(colour) for colour in aerial.palette}) == 3
    own = ModelCard.create("unet", ["Building", "Land"], preprocess, palette=[[60, 16, 152], [132, 41, 246]])
    table = own.palette_array()
    assert table.shape == (256, 3) and table[:2].tolist() == [[60, 16, 152], [132, 41, 246]]
    assert (table[255] == PALETTE[255]).all()


def corrupted(mutate: Any) -> dict[str, Any]:
    state = copy.deepcopy(tiny_checkpoint().to_dict())
    mutate(state)
    return state


MALFORMED = {
    "classes not a list": (lambda s: s["card"].__setitem__("classes", "abc"), "classes must be a list"),
    "one class": (lambda s: s["card"].__setitem__("classes", ["a"]), "2 to 255 distinct"),
    "repeated class": (lambda s: s["card"].__setitem__("classes", ["a", "a", "b"]), "distinct"),
    "palette colour out of range": (lambda s: s["card"]["palette"].__setitem__(0, [0, 0, 300]), "palette"),
    "threshold text": (lambda s: s["card"].__setitem__("threshold", "high"), "threshold"),
    "ignore index 999": (lambda s: s["card"].__setitem__("ignore_index", 999), "ignore_index"),
    "huge input size": (lambda s: s["card"]["preprocess"].__setitem__("img_size", [100000, 100000]), "input size"),
    "model not a mapping": (lambda s: s["card"].__setitem__("model", 7), "model must be a mapping"),
    "channels of another mode": (lambda s: s["card"].__setitem__("binary", True), "output channels"),
    "preprocess unknown key": (lambda s: s["card"]["preprocess"].__setitem__("colour", 1), "preprocess"),
    "history not a list": (lambda s: s["card"]["training"].__setitem__("history", 3), "history"),
    "no state dict": (lambda s: s.pop("state_dict"), "no 'state_dict'"),
    "future version": (lambda s: s.__setitem__("version", 99), "newer than this segkit"),
    "background out of range": (lambda s: s["card"].__setitem__("background", 9), "background"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_fields_give_one_line_naming_the_file(tmp_path: Path, name: str) -> None:
    mutate, message = MALFORMED[name]
    torch.save(corrupted(mutate), tmp_path / "bad.pt")
    with pytest.raises(SegkitError, match=message) as error:
        load_checkpoint(tmp_path / "bad.pt")
    assert error.value.path == str(tmp_path / "bad.pt") and "\n" not in str(error.value)


def test_absurd_width_is_refused_before_allocating(tmp_path: Path) -> None:
    state = corrupted(lambda s: s["card"]["model"]["kwargs"].__setitem__("base_channels", 100000))
    torch.save(state, tmp_path / "wide.pt")
    checkpoint = load_checkpoint(tmp_path / "wide.pt")
    with pytest.raises(SegkitError, match="parameters"):
        checkpoint.build_model(tmp_path / "wide.pt")


def test_truncated_file_names_the_checkpoints_to_use_instead(tmp_path: Path) -> None:
    save_checkpoint(tiny_checkpoint(), tmp_path / "best.pt")
    save_checkpoint(tiny_checkpoint(), tmp_path / "epoch_003.pt")
    data = (tmp_path / "best.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(SegkitError, match=r"last.pt: not a readable checkpoint .*use .*best.pt or .*epoch_003.pt"):
        load_checkpoint(tmp_path / "last.pt")


def test_version_1_files_still_load(tmp_path: Path) -> None:
    new = tiny_checkpoint()
    card = new.card
    old = {
        "format": "segkit-checkpoint",
        "version": 1,
        "model": {"name": "unet", "num_classes": 3, "in_channels": 3, "kwargs": dict(card.model.kwargs)},
        "state_dict": new.state_dict,
        "classes": card.classes,
        "palette": card.palette,
        "binary": False,
        "threshold": 0.5,
        "ignore_index": 255,
        "preprocess": card.preprocess.to_dict(),
        "epoch": 4,
        "best_metric": 0.5,
        "best_metrics": {"mIoU": 0.5},
        "history": [],
        "config": {"lr": 0.01},
        "optimizer": {"state": {}, "param_groups": []},
    }
    torch.save(old, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert loaded.card.model == card.model and loaded.card.classes == card.classes
    assert loaded.card.training.epoch == 4 and loaded.card.training.config == {"lr": 0.01}
    assert loaded.resume == {"optimizer": {"state": {}, "param_groups": []}}
    model = loaded.build_model()
    image = torch.rand(1, 3, 16, 16)
    np.testing.assert_array_equal(model(image).detach(), new.build_model()(image).detach())


def test_card_is_plain_json(tmp_path: Path) -> None:
    import json

    card = tiny_checkpoint().card
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))) == card
    assert isinstance(Checkpoint.from_dict(tiny_checkpoint().to_dict()), Checkpoint)
