"""``segkit.cli.main``: one sub-command's parser is built, the top-level help still lists them all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from segkit.cli import COMMANDS, build_parser, main
from segkit.data.io import write_mask


def test_evaluating_folders_imports_no_training_options(tmp_path: Path) -> None:
    mask = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    write_mask(tmp_path / "pred" / "a.png", mask)
    write_mask(tmp_path / "true" / "a.png", mask)
    script = (
        "import sys\n"
        "from segkit.cli import main\n"
        f"assert main(['evaluate', '--pred', {str(tmp_path / 'pred')!r}, '--true', {str(tmp_path / 'true')!r}]) == 0\n"
        "print(sorted(name for name in ('segkit.config', 'cv2', 'torch') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["-v", "--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in COMMANDS)


def test_unknown_command_lists_the_choices(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["evalute", "--pred", "p"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'evalute'" in capsys.readouterr().err


def test_one_command_parser_matches_the_full_one() -> None:
    argv = ["-v", "evaluate", "--pred", "p", "--true", "t", "--num-classes", "3"]
    alone = vars(build_parser("evaluate").parse_args(argv))
    full = vars(build_parser().parse_args(argv))
    assert set(alone.pop("commands")) == {"evaluate"}
    assert set(full.pop("commands")) == set(COMMANDS)
    assert alone == full


def test_a_bad_number_is_a_usage_error_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(tmp_path), "--epochs", "abc"])
    assert exit_info.value.code == 2
    assert "--epochs: invalid value 'abc'" in capsys.readouterr().err
