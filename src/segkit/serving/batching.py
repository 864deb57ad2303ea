"""Scheduling the model for concurrent requests: micro-batches, a bound on decoded pixels, memory release.

- :class:`MicroBatcher` runs the predictor on one thread; requests that arrive
  within a few milliseconds of each other share one ``predict_batch`` call.
- :class:`PixelBudget` bounds the decoded pixels that all requests hold at once,
  so concurrent large images wait for each other instead of multiplying the
  memory peak.
- :func:`release_freed_memory` hands memory freed after a large image back to
  the operating system.

Hand-written: serving frameworks that batch (Ray Serve, BentoML, Triton) are whole
deployment systems; what segkit needs is these few dozen lines in front of its Predictor.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import ctypes.util
import functools
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np

BatchPredict = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


@dataclass
class _Job:
    image: np.ndarray
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class MicroBatcher:
    """Groups images submitted at about the same time into one ``predict_batch`` call on one thread.

    The inference thread takes the first waiting image, then up to ``wait_s`` more for
    others (it stops early at ``max_batch``); images that queued while the model was busy
    join the next batch at once. One call runs at a time, so the model is never used
    concurrently. A failing batch is retried image by image, so one image's error (or an
    out-of-memory for the batch) does not fail the others.

    Args:
        predict_batch: RGB arrays of any sizes -> index masks, in order
            (e.g. ``Predictor.predict_batch``).
        max_batch: most images per call; 1 predicts one request at a time.
        wait_s: how long the first image of a batch waits for companions.

    Attributes:
        seconds_per_image: moving average of the inference time per image (for ``Retry-After``).
    """

    def __init__(self, predict_batch: BatchPredict, *, max_batch: int, wait_s: float) -> None:
        self.predict_batch = predict_batch
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.seconds_per_image = 0.0
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def predict(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The index mask of one RGB image and the milliseconds its batch took on the model."""
        return await asyncio.wrap_future(self.submit(image))

    def submit(self, image: np.ndarray) -> concurrent.futures.Future:
        """Queue one image; the future gives ``(mask, milliseconds)``. Starts the thread when needed."""
        job = _Job(image)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="segkit-inference", daemon=True)
                self._thread.start()
            self._jobs.put(job)
        return job.future

    def close(self) -> None:
        """Finish the queued images, then stop the thread (a later :meth:`submit` starts a new one)."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._jobs.put(None)
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch, stop = self._collect(first)
            self._predict(batch)
            if stop:
                return

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """The batch starting with ``first``, and whether the stop marker came while collecting it."""
        batch = [first]
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            try:
                job = self._jobs.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                break
            if job is None:
                return batch, True
            batch.append(job)
        return batch, False

    def _predict(self, batch: list[_Job]) -> None:
        running = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if running:
            self._run_batch(running)

    def _run_batch(self, batch: list[_Job]) -> None:
        start = time.perf_counter()
        try:
            masks = self.predict_batch([job.image for job in batch])
        except Exception as error:
            if len(batch) == 1:
                batch[0].future.set_exception(error)
                return
            for job in batch:  # isolate the failing image (or fit in memory one by one)
                self._run_batch([job])
            return
        elapsed = time.perf_counter() - start
        per_image = elapsed / len(batch)
        average = self.seconds_per_image
        self.seconds_per_image = 0.8 * average + 0.2 * per_image if average else per_image
        for job, mask in zip(batch, masks, strict=True):
            job.future.set_result((mask, elapsed * 1000))


class PixelBudget:
    """At most ``capacity`` decoded pixels held by all requests together; waiting requests go first come, first served.

    A request larger than the whole budget holds all of it (it runs alone).
    Hand-written: asyncio and anyio semaphores count holders, not weights.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiting: deque[tuple[int, asyncio.Future]] = deque()

    @asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        """Hold ``pixels`` of the budget while the block runs, waiting for them if needed."""
        pixels = min(pixels, self.capacity)
        if self._waiting or self.used + pixels > self.capacity:
            granted = asyncio.get_running_loop().create_future()
            entry = (pixels, granted)
            self._waiting.append(entry)
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():
                    self._release(pixels)  # granted just before the cancellation
                else:
                    self._waiting.remove(entry)
                    self._grant()  # the head may have left: the next ones may fit now
                raise
        else:
            self.used += pixels
        try:
            yield
        finally:
            self._release(pixels)

    def _release(self, pixels: int) -> None:
        self.used -= pixels
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self.used + self._waiting[0][0] <= self.capacity:
            pixels, granted = self._waiting.popleft()
            if not granted.done():
                self.used += pixels
                granted.set_result(None)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        return None


def release_freed_memory() -> None:
    """Give memory freed by a large image back to the operating system (glibc; a no-op elsewhere).

    glibc keeps freed blocks in per-thread heaps: after a few large images the server
    would hold gigabytes it no longer uses. ``malloc_trim(0)`` returns them (tens of ms).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
