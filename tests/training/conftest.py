"""Small synthetic datasets for training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from segkit.data.convert import convert_labelme
from segkit.data.synthetic import DemoSpec, generate_demo_dataset

TINY_MODEL = {"base_channels": 4, "depth": 2}


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 synthetic 64x48 images converted to images/ + masks/ (4 classes)."""
    root = tmp_path_factory.mktemp("shapes")
    generate_demo_dataset(root / "labelme", DemoSpec(num_images=12, width=64, height=48, seed=3))
    convert_labelme(root / "labelme", root / "data", noviz=True)
    return root / "data"


def tiny_options(data: Path, out: Path, **overrides) -> dict:
    """Options of a fast training run on ``data``."""
    options = {
        "data": str(data),
        "out": str(out),
        "model": "unet",
        "model_kwargs": dict(TINY_MODEL),
        "img_size": 32,
        "batch_size": 4,
        "epochs": 2,
        "lr": 3e-3,
        "device": "cpu",
        "seed": 0,
        "val_split": 0.25,
        "precision": "32",
        "val_every": 1,
    }
    options.update(overrides)
    return options
