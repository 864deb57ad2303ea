"""Device names: checked without PyTorch, resolved to an available torch.device."""

from __future__ import annotations

import pytest
import torch

from segkit.device import check_device_name, resolve_device
from segkit.errors import SegkitError


def test_check_device_name() -> None:
    assert [check_device_name(name) for name in ("auto", "CPU", " cuda ", "cuda:1", "mps")] == [
        "auto",
        "cpu",
        "cuda",
        "cuda:1",
        "mps",
    ]
    for bad in ("toaster", "cuda:", "cuda:x", "cpu:0", ""):
        with pytest.raises(SegkitError, match="--device must be"):
            check_device_name(bad)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    with pytest.raises(SegkitError):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(SegkitError, match="CUDA is not available"):
            resolve_device("cuda:0")
