"""Resuming checks its data: other classes are refused, other images need --force, moved data is fine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from segkit.cli import main
from training.test_distributed import train_command


def train_once(data: Path, out: Path) -> Path:
    assert main([*train_command(data, out), "--epochs", "1"]) == 0
    return out / "last.pt"


@pytest.fixture
def run(shapes_dataset: Path, tmp_path: Path) -> Path:
    return train_once(shapes_dataset, tmp_path / "run")


def copy_of(data: Path, target: Path) -> Path:
    shutil.copytree(data, target)
    return target


def test_other_classes_are_refused_naming_both(run: Path, shapes_dataset: Path, tmp_path: Path, capsys) -> None:
    other = copy_of(shapes_dataset, tmp_path / "other")
    names = (other / "class_names.txt").read_text().split()
    (other / "class_names.txt").write_text("\n".join([names[0], "cat", "dog", "bird"][: len(names)]) + "\n")
    capsys.readouterr()
    assert main(["train", str(other), "--resume", str(run), "--epochs", "2"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "cat" in error[0] and names[1] in error[0] and "size mismatch" not in error[0]


def test_other_images_need_force(run: Path, shapes_dataset: Path, tmp_path: Path, capsys, caplog) -> None:
    other = copy_of(shapes_dataset, tmp_path / "other")
    first = sorted((other / "images").iterdir())[0]
    first.unlink()
    (other / "masks" / first.name).unlink()
    capsys.readouterr()
    assert main(["train", str(other), "--resume", str(run), "--epochs", "2"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "other images" in error[0] and "--force" in error[0]
    assert main(["train", str(other), "--resume", str(run), "--epochs", "2", "--force"]) == 0
    assert "resuming on other images" in caplog.text


def test_the_same_data_moved_elsewhere_resumes(run: Path, shapes_dataset: Path, tmp_path: Path) -> None:
    moved = copy_of(shapes_dataset, tmp_path / "moved")
    assert main(["train", str(moved), "--resume", str(run), "--epochs", "2"]) == 0


def test_val_split_beside_a_validation_split_is_said_to_be_unused(
    shapes_dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from segkit.config import TrainConfig
    from segkit.training.builders import open_training_data

    data = tmp_path / "data"
    for split in ("train", "valid"):
        shutil.copytree(shapes_dataset, data / split)
    config = TrainConfig.from_options({"data": str(data), "val_split": 0.3})
    with caplog.at_level("WARNING"):
        opened = open_training_data(config)
    assert len(opened.val_indices) == len(opened.val_source)
    assert "--val-split is not used" in caplog.text and "valid split" in caplog.text
