"""The run's clock: seconds spent (across resumed sessions), when training must stop, where the schedule stands.

One owner for the time budget's arithmetic, so that the trainer, the race and the epoch
estimate agree: the budget less a reserve for the final validations is the *time limit*;
the seconds of recipes that lost the race are outside the winner's schedule.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from segkit.training.validation import VALIDATION_TILING, spread

logger = logging.getLogger(__name__)

VALIDATION_SHARE = 0.15  # validation during training takes at most this share of the time (spaced out) ...
VALIDATION_CAP = 0.05  # ... one validation at most this share of the budget (else it scores an evenly spread subset)
FINAL_RESERVE = 1.25  # the final validations (EMA and raw weights) are reserved this many times their expected time
LAST_EPOCH_SHARE = 0.25  # no epoch starts with less time left than this share of the one before
MIX_RATIO = 4.0  # a validation image with this many times the image pixels per network pixel is timed too
END_RESERVE = 3.0  # seconds kept free at the end of a budget for the last checkpoint and metrics.json


@dataclass
class RunClock:
    """Time spent and left in one run.

    Attributes:
        time_budget: the run's budget in seconds (``None``: none).
        elapsed_before: seconds spent by earlier sessions of a resumed run.
        loser_seconds: seconds spent on recipes that lost the race (planned until it is over).
        last_validation_seconds: the latest validation's duration (per set of weights scored).
        save_seconds: writing ``last.pt`` once.
        final_validations: sets of weights the last validation scores (2: raw and EMA).
    """

    time_budget: float | None
    elapsed_before: float = 0.0
    loser_seconds: float = 0.0
    last_validation_seconds: float = 0.0
    save_seconds: float = 0.0
    final_validations: int = 1
    started: float = field(default_factory=time.monotonic)

    def state(self) -> dict[str, float]:
        """The times a ``last.pt`` saves (its ``resume["progress"]``), read back by :meth:`restore`."""
        return {
            "elapsed": self.elapsed,
            "last_validation_seconds": self.last_validation_seconds,
            "loser_seconds": self.loser_seconds,
        }

    def restore(self, progress: dict[str, Any]) -> None:
        """Go on from the times a ``last.pt`` saved (its ``resume["progress"]``)."""
        self.elapsed_before = float(progress["elapsed"])
        self.last_validation_seconds = float(progress["last_validation_seconds"])
        self.loser_seconds = float(progress.get("loser_seconds", 0.0))

    @property
    def elapsed(self) -> float:
        """Seconds of this run so far (earlier sessions of a resumed run included)."""
        return self.elapsed_before + time.monotonic() - self.started

    def time_limit(self) -> float:
        """When training must stop so that the final validations and checkpoints fit the budget."""
        reserve = FINAL_RESERVE * self.final_validations * self.last_validation_seconds + END_RESERVE
        return float(self.time_budget or math.inf) - reserve

    def no_room_after(self, epoch_seconds: float) -> bool:
        """Whether, after an epoch of ``epoch_seconds``, too little is left for a quarter of another.

        That epoch is the last: it gets the final validation.
        """
        return bool(self.time_budget) and self.elapsed + LAST_EPOCH_SHARE * epoch_seconds > self.time_limit()

    def out_of_time(self) -> bool:
        return bool(self.time_budget) and self.elapsed >= self.time_limit()

    def progress_at(self, own_seconds: float) -> float:
        """Schedule position of a recipe that has had ``own_seconds`` of this run (the race's losers excluded)."""
        return own_seconds / max(self.time_limit() - self.loser_seconds, 1e-9)

    def progress(self) -> float:
        """The schedule position of the recipe training now."""
        return self.progress_at(self.elapsed - self.loser_seconds)

    def expected_epochs(self, epoch_images: int, images_per_second: float, val_every: int, before: float = 0.0) -> int:
        """Epochs of ``epoch_images`` each the rest of the budget allows at the measured speed, validations and
        checkpoints included, once ``before`` more seconds are spent (``segkit plan``: on the race it plans)."""
        return expected_epochs(
            epoch_images,
            images_per_second,
            self.last_validation_seconds + self.save_seconds,
            self.time_limit() - self.elapsed - before,
            val_every,
        )

    def epochs_estimate(self, history: list[dict[str, Any]], planned: int) -> int:
        """Epochs expected in the budget: ``planned`` before the first epoch, then at the pace so far."""
        done = len(history)
        if not done:
            return planned
        first = history[0]
        per_epoch = (self.elapsed - first.get("elapsed", self.elapsed) + first["seconds"]) / done
        return done + max(0, int((self.time_limit() - self.elapsed) / max(per_epoch, 1e-9)))


def validation_sizes(source: Any, indices: list[int]) -> dict[int, tuple[int, int]]:
    """``(height, width)`` of each validation image at its original size (decoded and kept already)."""
    sizes = {}
    for index in indices:
        shape = source.load(index).image.shape
        sizes[index] = (int(shape[0]), int(shape[1]))
    return sizes


def validation_pixels(sizes: dict[int, tuple[int, int]], preprocess: Any) -> dict[int, tuple[int, int]]:
    """``(network pixels, image pixels)`` of each image of ``sizes``: what its network computes to validate it
    with ``preprocess`` (tiled as validation tiles), and the image's own."""
    return {
        index: (VALIDATION_TILING.network_pixels(height, width, preprocess), height * width)
        for index, (height, width) in sizes.items()
    }


@dataclass(frozen=True)
class ValidationCost:
    """Seconds to validate an image: the pixels its network computes times ``per_network_pixel``, plus the
    image's own pixels times ``per_image_pixel`` (resizing it, mapping the probabilities back to it, counting
    them). The second term is small until letterboxed images get large: a 4000 x 5632 photo at 256 x 256 took
    4.7x a 300 x 400 one (``benchmarks/validation_cost.py``).
    """

    per_network_pixel: float
    per_image_pixel: float = 0.0

    def seconds(self, pixels: tuple[int, int]) -> float:
        """Expected seconds for ``(network pixels, image pixels)``."""
        network, image = pixels
        return self.per_network_pixel * network + self.per_image_pixel * image

    @classmethod
    def measured(cls, pixels: tuple[int, int], seconds: float, per_image_pixel: float = 0.0) -> ValidationCost:
        """The network rate that explains ``seconds`` for ``pixels``, the image rate given (at most 90 % of the time)."""
        network, image = pixels
        rest = max(seconds - per_image_pixel * image, 0.1 * seconds)
        return cls(rest / max(network, 1), (seconds - rest) / image if image else 0.0)

    @classmethod
    def fit(
        cls, first: tuple[tuple[int, int], float], second: tuple[tuple[int, int], float] | None = None
    ) -> ValidationCost:
        """From one timed image ``((network, image pixels), seconds)``: all per network pixel; from two whose
        pixels mix differently: both rates (when they come out non-negative; else the first's alone)."""
        ((n1, i1), t1), ((n2, i2), t2) = first, second or first
        determinant = n1 * i2 - n2 * i1
        if determinant:
            per_network = (t1 * i2 - t2 * i1) / determinant
            per_image = (n1 * t2 - n2 * t1) / determinant
            if per_network > 0 and per_image >= 0:
                return cls(per_network, per_image)
        return cls.measured((n1, i1), t1)


def image_to_time_too(pixels: dict[int, tuple[int, int]], first: int) -> int | None:
    """The validation image worth timing beside ``first`` to tell :class:`ValidationCost`'s two rates apart: of the
    images with the most and the fewest image pixels, the one whose image pixels per network pixel differ most
    from ``first``'s, when by :data:`MIX_RATIO` or more at no more than twice its network pixels (cheap to time);
    ``None`` when no image mixes otherwise."""

    def mix(image: int) -> float:
        network, own = pixels[image]
        return own / max(network, 1)

    def apart(image: int) -> float:
        return max(mix(image), mix(first)) / max(min(mix(image), mix(first)), 1e-12)

    ends = (max(pixels, key=lambda image: pixels[image][1]), min(pixels, key=lambda image: pixels[image][1]))
    cheap = [image for image in ends if pixels[image][0] <= 2 * pixels[first][0]]
    best = max(cheap, key=apart, default=None)
    return best if best is not None and apart(best) >= MIX_RATIO else None


def expected_epochs(
    images: int, images_per_second: float, validation_seconds: float, seconds_left: float, val_every: int = 0
) -> int:
    """Epochs that ``seconds_left`` of training allow at the measured speed, validations included.

    As the trainer runs: the first epoch is validated, then every ``val_every`` epochs (``0``:
    spaced so that validation takes at most :data:`VALIDATION_SHARE` of the time).
    """
    epoch_seconds = images / max(images_per_second, 1e-9)
    share = VALIDATION_SHARE / (1 - VALIDATION_SHARE)
    val_every = val_every or max(1, math.ceil(validation_seconds / (share * epoch_seconds)))
    left = seconds_left - validation_seconds
    return max(1, round(left / (epoch_seconds + validation_seconds / val_every)))


def subset_within(indices: list[int], seconds: dict[int, float], cap: float) -> list[int]:
    """The most images, evenly spread over ``indices``, whose validation (``seconds`` each) is expected to fit
    ``cap`` seconds (at least one)."""
    for count in range(len(indices), 0, -1):
        chosen = spread(indices, count)
        if count == 1 or sum(seconds[i] for i in chosen) <= cap:
            return chosen
    return []


def size_validation(
    indices: list[int], pixels: dict[int, tuple[int, int]], cost: ValidationCost, budget: float
) -> tuple[list[int], float]:
    """The validation images to score (evenly spread) within :data:`VALIDATION_CAP` of ``budget``, and their seconds
    (``pixels``: :func:`validation_pixels` of the recipe that goes on)."""
    seconds = {index: cost.seconds(pixels[index]) for index in indices}
    scored = subset_within(indices, seconds, VALIDATION_CAP * budget)
    if len(scored) < len(indices):
        logger.info(
            "validation scores %d of the %d validation images (evenly spread, each at its original size): "
            "all of them would take %.0fs, more than %.0f%% of the budget",
            len(scored),
            len(indices),
            sum(seconds.values()),
            100 * VALIDATION_CAP,
        )
    return scored, sum(seconds[index] for index in scored)
