"""Writing files safely: atomic replacement, staging folders, output paths that never clobber inputs, JSON-safe values.

The layer under everything that writes: a failed write (full disk, read-only folder, a
folder in the way) becomes one :class:`~segkit.errors.SegkitError` line naming the file,
and what was there before is untouched.
"""

from __future__ import annotations

import errno
import glob
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from segkit.errors import SegkitError


def check_output_path(output: str | Path, inputs: Iterable[str | Path], option: str = "output") -> None:
    """Refuse an output that is an input, contains one, or sits inside an input folder.

    Writing there would overwrite or (with ``--overwrite``) delete what is being read.
    Paths are compared after resolving symbolic links.

    Raises:
        SegkitError: naming the output and the input it would clobber.
    """
    target = Path(output).resolve()
    for item in inputs:
        source = Path(item).resolve()
        if target == source:
            raise SegkitError(output, f"{option} is an input ({item}); choose another {option}")
        if source.is_relative_to(target):
            raise SegkitError(output, f"{option} contains the input {item}; choose another {option}")
        if source.is_dir() and target.is_relative_to(source):
            raise SegkitError(output, f"{option} is inside the input folder {item}; choose another {option}")


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Report a failed write (full disk, read-only folder, a folder in the way) as one SegkitError naming ``path``."""
    try:
        yield
    except SegkitError:
        raise
    except IsADirectoryError:
        raise SegkitError(path, "is a folder; give a file name") from None
    except OSError as error:
        reason = "the disk is full" if error.errno == errno.ENOSPC else error.strerror or str(error)
        raise SegkitError(path, f"cannot write ({reason})") from None


def atomic_write(path: str | Path, write: Callable[[Path], Any], durable: bool = False) -> None:
    """Write a file through ``write(temp_path)`` then rename it into place.

    ``durable`` (checkpoints): the bytes are flushed to disk before the rename and the rename
    itself after it, so a power cut leaves the old file or the new one, never an empty one.
    Other files skip the two ``fsync`` calls: a folder of masks would pay them per file.

    Raises:
        SegkitError: ``path`` is a folder, or the disk refused the write; the old file is untouched.
    """
    path = Path(path)
    if path.is_dir():
        raise SegkitError(path, "is a folder; give a file name")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
        os.close(handle)
        try:
            write(Path(temp))
            os.chmod(temp, 0o666 & ~_umask())  # mkstemp creates files private to the user
            if durable:
                _sync(Path(temp))  # the bytes reach the disk before the name points at them
            os.replace(temp, path)
            if durable:
                _sync(path.parent)  # and the rename itself survives a power cut
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise


def _sync(path: Path) -> None:
    """``fsync`` a file or folder (a folder's entries: a rename); where folders cannot be synced, nothing."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:  # some file systems refuse fsync on folders
        pass
    finally:
        os.close(handle)


def make_staging_dir(out: Path, prefix: str) -> Path:
    """A temporary folder beside ``out`` (same file system, so it can be renamed into place).

    Its name holds this process's id (``<prefix><pid>-<random>``). Folders of the same
    prefix left by a process that no longer runs (killed, power cut) are removed first.

    Raises:
        SegkitError: the parent folder cannot be written.
    """
    with writing(out.parent):
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(out.parent, prefix)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f"{prefix}{os.getpid()}-"))
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700); it may become `out` itself
    return staging


def remove_stale_staging(parent: Path, prefix: str) -> list[Path]:
    """Delete ``parent/<prefix><pid>-*`` folders whose process has ended; returns what was removed.

    A folder is stale when no process has its pid, or the process holding that pid
    now started after the folder was last written (the pid was reused).
    """
    removed = []
    pattern = re.compile(re.escape(prefix) + r"(\d+)-")
    for path in parent.glob(glob.escape(prefix) + "*"):
        match = pattern.match(path.name)
        if match is None or not path.is_dir() or path.is_symlink():
            continue
        try:
            written = path.stat().st_mtime
        except OSError:
            continue
        if not _process_alive_since(int(match.group(1)), written):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _process_alive_since(pid: int, timestamp: float) -> bool:
    """Whether process ``pid`` runs and could have written at ``timestamp`` (it started before it)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    except OSError:
        return True  # cannot tell: keep the folder
    started = _process_start_time(pid)
    return started is None or started <= timestamp + 1.0  # a second of slack for clock rounding


def _process_start_time(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch), from Linux's /proc; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        ticks = int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22, starttime, in clock ticks after boot
        return int(boot.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def to_json_safe(value: Any) -> Any:
    """A copy of ``value`` that ``json.dumps(..., allow_nan=False)`` accepts.

    NaN and infinities become ``None`` (JSON ``null``); tensors, numpy arrays and
    numpy scalars become Python lists and numbers; mapping keys become strings.
    """
    if isinstance(value, Mapping):
        return {str(key): to_json_safe(item) for key, item in value.items()}
    if isinstance(value, np.ndarray) or type(value).__module__.startswith("torch"):
        return to_json_safe(value.tolist())
    if isinstance(value, (list, tuple)):
        return [to_json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def check_out_folder(out: str | Path, overwrite: bool) -> None:
    """Refuse a non-empty folder ``out`` unless ``overwrite`` (checked before any work is done).

    Raises:
        SegkitError: naming ``out``.
    """
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SegkitError(out, "exists and is not empty; use --overwrite")


@contextmanager
def built_into(out: Path, prefix: str) -> Iterator[Path]:
    """A hidden folder beside ``out`` (named ``prefix…``) to build a folder in, renamed to ``out`` when the block
    succeeds; an existing ``out`` is replaced only then.

    On any error it is removed (``out`` untouched), and an error about a file being built names
    it where it was going.
    """
    temp = make_staging_dir(out, prefix=prefix)
    try:
        yield temp
        with writing(out):
            _move_into_place(temp, out)
    except SegkitError as error:
        shutil.rmtree(temp, ignore_errors=True)
        raise _as_output_path(error, temp, out) from None
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _as_output_path(error: SegkitError, temp: Path, out: Path) -> SegkitError:
    """An error about a file being built names it where it was going (``OUT/masks/x.png``), not in the hidden folder."""
    if error.path is None or not Path(error.path).is_relative_to(temp):
        return error
    return SegkitError(out / Path(error.path).relative_to(temp), error.problem)


def _move_into_place(temp: Path, out: Path) -> None:
    """Rename the finished folder to ``out``, replacing an existing one only on success."""
    if not out.exists():
        os.replace(temp, out)
        return
    old = temp.with_name(temp.name + "-old")
    os.replace(out, old)
    try:
        os.replace(temp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
