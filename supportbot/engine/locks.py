"""Per-conversation locks: one thread's messages run in arrival order, other threads run freely.

``asyncio.Lock`` wakes waiters first-in first-out, and ``hold`` takes the lock before anything
else awaits, so tasks started in arrival order are served in arrival order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def depth(self, key: Hashable) -> int:
        """How many tasks hold or wait for this key's lock."""
        return self._locks.get(key, (None, 0))[1]

    def __len__(self) -> int:
        return len(self._locks)


class Admission:
    """At most ``per_turn`` messages begin their preparation per event-loop iteration.

    Preparation (accept, detection, limits, retrieval, rendering) never yields to the loop:
    SQLite runs inline and the rest is CPU. A burst of N messages would otherwise prepare all N
    in one iteration, and no LLM request could leave, no connection open and no reply be read
    until it ended: 1,000 customers at once meant ~1.5 s of preparation before the LLM's
    second even started. Admitting a few per iteration lets network work run in between, so
    the LLM's wait overlaps the preparation of later messages. Waiters are served in order.
    """

    def __init__(self, per_turn: int) -> None:
        self.per_turn = per_turn
        self._admitted = 0  # in the current iteration
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._turn_scheduled = False

    async def wait(self) -> None:
        if self._admitted < self.per_turn and not self._waiters:
            self._admitted += 1
            self._schedule_turn()
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._schedule_turn()
        await waiter

    def _schedule_turn(self) -> None:
        if not self._turn_scheduled:
            self._turn_scheduled = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        """Runs once per loop iteration while anyone waits: a fresh budget, spent in order."""
        self._turn_scheduled = False
        self._admitted = 0
        while self._waiters and self._admitted < self.per_turn:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled waiter gives its place up
                waiter.set_result(None)
                self._admitted += 1
        if self._waiters or self._admitted:
            self._schedule_turn()
