"""Choosing the torch device from ``auto|cpu|cuda|mps``."""

from __future__ import annotations

import torch

from segkit.errors import SegkitError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; an unavailable device is an error."""
    if isinstance(name, torch.device):
        return name
    name = str(name).lower()
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
    try:
        return torch.device(name)
    except RuntimeError:
        raise SegkitError(None, f"--device must be auto, cpu, cuda[:N] or mps, not {name!r}") from None
