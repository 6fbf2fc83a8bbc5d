"""Event work off the request path: a bounded backlog drained by a fixed number of workers.

Slack wants its HTTP answer within 3 seconds and retries otherwise. Acks share the event loop
with every reply being written, so an unbounded number of concurrent ``handle`` calls makes the
acks themselves slow; with a fixed pool the backlog grows in memory, not in request latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)

Job = Coroutine[Any, Any, Any]


class WorkQueue:
    """``submit`` never blocks or awaits; ``workers`` jobs run at a time, the rest wait in order.

    Workers start on the first ``submit`` (it needs the running loop). Past ``backlog`` queued
    jobs a job still runs, as a task of its own: the HTTP endpoint refuses new events before
    that happens (``full``), Socket Mode cannot refuse, and a customer's message is never dropped.
    """

    def __init__(self, *, workers: int = 32, backlog: int = 10_000) -> None:
        if workers < 1 or backlog < 1:
            raise ValueError("workers and backlog must be at least 1")
        self.workers = workers
        self._queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=backlog)
        self._workers: list[asyncio.Task[None]] = []
        self._overflow: set[asyncio.Task[Any]] = set()
        self._busy = 0
        self._closed = False

    @property
    def full(self) -> bool:
        return self._queue.full()

    @property
    def pending(self) -> int:
        """Jobs queued or running (for tests and health checks)."""
        return self._queue.qsize() + self._busy + len(self._overflow)

    def submit(self, job: Job) -> None:
        if self._closed:
            job.close()
            log.warning("slack event arrived while shutting down; not handled")
            return
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"slack-worker-{i}")
                for i in range(self.workers)
            ]
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            log.warning("slack event backlog is full; running the event outside the pool")
            task = asyncio.create_task(_guard(job))
            self._overflow.add(task)
            task.add_done_callback(self._overflow.discard)

    async def join(self, within: float = 10.0) -> None:
        """Wait (at most ``within`` seconds) until nothing is queued or running."""
        async def idle() -> None:
            await self._queue.join()
            while self._overflow:
                await asyncio.wait(set(self._overflow))

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(idle(), within)

    async def close(self, within: float = 10.0) -> None:
        """Finish what is queued (bounded by ``within``), then stop the workers."""
        await self.join(within)
        self._closed = True
        tasks = [*self._workers, *self._overflow]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers = []
        while not self._queue.empty():  # left over after the timeout: close them quietly
            self._queue.get_nowait().close()
            self._queue.task_done()

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            self._busy += 1
            try:
                await _guard(job)
            finally:
                self._busy -= 1
                self._queue.task_done()


async def _guard(job: Job) -> None:
    try:
        await job
    except asyncio.CancelledError:
        raise
    except Exception:  # logged; Slack already got its ack, nothing else to tell it
        log.exception("slack event handling failed")
