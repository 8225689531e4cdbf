"""Merge concurrent requests into batches for a model that runs in a worker thread."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

log = logging.getLogger("lamina.sentence_transformers")

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """Runs `work(items) -> one result per item` off the event loop, one call at a time.

    Requests that arrive while a call runs wait together and go into the next call, so a model sees a few
    large batches rather than many small ones. A merged call is capped at `max_items` (a single request
    larger than that still goes in whole).
    """

    def __init__(self, work: Callable[[list[Item]], Sequence[Result]], executor: Executor, max_items: int) -> None:
        self._work = work
        self._executor = executor
        self._max_items = max_items
        self._pending: list[tuple[list[Item], asyncio.Future[Sequence[Result]]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self.calls = 0  # how many times `work` ran: lets tests and benchmarks see the merging

    async def submit(self, items: list[Item]) -> Sequence[Result]:
        if not items:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Sequence[Result]] = loop.create_future()
        self._pending.append((items, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        return await future

    def _take_batch(self) -> list[tuple[list[Item], asyncio.Future[Sequence[Result]]]]:
        batch, count = [], 0
        while self._pending and (not batch or count + len(self._pending[0][0]) <= self._max_items):
            job = self._pending.pop(0)
            if not job[1].done():  # a caller that went away (cancelled) needs no work done
                batch.append(job)
                count += len(job[0])
        return batch

    async def _drain(self) -> None:
        while self._pending:
            batch = self._take_batch()
            if not batch:
                continue
            try:
                await self._run(batch)
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    continue
                # One bad request must not fail the others it was merged with: run each alone.
                for job in batch:
                    try:
                        await self._run([job])
                    except Exception as alone:
                        _settle(job[1], alone)

    async def _run(self, batch: list[tuple[list[Item], asyncio.Future[Sequence[Result]]]]) -> None:
        flat = [item for items, _ in batch for item in items]
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self._executor, self._work, flat)
        self.calls += 1
        log.debug("ran %d items from %d request(s)", len(flat), len(batch))
        start = 0
        for items, future in batch:
            if not future.done():
                future.set_result(results[start : start + len(items)])
            start += len(items)


def _settle(future: asyncio.Future[Sequence[Result]], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
