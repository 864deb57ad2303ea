"""User-facing errors: one line that names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class SegkitError(Exception):
    """An error caused by the user's input, reported as ``FILE: problem``.

    The command line prints it on one line and exits with code 2; nothing
    already written is touched.
    """

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}" if self.path else self.problem
