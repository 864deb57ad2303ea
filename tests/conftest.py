"""Shared test fixtures: where the real datasets are, and small synthetic data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    from segkit.checkpoint import Checkpoint

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


def tiny_checkpoint(
    classes: list[str] | tuple[str, ...] = ("background", "red", "blue"),
    binary: bool = False,
    resize: str = "letterbox",
    img_size: int = 32,
    *,
    seed: int = 0,
    zero_head_bias: bool = False,
) -> Checkpoint:
    """A real segkit checkpoint of a randomly initialised 2-level, 4-channel U-Net, as the trainer writes it.

    ``zero_head_bias`` makes the mask follow the image rather than one dominant random bias.
    """
    from segkit.checkpoint import Checkpoint, ModelCard
    from segkit.data.transforms import PreprocessConfig

    torch.manual_seed(seed)
    card = ModelCard.create(
        "unet",
        list(classes),
        PreprocessConfig(img_size=img_size, resize=resize),
        binary=binary,
        model_kwargs={"base_channels": 4, "depth": 2},
    )
    model = card.model.build()
    if zero_head_bias:
        with torch.no_grad():
            model.head.bias.zero_()
    return Checkpoint(card, model.state_dict())


CHROMIUM = Path(os.environ.get("SEGKIT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven by Playwright; skips without the package or /usr/bin/chromium
    (Debian: ``apt-get install -y chromium``)."""
    import shutil

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not CHROMIUM.is_file() and shutil.which("chromium") is None:
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    executable = CHROMIUM if CHROMIUM.is_file() else Path(shutil.which("chromium"))
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
