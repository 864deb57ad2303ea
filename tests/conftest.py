"""Shared test fixtures: where the real datasets are, and small synthetic data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
