"""Checkpoints load with weights_only=True only: a pickle that would run code is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segkit.checkpoint import load_checkpoint
from segkit.cli import main
from segkit.errors import SegkitError


class _CreatesFile:
    """Unpickling this calls os.system-like code: it would create a file."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def _malicious_checkpoint(path: Path, target: Path) -> None:
    payload = {"format": "segkit-checkpoint", "version": 1, "exploit": _CreatesFile(target)}
    torch.save(payload, path)


def test_code_running_pickle_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"
    _malicious_checkpoint(tmp_path / "evil.pt", target)
    with pytest.raises(SegkitError, match="evil.pt: refused to load"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not target.exists()
    # The same file through plain pickle really would run the code: the test is not vacuous.
    with open(tmp_path / "evil.pt", "rb") as handle:
        torch.load(handle, weights_only=False)
    assert target.exists()


@pytest.mark.parametrize("command", [["predict", "IMG", "--out", "OUT"], ["evaluate", "DATA"], ["serve"]])
def test_cli_refuses_malicious_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    target = tmp_path / "pwned.txt"
    _malicious_checkpoint(tmp_path / "evil.pt", target)
    image = tmp_path / "image.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "data" / "images" / "a.png")
    Image.new("L", (8, 8)).save(tmp_path / "data" / "masks" / "a.png")
    replacements = {"IMG": str(image), "OUT": str(tmp_path / "out"), "DATA": str(tmp_path / "data")}
    argv = [command[0], str(tmp_path / "evil.pt"), *(replacements.get(a, a) for a in command[1:])]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert "refused to load" in error and error.count("\n") == 0
    assert not target.exists() and not (tmp_path / "out").exists()


def test_truncated_and_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("hello")
    torch.save({"weights": torch.ones(1)}, tmp_path / "plain.pt")
    for name, message in [
        ("empty.pt", "not a readable checkpoint"),
        ("text.pt", "not a readable checkpoint"),
        ("plain.pt", "not a segkit checkpoint"),
        ("missing.pt", "not found"),
    ]:
        with pytest.raises(SegkitError, match=message):
            load_checkpoint(tmp_path / name)
