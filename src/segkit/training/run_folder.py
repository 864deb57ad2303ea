"""The run folder: where a run writes, one run at a time, and what a stop signal does.

- :func:`choose_run_folder` decides where a run writes: ``--out``, the folder of the
  ``last.pt`` being resumed (never the folder named inside the checkpoint), or the next
  free ``runs/trainN``; an existing run is never replaced without ``--overwrite``.
- :class:`RunLock` keeps a second ``segkit train`` out of a folder a live run writes to (a
  lock file holding the host and pid; a lock whose process is gone is stale and taken over).
- :class:`StopSignals` turns SIGTERM/SIGINT (a preemptible machine going away, Ctrl-C) into
  a request the trainer honours at the next step boundary, after writing ``last.pt``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from segkit.errors import SegkitError

logger = logging.getLogger(__name__)

LOCK_NAME = ".segkit-train.lock"


def choose_run_folder(out: str | None, resume: str | None, overwrite: bool, is_main: bool = True) -> Path:
    """The run folder of a run (created later, by the first file written)."""
    if resume:
        return Path(out) if out else Path(resume).parent
    if out:
        folder = Path(out)
        if is_main and (folder / "last.pt").exists() and not overwrite:
            raise SegkitError(
                folder, f"already holds a run; resume it with --resume {folder / 'last.pt'}, or pass --overwrite"
            )
        if folder.exists() and not folder.is_dir():
            raise SegkitError(folder, "exists and is not a folder")
        return folder
    folder, suffix = Path("runs") / "train", 2
    while folder.exists():
        folder, suffix = Path("runs") / f"train{suffix}", suffix + 1
    return folder


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class RunLock:
    """An exclusive claim on a run folder by this process (``with RunLock(folder): ...``).

    The lock file holds ``host pid``. Another live process on this host holding it makes
    :meth:`acquire` fail with a one-line error; a lock left by a dead process (or a
    crash) is stale and replaced. Locks of other hosts (a shared file system) are
    respected as long as they exist.
    """

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.held = False
        self.created_folder = False

    def acquire(self) -> None:
        self.created_folder = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._check_stale()
                continue
            with os.fdopen(descriptor, "w") as handle:
                handle.write(me)
            self.held = True
            return
        raise SegkitError(self.path.parent, "could not take the run lock")

    def _check_stale(self) -> None:
        try:
            host, _, pid = self.path.read_text().strip().partition(" ")
        except OSError:
            return
        if host == socket.gethostname() and pid.isdigit() and not _process_alive(int(pid)):
            logger.info("%s: removing the stale lock of process %s (no longer running)", self.path.parent, pid)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        raise SegkitError(
            self.path.parent,
            f"another segkit train (process {pid} on {host}) is writing to this "
            f"folder; wait for it, or use another --out",
        )

    def release(self) -> None:
        """Remove the lock (and the run folder, if the lock created it and nothing else was written)."""
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.held = False
            if self.created_folder and not any(self.path.parent.iterdir()):
                self.path.parent.rmdir()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class StopSignals:
    """While active, SIGTERM and SIGINT set :attr:`received` instead of killing the process.

    A second signal of the same kind restores the default behaviour (so a second Ctrl-C
    stops at once). Only the main thread can install handlers; elsewhere this does nothing.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, number: int, _frame: FrameType | None) -> None:
        self.received = signal.Signals(number).name
        logger.warning("%s received: stopping at the next step and writing last.pt", self.received)
        signal.signal(number, self._previous.get(number, signal.SIG_DFL))

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()
