"""Answers being streamed right now, so a takeover can stop them at once.

In this process a transition out of ``bot`` calls :meth:`Streams.interrupt` right after it
commits. Another process (several processes on one PostgreSQL database) cannot reach that
call, so a stream also re-reads its conversation's status every ``poll`` seconds while it runs
(:meth:`Streams.watch`): an interruption is noticed within that interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

log = logging.getLogger("supportbot.engine")

#: how often a stream re-reads its conversation's status (a takeover in another process)
POLL_SECONDS = 0.5


class Streams:
    def __init__(self, poll: float = POLL_SECONDS) -> None:
        self.poll = poll
        self._live: dict[int, set[asyncio.Event]] = {}

    def interrupt(self, conversation_id: int) -> bool:
        """Stop every answer streaming in this conversation; True if there was one."""
        events = self._live.get(conversation_id, set())
        for event in events:
            event.set()
        return bool(events)

    @contextlib.asynccontextmanager
    async def watch(
        self, conversation_id: int, bot_owns: Callable[[], Awaitable[bool]]
    ) -> AsyncIterator[asyncio.Event]:
        """An event set when this conversation's answer must stop: an in-process interrupt, or
        the status seen changed (``bot_owns`` false) by the poll."""
        stop = asyncio.Event()
        self._live.setdefault(conversation_id, set()).add(stop)

        async def poll() -> None:
            while not stop.is_set():
                await asyncio.sleep(self.poll)
                try:
                    if not await bot_owns():
                        stop.set()
                except Exception as exc:  # a failed read is not a takeover
                    log.warning("stream status check failed: %s", type(exc).__name__)

        poller = asyncio.create_task(poll())
        try:
            yield stop
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            live = self._live.get(conversation_id)
            if live is not None:
                live.discard(stop)
                if not live:
                    del self._live[conversation_id]
