"""Work after the store: one queue per thread, threads side by side, a bound on work in flight.

A door stores a customer's message (``Engine.accept``) and answers the platform at once; the
answer is produced here, later. Each conversation thread has a first-in first-out queue, so a
thread's messages are answered in the order they were queued; different threads run
concurrently, at most ``limit`` jobs at a time (the rest wait, in order, for a slot).

Recovery after a restart puts a thread's older unanswered messages at the *front* of its queue
(``submit(..., front=True)``) while the queues are :meth:`paused <ThreadQueues.pause>`, so a new
message for that thread waits behind its recovery and per-thread order holds.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from supportbot import metrics

log = logging.getLogger("supportbot.engine")


@dataclass(eq=False)
class Job:
    """One unit of work for a thread: ``run`` is called when its turn comes (never before)."""

    run: Callable[[], Awaitable[Any]]
    future: asyncio.Future[Any]
    # the submitter's context variables (log fields, the adapter's "message being handled")
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    started: bool = False


class ThreadQueues:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._slots = asyncio.Semaphore(limit)
        self._queues: dict[Hashable, deque[Job]] = {}
        self._drains: set[asyncio.Task[None]] = set()
        self._open = asyncio.Event()
        self._open.set()
        self._running = 0
        self._closing = False  # draining: no job starts any more
        self._in_flight: set[asyncio.Task[Any]] = set()

    def submit(self, key: Hashable, run: Callable[[], Awaitable[Any]], *,
               front: bool = False) -> Job:
        """Queue ``run`` for thread ``key``; never awaits. ``job.future`` carries its result."""
        job = Job(run, asyncio.get_running_loop().create_future())
        job.future.add_done_callback(_retrieve)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            task = asyncio.create_task(self._drain(key, queue), name=f"thread-queue:{key}")
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)
        if front:
            queue.appendleft(job)
        else:
            queue.append(job)
        metrics.LOCK_WAITERS.inc()  # waiting for its conversation until its turn comes
        return job

    def submit_front(self, key: Hashable, runs: list[Callable[[], Awaitable[Any]]]) -> list[Job]:
        """Queue ``runs`` ahead of everything already queued for ``key``, in the given order."""
        return [self.submit(key, run, front=True) for run in reversed(runs)][::-1]

    def pause(self) -> None:
        """Hold every job back (jobs already running finish) until :meth:`resume`."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    @property
    def backlog(self) -> int:
        """Jobs queued or running."""
        return sum(len(q) for q in self._queues.values()) + self._running

    async def drain(self, grace: float) -> None:
        """Start no more jobs and give the running ones up to ``grace`` seconds to finish.

        Why: a SIGTERM (every deploy, every scale-down) would otherwise cut answers that are
        one write from done, and the next start would redo them (recovery finishes a sent reply
        in place, but the model is asked again for one cut mid-generation). Jobs still queued
        stay stored as ``received``: the next start answers them."""
        self._closing = True
        if grace > 0 and self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace)

    async def aclose(self) -> None:
        self._closing = True
        for task in list(self._drains):
            task.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)
        for queue in self._queues.values():
            for job in queue:
                metrics.LOCK_WAITERS.dec()
                job.future.cancel()
        self._queues.clear()

    async def _drain(self, key: Hashable, queue: deque[Job]) -> None:
        try:
            while queue and not self._closing:
                await self._open.wait()
                async with self._slots:
                    if not queue or self._closing:
                        break
                    job = queue.popleft()
                    metrics.LOCK_WAITERS.dec()
                    job.started = True
                    self._running += 1
                    try:
                        # in the submitter's context, as a task of its own
                        running = asyncio.create_task(_call(job.run), context=job.context)
                        self._in_flight.add(running)
                        running.add_done_callback(self._in_flight.discard)
                        result = await running
                    except asyncio.CancelledError:
                        job.future.cancel()
                        raise
                    except Exception as exc:
                        log.exception("queued work for a thread failed")
                        if not job.future.done():
                            job.future.set_exception(exc)
                    else:
                        if not job.future.done():
                            job.future.set_result(result)
                    finally:
                        self._running -= 1
        finally:
            if self._queues.get(key) is queue and not queue:
                del self._queues[key]


async def _call(run: Callable[[], Awaitable[Any]]) -> Any:
    return await run()


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Failures are logged where they happen; nobody has to await a job's future."""
    if not future.cancelled():
        future.exception()
