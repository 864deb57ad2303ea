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


class OptionError(SegkitError):
    """An option value, or a combination of options, that a command does not accept.

    Raised by the library functions behind the commands (and so by the Python API); the
    command line shows it with the command's usage, as it shows an argument it cannot parse.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(None, problem)
