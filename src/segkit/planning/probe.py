"""A few seconds of measurement on the device: how fast a configuration trains, and in what precision.

The planner cannot know from a table how fast a model trains on *this* machine (2 CPU
cores, an H200, bf16 support or not), so it times a few real training steps — forward,
loss, backward, AdamW — on random inputs of the candidate size and keeps the images per
second.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

import torch

from segkit.checkpoint import ModelSpec

# SEGKIT_CPU_BF16=0: treat the CPU as one without native bfloat16.
CPU_BF16_VARIABLE = "SEGKIT_CPU_BF16"
# Timed steps after one warm-up step; the fastest is kept (as timeit does: other work on the machine only ever
# slows a step down, and the precision choice compares two measurements, so one slow step must not decide it).
PROBE_STEPS = 3


@dataclass(frozen=True)
class Measurement:
    """Training speed of one configuration (images of ``size`` per second)."""

    size: tuple[int, int]
    batch_size: int
    precision: str
    images_per_second: float
    peak_memory_bytes: int = 0


def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 autocast runs natively: AVX-512 BF16/AMX CPUs, CUDA GPUs from Ampere on.

    ``SEGKIT_CPU_BF16=0`` in the environment makes segkit treat the CPU as one without native
    bfloat16 (as most laptops and older servers are); benchmarks use it, together with oneDNN's
    ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI``, to run the profile of such a CPU.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        if os.environ.get(CPU_BF16_VARIABLE, "").strip() == "0":
            return False
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def measure_training(
    spec: ModelSpec,
    size: tuple[int, int],
    batch_size: int,
    precision: str,
    device: torch.device,
    steps: int = PROBE_STEPS,
) -> Measurement:
    """Images per second of training steps of ``spec`` on random ``batch_size x 3 x size`` inputs.

    Raises:
        torch.OutOfMemoryError: the configuration does not fit the device.
    """
    torch.manual_seed(0)
    model = spec.build().to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch_size, spec.in_channels, *size, device=device).contiguous(
        memory_format=torch.channels_last
    )
    dtype = {"bf16": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(steps + 1):
        _synchronize(device)
        start = time.perf_counter()
        with autocast:
            output = model(images)
            loss = sum(item.float().mean() for item in output) if isinstance(output, list) else output.float().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _synchronize(device)
        if step:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return Measurement(size, batch_size, precision, batch_size / min(times), peak)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
