"""Learning-rate schedules driven by training progress (a fraction in [0, 1]).

Progress is steps done / total steps for a fixed number of epochs, or elapsed time
/ budget for ``--time-budget``: the same cosine or poly curve then fits whatever
number of steps the budget allows. torch's schedulers need the step count up
front, which a time budget does not give, hence this small function.
"""

from __future__ import annotations

import math


def lr_factor(kind: str, progress: float, warmup: float = 0.0, power: float = 0.9) -> float:
    """Multiplier of the base learning rate at ``progress`` (warm-up fraction ``warmup``)."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return max(progress / warmup, 1e-3)
    if kind == "constant":
        return 1.0
    rest = (progress - warmup) / max(1.0 - warmup, 1e-8)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * rest))
    if kind == "poly":
        return (1.0 - rest) ** power
    raise ValueError(f"unknown schedule {kind!r}")
