"""Crash safety: SIGKILL a training process mid-epoch, resume it, and compare with an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segkit.checkpoint import load_checkpoint
from segkit.training.run_folder import LOCK_NAME
from training.test_distributed import _run, _train_command


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(shapes_dataset: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "segkit", *_train_command(shapes_dataset, tmp_path / "crashed")]
    command[command.index("--epochs") + 1] = "6"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = tmp_path / "crashed" / "history.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 3:  # two epochs done
            break
        time.sleep(0.02)
    assert process.poll() is None, "training finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = load_checkpoint(tmp_path / "crashed" / "last.pt").card.training.epoch
    assert 1 <= killed_at < 6  # last.pt is written at validations and at least every 30 s
    hidden = [p.name for p in (tmp_path / "crashed").iterdir() if p.name.startswith(".")]
    assert hidden == [LOCK_NAME]  # no temporary files; the killed run's lock is stale and taken over on resume
    load_checkpoint(tmp_path / "crashed" / "best.pt")  # a valid best.pt survived the kill

    resumed = _run([sys.executable, "-m", "segkit", "train", "--resume", str(tmp_path / "crashed" / "last.pt")], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    full_command = command[3:]
    full_command[full_command.index("--out") + 1] = str(tmp_path / "full")
    full = _run([sys.executable, "-m", "segkit", *full_command], tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]

    crashed_state = load_checkpoint(tmp_path / "crashed" / "last.pt").card.training
    full_state = load_checkpoint(tmp_path / "full" / "last.pt").card.training
    assert crashed_state.epoch == full_state.epoch == 6
    assert len(crashed_state.history) == 6
    load_checkpoint(tmp_path / "crashed" / "best.pt")
    crashed_metrics = json.loads((tmp_path / "crashed" / "metrics.json").read_text())
    full_metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert crashed_metrics["mIoU"] == pytest.approx(full_metrics["mIoU"], abs=1e-4)
    assert crashed_state.history[-1]["train_loss"] == pytest.approx(full_state.history[-1]["train_loss"], rel=1e-4)
