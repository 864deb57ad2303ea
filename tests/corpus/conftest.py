"""Fixtures of the hostile-input corpus: the generated files, a trained checkpoint, the server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .make_corpus import BASE, generate

# A tiny, fast training run (as in tests/training): 4-channel 2-level U-Net, 32x32 inputs, one epoch.
TRAIN_ARGS = [
    "--model", "unet", "--model-kwargs", "base_channels=4,depth=2", "--img-size", "32",
    "--epochs", "1", "--batch-size", "2", "--device", "cpu",
]  # fmt: skip
SERVER_MAX_UPLOAD_BYTES = 2**20


@dataclass(frozen=True)
class Corpus:
    """The generated corpus: its folder and the entries this file system could not hold."""

    root: Path
    skipped: dict[str, str]

    def entry(self, name: str) -> Path:
        """The folder of entry ``name``; skips the test when the entry could not be built here."""
        if name in self.skipped:
            pytest.skip(self.skipped[name])
        return self.root / name


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """Every corpus entry, generated once per session by make_corpus.py."""
    root = tmp_path_factory.mktemp("corpus")
    return Corpus(root, generate(root))


@pytest.fixture(scope="session")
def checkpoint(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """best.pt of a one-epoch `segkit train` run on the corpus's plain dataset (3 classes)."""
    from segkit.cli import main

    out = tmp_path_factory.mktemp("checkpoint") / "run"
    assert main(["train", str(corpus.root / BASE), "--out", str(out), *TRAIN_ARGS]) == 0
    return out / "best.pt"


@pytest.fixture(scope="module")
def client(checkpoint: Path) -> Iterator[object]:
    """A TestClient of `segkit serve`'s app with a 1 MiB upload limit."""
    from fastapi.testclient import TestClient

    from segkit.serving.app import create_app

    app = create_app(checkpoint, device="cpu", max_upload_bytes=SERVER_MAX_UPLOAD_BYTES)
    with TestClient(app) as test_client:
        yield test_client
