"""Crash safety: SIGKILL or SIGTERM a training process mid-run, resume it, and compare with an uninterrupted run."""

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
from training.test_distributed import run_command, train_command


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_stopped_mid_run_then_resumed_matches_the_uninterrupted_run(
    shapes_dataset: Path, tmp_path: Path, stop: signal.Signals
) -> None:
    """A killed run (no chance to save) or a preempted one (SIGTERM: last.pt at the next step) resumes exactly."""
    command = [sys.executable, "-m", "segkit", *train_command(shapes_dataset, tmp_path / "crashed")]
    command[command.index("--epochs") + 1] = "6"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    history = tmp_path / "crashed" / "history.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 3:  # two epochs done
            break
        time.sleep(0.02)
    assert process.poll() is None, "training finished before it could be stopped"
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=120)
    stopped_at = load_checkpoint(tmp_path / "crashed" / "last.pt").card.training.epoch
    assert 1 <= stopped_at < 6  # last.pt is written at validations, at least every 30 s, and on SIGTERM
    hidden = [p.name for p in (tmp_path / "crashed").iterdir() if p.name.startswith(".")]
    if stop == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
        assert hidden == [LOCK_NAME]  # no temporary files; the killed run's lock is stale and taken over on resume
    else:
        assert process.returncode == 128 + signal.SIGTERM and hidden == []
        assert (
            stderr.strip()
            .splitlines()[-1]
            .endswith(
                f"stopped by SIGTERM after writing last.pt; continue with segkit train --resume {tmp_path / 'crashed' / 'last.pt'}"
            )
        )
    load_checkpoint(tmp_path / "crashed" / "best.pt")  # a valid best.pt survived

    resumed = run_command(
        [sys.executable, "-m", "segkit", "train", "--resume", str(tmp_path / "crashed" / "last.pt")], tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    full_command = command[3:]
    full_command[full_command.index("--out") + 1] = str(tmp_path / "full")
    full = run_command([sys.executable, "-m", "segkit", *full_command], tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]

    crashed_state = load_checkpoint(tmp_path / "crashed" / "last.pt").card.training
    full_state = load_checkpoint(tmp_path / "full" / "last.pt").card.training
    assert crashed_state.epoch == full_state.epoch == 6
    assert len(crashed_state.history) == 6
    crashed_metrics = json.loads((tmp_path / "crashed" / "metrics.json").read_text())
    full_metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert crashed_metrics["mIoU"] == pytest.approx(full_metrics["mIoU"], abs=1e-4)
    assert crashed_state.history[-1]["train_loss"] == pytest.approx(full_state.history[-1]["train_loss"], rel=1e-4)
