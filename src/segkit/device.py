"""Choosing where a model runs from ``auto|cpu|cuda[:N]|mps``.

:func:`check_device_name` validates the name without importing PyTorch (the
ONNX Runtime install has none); :func:`resolve_device` turns it into a
``torch.device`` that is available on this machine.
"""

from __future__ import annotations

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
