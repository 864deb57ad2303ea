"""The PyTorch-free install: ``pip install "segkit[onnx]"`` predicts, serves and evaluates exported models.

The slow test installs that extra from PyPI into a fresh virtual environment and
drives the real ``segkit`` command there; the fast one checks, in the test
environment, that the ONNX path never imports PyTorch even when it is installed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import venv
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, tiny_checkpoint
from PIL import Image
from prediction.test_predictor import squares

from segkit.checkpoint import save_checkpoint
from segkit.evaluation.folders import evaluate_folders
from segkit.prediction.predictor import Predictor

pytest.importorskip("onnx")
SIZES = [(48, 64), (37, 29), (70, 90)]
PIP_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny checkpoint and its ONNX export."""
    from segkit.exporters.onnx import export_onnx

    folder = tmp_path_factory.mktemp("model")
    save_checkpoint(tiny_checkpoint(zero_head_bias=True), folder / "best.pt")
    export_onnx(folder / "best.pt", folder / "model.onnx")
    return folder / "best.pt", folder / "model.onnx"


def write_images(folder: Path) -> tuple[Path, Path]:
    """``folder/images`` and ``folder/truth`` (index masks of the same names)."""
    (folder / "images").mkdir(parents=True)
    (folder / "truth").mkdir()
    rng = np.random.default_rng(0)
    for index, size in enumerate(SIZES):
        image, mask = squares(*size)
        image = (image + rng.integers(-20, 20, image.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / "images" / f"img{index}.png")
        Image.fromarray(mask).save(folder / "truth" / f"img{index}.png")
    return folder / "images", folder / "truth"


def test_the_onnx_path_imports_no_torch(model: tuple[Path, Path], tmp_path: Path) -> None:
    images, truth = write_images(tmp_path)
    script = (
        "import sys\n"
        "from segkit.cli import main\n"
        f"assert main(['predict', {str(model[1])!r}, {str(images)!r}, '--out', {str(tmp_path / 'out')!r}]) == 0\n"
        f"assert main(['evaluate', '--pred', {str(tmp_path / 'out')!r}, '--true', {str(truth)!r}]) == 0\n"
        f"assert main(['evaluate', {str(model[1])!r}, {str(tmp_path)!r}, '--masks', 'truth', '--tta', 'flip']) == 0\n"
        f"assert main(['inspect', {str(tmp_path)!r}, '--masks', 'truth']) == 0\n"
        "import segkit.serving.app\n"
        "import segkit\n"  # the Python API takes the same path
        f"masks = segkit.predict({str(model[1])!r}, {str(images)!r})\n"
        f"assert len(masks) == {len(SIZES)} and segkit.load({str(model[1])!r}).predict(next(iter(masks))).ndim == 2\n"
        f"assert segkit.evaluate({str(model[1])!r}, {str(tmp_path)!r}, masks='truth')['num_images'] == {len(SIZES)}\n"
        f"assert segkit.inspect({str(tmp_path)!r}, masks='truth')['num_pairs'] == {len(SIZES)}\n"
        "heavy = sorted(name for name in ('torch', 'torchvision', 'albumentations', 'timm', 'matplotlib') if name in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_health(port: int, server: subprocess.Popen, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"server exited: {server.communicate()[1][-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                return json.loads(response.read())
        except OSError:
            time.sleep(0.3)
    raise AssertionError("server did not answer /health")


@pytest.mark.slow
def test_pip_install_onnx_extra_without_torch(model: tuple[Path, Path], tmp_path: Path) -> None:
    """A fresh venv with only ``segkit[onnx]`` from PyPI runs predict, serve and evaluate through the real CLI."""
    source = tmp_path / "source"  # a clean copy: setuptools would otherwise reuse (stale) build/ in the repository
    shutil.copytree(REPO_ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python, segkit = environment / "bin" / "python", environment / "bin" / "segkit"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{source}[onnx]"],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
    )
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-3000:]
    assert subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode != 0
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def segkit_run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(segkit), *args], capture_output=True, text=True, env=env, timeout=300)

    assert segkit_run("--help").returncode == 0
    checkpoint, onnx_model = model
    images, truth = write_images(tmp_path / "data")

    predicted = segkit_run("predict", str(onnx_model), str(images), "--out", str(tmp_path / "out"), "--tta", "flip")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    expected = Predictor.from_checkpoint(checkpoint, device="cpu", tta="flip")
    for index, size in enumerate(SIZES):
        mask = np.asarray(Image.open(tmp_path / "out" / f"img{index}.png"))
        assert mask.shape == size
        assert (mask == expected.predict(images / f"img{index}.png")).mean() >= 0.999  # as PyTorch predicts

    evaluated = segkit_run(
        "evaluate", "--pred", str(tmp_path / "out"), "--true", str(truth), "--json", str(tmp_path / "m.json")
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "mIoU" in evaluated.stdout
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["confusion_matrix"] == evaluate_folders(tmp_path / "out", truth)["confusion_matrix"]
    scored = segkit_run(
        "evaluate",
        str(onnx_model),
        str(tmp_path / "data"),
        "--masks",
        "truth",
        "--tta",
        "flip",
        "--json",
        str(tmp_path / "model.json"),
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert json.loads((tmp_path / "model.json").read_text())["confusion_matrix"] == metrics["confusion_matrix"]

    port = free_port()
    server = subprocess.Popen(
        [str(segkit), "serve", str(onnx_model), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert wait_for_health(port, server)
        body = (images / "img0.png").read_bytes()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict", data=body, headers={"Content-Type": "image/png"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            served = np.asarray(Image.open(io.BytesIO(response.read())))
        assert served.shape == SIZES[0]
        assert (served == Predictor.from_checkpoint(onnx_model).predict(images / "img0.png")).mean() >= 0.999
    finally:
        server.terminate()
        server.wait(timeout=30)

    for argv in (
        ["train", str(tmp_path / "data")],
        ["predict", str(checkpoint), str(images), "--out", str(tmp_path / "x")],
    ):
        refused = segkit_run(*argv)
        assert refused.returncode == 2
        assert refused.stderr.strip().count("\n") == 0 and "pip install 'segkit[torch]'" in refused.stderr
