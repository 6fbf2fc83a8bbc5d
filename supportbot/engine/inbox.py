"""Customer messages in: stored first (one short transaction), then answered in their
thread's queue, one at a time per thread, under the thread's lock."""

from __future__ import annotations

import asyncio
import logging
import time
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any

from supportbot import logs, metrics
from supportbot.engine.attachments import stored_rows, with_notes
from supportbot.engine.core import Core
from supportbot.engine.delivery import ResumedSink
from supportbot.engine.queues import ThreadQueues
from supportbot.engine.recovery import Expire, QueuedTurn
from supportbot.engine.turn import Turn
from supportbot.engine.types import (
    Accepted,
    IncomingMessage,
    Intake,
    Outcome,
    Reply,
    ReplySink,
)
from supportbot.language import detect_language

log = logging.getLogger("supportbot.engine")


class Inbox:
    def __init__(self, core: Core, queues: ThreadQueues,
                 respond: Callable[[Turn], Awaitable[Reply]]) -> None:
        self.core, self.queues, self.respond = core, queues, respond
        self.queued: dict[int, QueuedTurn] = {}  # stored message id -> its place in a queue

    async def accept(self, msg: IncomingMessage) -> Accepted:
        """Store one customer message, and nothing else: what a door awaits before it tells
        the platform "OK".

        One short transaction claims the event id, finds or opens the conversation and stores
        the message as ``received``. No platform or LLM call happens here. A redelivery gives
        ``Intake.DUPLICATE``, an empty message ``Intake.IGNORED`` (nothing stored). If the store
        fails this raises, and the door must not acknowledge (503, no ack) so the platform
        delivers again. Answer it with :meth:`dispatch`, called right after (no ``await`` in
        between): a thread's messages are then answered in the order ``accept`` was called."""
        metrics.MESSAGES_IN.labels(msg.platform).inc()
        raw = with_notes(msg.text, msg.attachments) if msg.attachments else msg.text
        text, truncated = self.clean(raw)
        fields = {"platform": msg.platform, "thread_key": msg.thread_key,
                  "event_id": msg.message_id}
        if not text:
            return Accepted(Intake.IGNORED, language=msg.language or "en", **fields)
        language = detect_language(text, msg.language, default=self.core.settings.default_language)
        # one thread's messages are stored in the order accept was called (the lock is taken
        # before anything awaits, and wakes waiters first in, first out)
        async with self.core.locks.hold(("accept", msg.platform, msg.thread_key)):
            stored = await self.core.store.accept(
                platform=msg.platform,
                event_id=msg.message_id,
                thread_key=msg.thread_key,
                customer_id=msg.customer_id,
                customer_name=msg.customer_name,
                language=language,
                text=text,
                attachments=stored_rows(msg.attachments, self.core.settings.max_message_chars),
            )
        if stored is None:
            log.info("duplicate delivery ignored",
                     extra={"platform": msg.platform, "event_id": msg.message_id})
            return Accepted(Intake.DUPLICATE, language=language, **fields)
        conv, user_msg = stored
        return Accepted(Intake.STORED, language=language, conversation_id=conv.id,
                        message_id=user_msg.id, truncated=truncated, **fields)

    def dispatch(
        self,
        accepted: Accepted,
        sink: ReplySink | None = None,
        *,
        customer_name: Callable[[], Awaitable[str]] | None = None,
    ) -> asyncio.Future[Reply]:
        """Answer an accepted message in the background; never awaits.

        The work joins its thread's queue: a thread's messages are answered one at a time in
        the order they were dispatched (behind any recovery of that thread), threads run
        concurrently, at most ``max_concurrent_turns`` at once. ``customer_name``, if given, is
        awaited when the message's turn comes (a platform lookup the door must not make before
        the store) and stored with the conversation. Await the returned future for the
        :class:`Reply` (optional: failures are logged, and a message whose answer failed stays
        ``received`` for the recovery sweep)."""
        if not accepted.stored:
            outcome = Outcome.DUPLICATE if accepted.duplicate else Outcome.IGNORED
            done: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
            done.set_result(metrics.count_reply(
                accepted.platform, Reply(None, outcome, language=accepted.language)
            ))
            return done
        assert accepted.message_id is not None
        queued = self.queued.get(accepted.message_id)
        if queued is not None:  # recovery queued it already: the live sink is better
            if sink is not None and not queued.job.started:
                queued.sink, queued.recovered = sink, False
            return queued.job.future
        item = QueuedTurn(accepted.message_id, sink, accepted=accepted,
                          customer_name=customer_name)
        item.job = self.queues.submit((accepted.platform, accepted.thread_key),
                                      lambda: self._run_dispatched(item))
        self.queued[accepted.message_id] = item
        return item.job.future

    async def _run_dispatched(self, item: QueuedTurn) -> Reply:
        accepted = item.accepted
        assert accepted is not None
        try:
            if item.customer_name is not None and accepted.conversation_id is not None:
                await self._fill_customer_name(accepted.conversation_id, item.customer_name)
            return await self.run(item, accepted.platform, accepted.thread_key, None)
        finally:
            self.queued.pop(item.message_id, None)

    async def _fill_customer_name(self, conversation_id: int,
                                  lookup: Callable[[], Awaitable[str]]) -> None:
        try:
            name = await lookup()
        except Exception as exc:  # a display name is a nicety: answer without it
            log.warning("customer name lookup failed: %s", type(exc).__name__)
            return
        if name:
            await self.core.store.update_conversation(conversation_id, customer_name=name)

    async def run(self, item: QueuedTurn, platform: str, thread_key: str,
                   expire: Expire | None) -> Reply:
        """Answer one stored message under its thread's lock, if nobody has yet."""
        started = time.perf_counter()
        async with self.core.thread(platform, thread_key):
            message = await self.core.store.message(item.message_id)
            conv = (await self.core.store.conversation(message.conversation_id)
                    if message is not None else None)
            if message is None or conv is None or message.state != "received":
                item.outcome = "skipped"  # another process (or recovery) answered it
                return metrics.count_reply(platform, Reply(
                    conv.id if conv else None, Outcome.DUPLICATE,
                    language=conv.language if conv else "en",
                ))
            sink = item.sink
            if item.recovered:  # no live event: reach the customer through the adapter
                view = await self.core.view(conv.id)
                sink = self.core.sink_for(view) if view is not None else None
            streamed = (await self.core.store.streamed_into(message.id)
                        or self.core.streams.sent_into(message)) if sink is not None else None
            if sink is not None and streamed:  # a crash cut its reply's stream: finish that one
                sink = ResumedSink(sink, streamed, self.core.prompts.message(
                    "answer_resumed", conv.language))
            truncated = len(message.text) >= self.core.settings.max_message_chars
            turn = Turn(conv, message, sink, conv.language, note=self.core.prompts.message(
                "message_truncated", conv.language, limit=self.core.settings.max_message_chars,
            ) if truncated else "")
            token = logs.conversation_id.set(conv.id)
            try:
                if expire is not None and (expired := await expire(turn)) is not None:
                    item.outcome = "expired"
                    return expired
                with metrics.turn() as stats:
                    reply = await self.respond(turn)
                self.core.streams.done(message)
                item.outcome = "answered"
                metrics.count_reply(platform, reply)
                extra: dict[str, Any] = {
                    "platform": platform,
                    "outcome": str(reply.outcome),
                    "latency_ms": round((time.perf_counter() - started) * 1000, 1),
                    "llm_ms": round(stats.llm_ms, 1),
                    "prompt_tokens": stats.prompt_tokens,
                    "completion_tokens": stats.completion_tokens,
                }
                if self.core.settings.log_message_text:
                    extra["text"] = message.text
                log.info("message processed", extra=extra)
                return reply
            finally:
                logs.conversation_id.reset(token)

    def clean(self, raw: str) -> tuple[str, bool]:
        """Cap the length, then drop control characters, so nothing hostile reaches storage.
        The cap comes first: a 10 MB message must not be walked character by character on the
        event loop (the window leaves room for control characters and spaces to drop)."""
        limit = self.core.settings.max_message_chars
        window = raw[: 4 * limit + 64]
        text = "".join(
            ch for ch in window if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs")
        ).strip()
        if len(text) > limit:
            return text[:limit], True
        return text, len(raw) > len(window)
