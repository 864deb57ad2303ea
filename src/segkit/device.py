"""Choosing where a model runs from ``auto|cpu|cuda[:N]|mps``.

:func:`check_device_name` validates the name without importing PyTorch (the
ONNX Runtime install has none); :func:`resolve_device` turns it into a
``torch.device`` that is available on this machine.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from segkit.errors import SegkitError

if TYPE_CHECKING:
    import torch

DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device_name(name: object) -> str:
    """``name`` lower-cased when it is ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Raises:
        SegkitError: any other name.
    """
    text = str(name).strip().lower()
    if not DEVICE_PATTERN.fullmatch(text):
        raise SegkitError(None, f"--device must be auto, cpu, cuda[:N] or mps, not {name!r}")
    return text


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; an unavailable device is an error."""
    import torch

    if isinstance(name, torch.device):
        return name
    name = check_device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SegkitError(None, f"--device {name}: CUDA is not available on this machine")
    if name == "mps" and not torch.backends.mps.is_available():
        raise SegkitError(None, "--device mps: Apple MPS is not available on this machine")
    return torch.device(name)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for tensors on ``device``: a GPU's free memory, or the RAM the system can still give
    (Linux ``MemAvailable``, and no more than the container's cgroup limit leaves); ``None`` when unknown."""
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    sizes = [value for value in (_meminfo_available(), _cgroup_left()) if value is not None]
    return min(sizes) if sizes else None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return None


def _cgroup_left() -> int | None:
    """What a container's memory limit leaves (cgroup v2, then v1), or ``None`` without a limit."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            with open(limit_file, encoding="ascii") as handle:
                limit = handle.read().strip()
            with open(usage_file, encoding="ascii") as handle:
                usage = int(handle.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:  # "max" or a huge number: no limit
            return max(0, int(limit) - usage)
    return None
