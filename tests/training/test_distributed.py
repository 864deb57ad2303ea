"""``torchrun -m segkit train``: two CPU processes (Gloo) against one process, same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.conftest import TINY_MODEL


def train_command(data: Path, out: Path) -> list[str]:
    return [
        "train",
        str(data),
        "--out",
        str(out),
        "--model",
        "unet",
        "--model-kwargs",
        ",".join(f"{k}={v}" for k, v in TINY_MODEL.items()),
        "--img-size",
        "32",
        "--batch-size",
        "4",
        "--epochs",
        "2",
        "--lr",
        "3e-3",
        "--device",
        "cpu",
        "--seed",
        "0",
        "--val-split",
        "0.25",
        "--augment",
        "none",
        "--precision",
        "32",
        "--val-every",
        "1",
    ]


def run_command(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(shapes_dataset: Path, tmp_path: Path) -> None:
    single = run_command(
        [sys.executable, "-m", "segkit", *train_command(shapes_dataset, tmp_path / "single")], tmp_path
    )
    assert single.returncode == 0, single.stderr
    ddp = run_command(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "segkit",
            *train_command(shapes_dataset, tmp_path / "ddp"),
        ],
        tmp_path,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single_history = (tmp_path / "single" / "history.csv").read_text().splitlines()
    ddp_history = (tmp_path / "ddp" / "history.csv").read_text().splitlines()
    assert len(single_history) == len(ddp_history) == 3  # header + 2 epochs, written once (rank 0 only)
    single_metrics = json.loads((tmp_path / "single" / "metrics.json").read_text())
    ddp_metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    # Same global batch and data; only the order of samples within the epoch and BatchNorm's
    # per-process statistics differ, so the losses agree within a tolerance.
    single_loss = float(single_history[1].split(",")[1])
    ddp_loss = float(ddp_history[1].split(",")[1])
    assert ddp_loss == pytest.approx(single_loss, rel=0.1)
    assert ddp_metrics["num_images"] == single_metrics["num_images"]  # every validation image counted once
    assert sum(map(sum, ddp_metrics["confusion_matrix"])) == sum(map(sum, single_metrics["confusion_matrix"]))
    epoch_lines = [line for line in ddp.stderr.splitlines() if line.startswith("epoch 2 of 2")]
    assert len(epoch_lines) == 1  # only rank 0 logs
