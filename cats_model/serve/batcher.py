"""Requests that arrive together run as one forward pass: a bounded batcher in front of the model."""

import asyncio
import contextlib
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class Batcher:
    """Queues single items; one worker runs them through `run_batch` (a list in, a list of results out).

    The worker takes what is queued, up to `max_batch_size`. While items announced with `coming()` (images
    being decoded) are still on their way, it waits for them, at most `max_wait_ms`; with none on the way it
    starts at once, so a lone request never waits. While a batch runs the next one fills, so under load
    batches grow by themselves. `run_batch` runs on one thread of its own: the event loop keeps answering.
    Both sizes come from ServeOptions, where their defaults are.
    """

    def __init__(self, run_batch: Callable[[list], list], max_batch_size: int, max_wait_ms: float):
        if max_batch_size < 1 or not 0 <= max_wait_ms < math.inf:  # a NaN wait would never end
            raise ValueError("max_batch_size must be 1 or more and max_wait_ms 0 or more")
        self.run_batch, self.max_batch_size, self.max_wait = run_batch, max_batch_size, max_wait_ms / 1000
        self.batches = self.images = 0  # what ran: the mean batch size is images / batches
        self._coming = 0
        self._queue: asyncio.Queue | None = None
        self._changed: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="model")

    async def start(self) -> None:
        self._queue, self._changed = asyncio.Queue(), asyncio.Event()
        self._worker = asyncio.create_task(self._work())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._thread.shutdown(wait=True)

    @contextlib.contextmanager
    def coming(self):
        """Around the preparation of an item that will be submitted next: batches wait for it."""
        self._coming += 1
        try:
            yield
        finally:
            self._coming -= 1
            self._changed.set()

    async def __call__(self, item: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        self._changed.set()
        return await future

    async def _next_batch(self) -> list:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while True:
            while len(batch) < self.max_batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            remaining = deadline - loop.time()
            if len(batch) == self.max_batch_size or not self._coming or remaining <= 0:
                return batch
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items, futures = zip(*await self._next_batch())
            self.batches, self.images = self.batches + 1, self.images + len(items)
            try:
                results = await loop.run_in_executor(self._thread, self.run_batch, list(items))
                if len(results) != len(items):  # zip would leave the callers past the end waiting forever
                    raise RuntimeError(f"the model gave {len(results)} results for a batch of {len(items)}")
            except Exception as err:  # the callers get the error; the worker goes on with the next batch
                for future in futures:
                    if not future.done():
                        future.set_exception(err)
                continue
            for future, result in zip(futures, results):
                if not future.done():  # a caller that went away (disconnect) cancelled its future
                    future.set_result(result)
