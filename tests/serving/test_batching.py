"""Micro-batches, the decoded-pixel budget and memory release, without a model or a server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from segkit.serving.batching import MicroBatcher, PixelBudget, release_freed_memory


class RecordingModel:
    """``predict_batch`` stand-in: mask = first channel + 1; records batch sizes; can fail on a marked image."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[int] = []
        self.delay_s = delay_s
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.batches.append(len(images))
        try:
            time.sleep(self.delay_s)
            if any(image[0, 0, 1] == 99 for image in images):
                raise ValueError("poisoned image")
            return [image[..., 0] + 1 for image in images]
        finally:
            with self.lock:
                self.active -= 1


def image(value: int, poisoned: bool = False) -> np.ndarray:
    array = np.full((4, 5, 3), value, np.uint8)
    array[0, 0, 1] = 99 if poisoned else 0
    return array


def test_images_arriving_together_share_batches_and_get_their_own_masks() -> None:
    model = RecordingModel(delay_s=0.05)
    batcher = MicroBatcher(model, max_batch=4, wait_s=0.2)
    with ThreadPoolExecutor(10) as pool:
        futures = list(pool.map(lambda value: batcher.submit(image(value)), range(10)))
        results = [future.result(timeout=10) for future in futures]
    batcher.close()
    for value, (mask, elapsed_ms) in enumerate(results):
        assert (mask == value + 1).all() and elapsed_ms >= 50
    assert sum(model.batches) == 10 and max(model.batches) == 4 and len(model.batches) <= 4
    assert model.peak == 1  # one model call at a time


def test_the_wait_window_and_batch_size_one() -> None:
    model = RecordingModel()
    waiting = MicroBatcher(model, max_batch=8, wait_s=0.15)
    start = time.monotonic()
    waiting.submit(image(1)).result(timeout=5)
    assert 0.14 <= time.monotonic() - start < 2  # waited for companions that did not come
    single = MicroBatcher(model, max_batch=1, wait_s=5.0)
    start = time.monotonic()
    single.submit(image(2)).result(timeout=5)
    assert time.monotonic() - start < 1  # a batch of one never waits
    waiting.close()
    single.close()


def test_a_failing_image_fails_alone() -> None:
    model = RecordingModel(delay_s=0.05)
    batcher = MicroBatcher(model, max_batch=4, wait_s=0.3)
    futures = [batcher.submit(image(value, poisoned=value == 2)) for value in range(4)]
    with pytest.raises(ValueError, match="poisoned"):
        futures[2].result(timeout=10)
    for value in (0, 1, 3):
        assert (futures[value].result(timeout=10)[0] == value + 1).all()
    assert model.batches[0] == 4 and sorted(model.batches[1:]) == [1, 1, 1, 1]  # retried one by one
    batcher.close()


def test_close_finishes_the_queue_and_the_batcher_restarts() -> None:
    model = RecordingModel(delay_s=0.02)
    batcher = MicroBatcher(model, max_batch=2, wait_s=0.0)
    futures = [batcher.submit(image(value)) for value in range(5)]
    batcher.close()
    assert all(future.done() for future in futures) and sum(model.batches) == 5
    assert (batcher.submit(image(7)).result(timeout=5)[0] == 8).all()
    batcher.close()


def test_predict_awaits_on_any_event_loop() -> None:
    batcher = MicroBatcher(RecordingModel(), max_batch=4, wait_s=0.0)

    async def two() -> list[tuple[np.ndarray, float]]:
        return await asyncio.gather(batcher.predict(image(3)), batcher.predict(image(4)))

    for _ in range(2):  # a new loop each time, as a TestClient without `with` does
        first, second = asyncio.run(two())
        assert (first[0] == 4).all() and (second[0] == 5).all()
    batcher.close()


def test_pixel_budget_bounds_what_is_held_and_serves_in_order() -> None:
    budget = PixelBudget(10)
    order: list[str] = []
    held: list[int] = []

    async def job(name: str, pixels: int, seconds: float) -> None:
        async with budget.hold(pixels):
            order.append(name)
            held.append(budget.used)
            await asyncio.sleep(seconds)

    async def scenario() -> None:
        await asyncio.gather(
            job("a", 6, 0.05),
            job("b", 6, 0.01),  # must wait for a
            job("c", 1, 0.01),  # fits next to a, but b came first
            job("huge", 50, 0.01),  # over the whole budget: runs alone
        )

    asyncio.run(scenario())
    assert order == ["a", "b", "c", "huge"]
    assert max(held) <= 10 and held[-1] == 10 and budget.used == 0


def test_pixel_budget_forgets_a_cancelled_waiter() -> None:
    async def scenario() -> None:
        budget = PixelBudget(10)
        async with budget.hold(8):
            waiter = asyncio.create_task(budget.hold(5).__aenter__())
            await asyncio.sleep(0.01)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            async with budget.hold(2):  # not stuck behind the cancelled waiter
                assert budget.used == 10
        assert budget.used == 0

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_release_freed_memory_runs() -> None:
    data = [np.ones(2_000_000, np.uint8) for _ in range(20)]
    del data
    release_freed_memory()  # glibc: malloc_trim; elsewhere: nothing (must not raise)
