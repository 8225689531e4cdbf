"""A claimed job's lease, for workers of any API that run `JobQueue` jobs (vector-store ingestion, batches)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from lamina.storage import Job, JobQueue

log = logging.getLogger("lamina")


class LeaseLost(Exception):
    """The job was cancelled, superseded or taken over: drop the work, write nothing."""


class Stopping(Exception):
    """The worker's router is closing: give the job back."""


class Lease:
    """A claimed job's lease, renewed in the background every third of its length; `check()` before every write."""

    def __init__(self, jobs: JobQueue, job: Job, worker: str, seconds: float, stopping: Callable[[], bool]) -> None:
        self.jobs, self.job, self.worker, self.seconds, self.stopping = jobs, job, worker, seconds, stopping
        self.lost = False
        self.heartbeat = asyncio.create_task(self._beat(), name=f"lease {job.key}")

    async def _beat(self) -> None:
        while not self.lost:
            await asyncio.sleep(self.seconds / 3)
            try:
                self.lost = not await self.jobs.renew(self.job, self.worker, self.seconds)
            except Exception:
                log.exception("renewing the lease of %s failed", self.job.key)

    async def check(self) -> None:
        if self.stopping():
            raise Stopping
        if self.lost or not await self.jobs.renew(self.job, self.worker, self.seconds):
            self.lost = True
            raise LeaseLost

    async def end(self) -> None:
        self.heartbeat.cancel()
        await asyncio.gather(self.heartbeat, return_exceptions=True)


POLL_SECONDS = 1.0  # how soon an idle worker notices a job another process queued


async def claim_next(
    jobs: JobQueue, kind: str, worker: str, seconds: float, wakeup: asyncio.Event, stopping: Callable[[], bool]
) -> Lease | None:
    """One turn of a worker's loop: the lease of a job of `kind` it claimed, or None after waiting (at most
    `POLL_SECONDS`, less when `wakeup` is set by a local enqueue) when there was none; a failed claim is logged and
    counts as none."""
    wakeup.clear()
    try:
        job = await jobs.claim(kind, worker, seconds)
    except Exception:
        log.exception("claiming a %s job failed", kind)
        job = None
    if job is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), POLL_SECONDS)
        return None
    return Lease(jobs, job, worker, seconds, stopping)
