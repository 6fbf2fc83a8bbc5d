"""Messages stored but never answered (a crash, a send that kept failing), and waiting threads.

Recovery never blocks serving: it queues each unanswered message at the front of its thread's
queue (:mod:`supportbot.engine.queues`), oldest first, and the queues answer them in the
background. A message older than ``recover_max_age_seconds`` is not answered late: the
thread goes to staff instead (``restart recovery`` in the handoff table). While the process runs,
a sweep does the same for messages left unanswered for a while (a send that failed even after
its retries), so they do not wait for the next restart.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from supportbot.engine.core import Core
from supportbot.engine.delivery import Delivery
from supportbot.engine.handoff import Actor, Event
from supportbot.engine.queues import Job, ThreadQueues
from supportbot.engine.transitions import Transitions
from supportbot.engine.turn import Turn
from supportbot.engine.types import Accepted, Outcome, Reply, ReplySink

log = logging.getLogger("supportbot.engine")

Expire = Callable[[Turn], Awaitable[Reply | None]]


class QueuedTurn:
    """A stored message waiting in its thread's queue. Until it starts, a redelivery may swap
    the sink for a live one."""

    __slots__ = ("accepted", "customer_name", "job", "message_id", "outcome", "recovered",
                 "sink")

    def __init__(self, message_id: int, sink: ReplySink | None, *,
                 accepted: Accepted | None = None,
                 customer_name: Callable[[], Awaitable[str]] | None = None,
                 recovered: bool = False) -> None:
        self.message_id, self.sink, self.recovered = message_id, sink, recovered
        self.accepted, self.customer_name = accepted, customer_name
        self.outcome: str | None = None  # recovery: answered, expired or skipped
        self.job: Job


class Recovery:
    def __init__(self, core: Core, delivery: Delivery, transitions: Transitions,
                 queues: ThreadQueues, queued: dict[int, QueuedTurn],
                 answer: Callable[[QueuedTurn, str, str, Expire | None], Awaitable[Reply]],
                 ) -> None:
        self.core, self.delivery, self.transitions = core, delivery, transitions
        self.queues, self.queued, self.answer = queues, queued, answer

    async def queue(self, now: datetime | None = None, *,
                    older_than: timedelta | None = None) -> list[QueuedTurn]:
        """Queue every unanswered message not already queued here, at the front of its
        thread's queue, oldest first (``older_than``: only messages at least that old)."""
        max_age = timedelta(seconds=self.core.settings.recover_max_age_seconds)
        by_thread: dict[tuple[str, str], list[QueuedTurn]] = {}
        cutoff = datetime.now(UTC) - older_than if older_than is not None else None
        unanswered = await self.core.store.unanswered()
        journal = self.core.streams.journal
        if journal is not None:  # where replies of a process that died here went
            journal.inherit(unanswered)
        for message in unanswered:
            if message.id in self.queued or (cutoff is not None and message.created_at > cutoff):
                continue
            conv = await self.core.store.conversation(message.conversation_id)
            if conv is None or conv.platform not in self.core.sinks:
                continue  # no adapter for it in this process
            item = QueuedTurn(message.id, None, recovered=True)
            by_thread.setdefault((conv.platform, conv.thread_key), []).append(item)
            self.queued[message.id] = item
        out: list[QueuedTurn] = []
        for key, items in by_thread.items():
            runs = [functools.partial(self._one, key, item, now, max_age) for item in items]
            for item, job in zip(items, self.queues.submit_front(key, runs), strict=True):
                item.job = job
                out.append(item)
        return out

    async def _one(self, key: tuple[str, str], item: QueuedTurn, now: datetime | None,
                   max_age: timedelta) -> Reply:
        try:
            expired = functools.partial(self._expire, now=now, max_age=max_age)
            return await self.answer(item, *key, expired)
        finally:
            self.queued.pop(item.message_id, None)

    async def _expire(self, turn: Turn, *, now: datetime | None,
                      max_age: timedelta) -> Reply | None:
        """Too old to answer now: staff take it (``None``: young enough, answer it)."""
        if (now or datetime.now(UTC)) - turn.message.created_at <= max_age:
            return None
        conv = turn.conv
        await self.core.store.set_message_state(turn.message.id, "expired")
        await self.core.store.update_conversation(conv.id, bot_failed=True)
        await self.transitions.apply(
            conv.id, Event.RESTART_RECOVERY, Actor.SYSTEM, "bot",
            reason="unanswered_after_restart", handoff_reason="unanswered_after_restart",
        )
        return Reply(conv.id, Outcome.HANDOFF, handed_off=True, language=conv.language)

    async def check_waiting(self, now: datetime | None = None) -> int:
        """Tell customers nobody has picked their thread up yet: once after the configured
        wait, once more after another, never again."""
        now = now or datetime.now(UTC)
        wait = timedelta(seconds=self.core.settings.handoff_wait_seconds)
        store, told = self.core.store, 0
        for conv in await store.waiting_since_before(now - wait):
            due = conv.waiting_since + wait * (conv.wait_notices + 1)  # type: ignore[operator]
            if conv.wait_notices >= 2 or due > now:
                continue
            if not await store.claim_wait_notice(conv.id, conv.wait_notices):
                continue  # another process sent this notice
            applied = await self.transitions.apply(
                conv.id, Event.WAITING_TIMER, Actor.SYSTEM, "system", notice=False
            )
            if applied is not None and await self.delivery.notify(conv.id,
                                                                  "handoff_still_waiting"):
                told += 1
        return told

    async def run_duties(self, interval: float, sweep_after: timedelta) -> None:
        """Every ``interval``: waiting notices, and the sweep of messages left unanswered."""
        while True:
            await asyncio.sleep(interval)
            for duty in (self.check_waiting, functools.partial(self.queue,
                                                               older_than=sweep_after)):
                try:
                    result: Any = await duty()
                    if isinstance(result, list) and result:
                        log.info("sweep: re-queued unanswered messages",
                                 extra={"count": len(result)})
                except Exception:
                    log.exception("background duty failed")
