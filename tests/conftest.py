"""Shared test fixtures: where the real datasets are, and small synthetic data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("SEGKIT_DATA", REPO_ROOT.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real datasets folder (../shared/datasets or $SEGKIT_DATA); skips when absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATASETS}")
    return SHARED_DATASETS


def dataset_path(shared: Path, *parts: str) -> Path:
    """A sub-folder of the shared datasets, skipping the test when it is missing."""
    path = shared.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread per test process: pytest-xdist already runs two processes on two
    cores, and tiny models run several times faster without thread hand-offs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
