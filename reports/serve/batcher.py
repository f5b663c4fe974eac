"""Micro-batching: concurrent requests share the model's forward passes, and never run it at once.

Requests wait in a queue. One task takes the oldest, joins to it whatever else is waiting (up to
``max_texts`` texts in all), runs ``predict`` on the lot in one worker thread, and hands each request
its share of the answers. An idle server answers a lone request at once; a busy one batches what
arrived while the model ran, which is where batching pays. The event loop never blocks on the model.

Example:
    >>> batcher = MicroBatcher(classifier.predict)
    >>> await batcher.start()
    >>> await batcher(["have a nice day", "you idiot"])  # from any number of concurrent requests
    >>> await batcher.stop()
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    """Runs ``predict`` on batches gathered from concurrent callers, one batch at a time.

    Args:
        predict: Texts to one answer per text, in order. Called from a single worker thread only.
        max_texts: Stop joining waiting requests to a batch once it holds this many texts (a single
            larger request still runs whole: ``predict`` splits it as it needs).
    """

    def __init__(self, predict: Callable[[list[str]], list[T]], *, max_texts: int = 64) -> None:
        if max_texts < 1:
            raise ValueError(f"max_texts must be at least 1, but got {max_texts}")
        self.predict = predict
        self.max_texts = max_texts
        self._queue: asyncio.Queue[tuple[Sequence[str], asyncio.Future[list[T]]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    async def start(self) -> None:
        """Start taking requests; call from the event loop that will serve them."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker and its thread; requests still waiting are cancelled."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while self._queue is not None and not self._queue.empty():
            _, future = self._queue.get_nowait()
            future.cancel()
        self._thread.shutdown(wait=True)

    async def __call__(self, texts: Sequence[str]) -> list[T]:
        """The answers for ``texts``, once a batch that holds them has run."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        future: asyncio.Future[list[T]] = asyncio.get_running_loop().create_future()
        await self._queue.put((texts, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0][0])
            while size < self.max_texts and not self._queue.empty():
                batch.append(self._queue.get_nowait())
                size += len(batch[-1][0])
            texts = [text for request, _ in batch for text in request]
            try:
                answers = await loop.run_in_executor(self._thread, self.predict, texts)
            except asyncio.CancelledError:  # stopped mid-batch: its requests get no answer
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as error:  # each request of the batch gets the error, and the worker goes on
                for _, future in batch:
                    if not future.done():  # a client that hung up has cancelled its future
                        future.set_exception(error)
                continue
            start = 0
            for request, future in batch:
                if not future.done():
                    future.set_result(answers[start : start + len(request)])
                start += len(request)
