"""The conversation engine every platform shares.

One customer message: claim its event id and store it (one transaction), then under the thread's
lock decide who answers (staff, the FAQ, the LLM), re-check that the bot still owns the thread,
and deliver. A failure after the store never loses the message: it stays ``received`` and is
recovered on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from supportbot import logs, metrics
from supportbot.config import Settings
from supportbot.defaults import resolve
from supportbot.engine.history import trim_history
from supportbot.engine.locks import KeyedLocks
from supportbot.engine.queues import Job, ThreadQueues
from supportbot.engine.types import (
    Accepted,
    ConversationView,
    IncomingMessage,
    Intake,
    Outcome,
    Reply,
    ReplySink,
    Source,
    StaffDesk,
    Status,
    TurnView,
)
from supportbot.handoff import (
    HANDOFF_MARKER,
    BusinessHours,
    HandoffDetector,
    MarkerStreamFilter,
    split_marker,
)
from supportbot.knowledge import Hit, KnowledgeBase
from supportbot.language import detect_language
from supportbot.limits import Limits, Verdict
from supportbot.llm import Completion, LLMClient, LLMError
from supportbot.prompts import PromptLibrary, Snippet
from supportbot.storage import Store, reports
from supportbot.storage.models import Conversation, Message

log = logging.getLogger("supportbot.engine")

SinkFactory = Callable[[ConversationView], ReplySink]
OPEN_STATES = (Status.BOT, Status.WAITING, Status.HUMAN)
# customer messages answered at once (each may wait on the LLM); the rest wait in their queues
MAX_CONCURRENT_TURNS = 256

class Engine:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        knowledge: KnowledgeBase,
        prompts: PromptLibrary,
        detector: HandoffDetector,
        llm: LLMClient | None = None,
        *,
        max_concurrent_turns: int = MAX_CONCURRENT_TURNS,
    ) -> None:
        self.settings = settings
        self.store = store
        self.knowledge = knowledge
        self.prompts = prompts
        self.detector = detector
        self.llm = llm
        self.hours = BusinessHours.parse(settings.business_hours, settings.timezone)
        self.locks = KeyedLocks()
        self.queues = ThreadQueues(max_concurrent_turns)
        self._queued: dict[int, _QueuedTurn] = {}  # stored message id -> its queued turn
        self._started = False
        self.limits = Limits(settings.rate_limit_per_minute, settings.daily_token_budget)
        self._desks: dict[str, StaffDesk] = {}
        self._sinks: dict[str, SinkFactory] = {}
        self._knowledge_checked = 0.0
        self._background: set[asyncio.Task[Any]] = set()

    @classmethod
    async def open(cls, settings: Settings) -> Engine:
        store = await Store.open(
            settings.resolved_database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )
        knowledge = KnowledgeBase.from_settings(settings)
        await knowledge.refresh()
        prompts = PromptLibrary(
            settings.prompts_dir,
            defaults={
                "bot_name": settings.bot_name,
                "company_name": settings.company_name,
                "timezone": settings.timezone,
            },
        )
        # staff phrases override the package's file (see supportbot.defaults.resolve)
        detector = HandoffDetector.load(resolve(settings.prompts_dir, "handoff_phrases.yaml").path)
        llm = LLMClient.from_settings(settings) if settings.llm_configured else None
        return cls(settings, store, knowledge, prompts, detector, llm)

    async def aclose(self) -> None:
        await self.queues.aclose()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.llm is not None:
            await self.llm.aclose()
        await self.knowledge.aclose()
        await self.store.close()

    # --- wiring for adapters ---------------------------------------------------------------

    def register_desk(self, platform: str, desk: StaffDesk) -> None:
        self._desks[platform] = desk

    def register_sink_factory(self, platform: str, factory: SinkFactory) -> None:
        """How the engine reaches a customer unprompted (hand-back notice, waiting notice,
        answers recovered after a restart)."""
        self._sinks[platform] = factory

    # --- customer messages -------------------------------------------------------------------

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
        text, truncated = self._clean(msg.text)
        fields = {"platform": msg.platform, "thread_key": msg.thread_key,
                  "event_id": msg.message_id}
        if not text:
            return Accepted(Intake.IGNORED, language=msg.language or "en", **fields)
        language = detect_language(text, msg.language, default=self.settings.default_language)
        # one thread's messages are stored in the order accept was called (the lock is taken
        # before anything awaits, and wakes waiters first in, first out)
        async with self.locks.hold(("accept", msg.platform, msg.thread_key)):
            stored = await self.store.accept(
                platform=msg.platform,
                event_id=msg.message_id,
                thread_key=msg.thread_key,
                customer_id=msg.customer_id,
                customer_name=msg.customer_name,
                language=language,
                text=text,
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
        queued = self._queued.get(accepted.message_id)
        if queued is not None:  # recovery queued it already: the live sink is better
            if sink is not None and not queued.job.started:
                queued.sink = sink
            return queued.job.future
        item = _QueuedTurn(accepted, sink, customer_name)
        item.job = self.queues.submit((accepted.platform, accepted.thread_key),
                                      lambda: self._run_queued(item))
        self._queued[accepted.message_id] = item
        return item.job.future

    async def handle(self, msg: IncomingMessage, sink: ReplySink | None = None) -> Reply:
        """Store and answer one message, waiting for the answer (terminal, tests)."""
        return await self.dispatch(await self.accept(msg), sink)

    def backlog(self) -> int:
        """Messages waiting for or being answered in this process (for ``/healthz``)."""
        return self.queues.backlog

    def start(self, *, waiting_interval: float = 30.0) -> None:
        """Begin the background duties: recovery of messages stored but never answered (a
        crash), and the waiting-thread notices. Returns at once; serving never waits for it.

        Until the unanswered messages are listed (one query), queued work is held back, so a
        new message for a thread being recovered waits behind that thread's recovery."""
        if self._started:
            return
        self._started = True
        self.queues.pause()
        self._spawn(self._recover_in_background())
        self.start_background(waiting_interval)

    async def _recover_in_background(self) -> None:
        try:
            counts = await self.queue_recovery()
            if any(counts.values()):
                log.info("recovering unanswered messages", extra=counts)
        except Exception:
            log.exception("could not list unanswered messages")
        finally:
            self.queues.resume()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run_queued(self, item: _QueuedTurn) -> Reply:
        accepted = item.accepted
        assert accepted is not None and accepted.message_id is not None
        try:
            if item.customer_name is not None and accepted.conversation_id is not None:
                await self._fill_customer_name(accepted.conversation_id, item.customer_name)
            return await self._process(accepted.platform, accepted.thread_key,
                                       accepted.message_id, item.sink,
                                       truncated=accepted.truncated)
        finally:
            self._queued.pop(accepted.message_id, None)

    async def _fill_customer_name(self, conversation_id: int,
                                  lookup: Callable[[], Awaitable[str]]) -> None:
        try:
            name = await lookup()
        except Exception as exc:  # a display name is a nicety: answer without it
            log.warning("customer name lookup failed: %s", type(exc).__name__)
            return
        if name:
            await self.store.update_conversation(conversation_id, customer_name=name)

    async def _process(self, platform: str, thread_key: str, message_id: int,
                       sink: ReplySink | None, *, truncated: bool = False) -> Reply:
        """Answer one stored message under its thread's lock, if nobody has yet."""
        started = time.perf_counter()
        async with self._thread(platform, thread_key):
            user_msg = await self.store.message(message_id)
            conv = (await self.store.conversation(user_msg.conversation_id)
                    if user_msg is not None else None)
            if user_msg is None or conv is None or user_msg.state != "received":
                # another process (or recovery) answered it meanwhile
                return metrics.count_reply(platform, Reply(
                    conv.id if conv else None, Outcome.DUPLICATE,
                    language=conv.language if conv else "en",
                ))
            token = logs.conversation_id.set(conv.id)
            try:
                with metrics.turn() as stats:
                    reply = await self._respond(conv, user_msg, conv.language, sink, truncated)
                metrics.count_reply(platform, reply)
                extra: dict[str, Any] = {
                    "platform": platform,
                    "outcome": str(reply.outcome),
                    "latency_ms": round((time.perf_counter() - started) * 1000, 1),
                    "llm_ms": round(stats.llm_ms, 1),
                    "prompt_tokens": stats.prompt_tokens,
                    "completion_tokens": stats.completion_tokens,
                }
                if self.settings.log_message_text:
                    extra["text"] = user_msg.text
                log.info("message processed", extra=extra)
                return reply
            finally:
                logs.conversation_id.reset(token)

    @contextlib.asynccontextmanager
    async def _thread(self, platform: str, thread_key: str) -> AsyncIterator[None]:
        """One thread at a time: in this process, then across processes (PostgreSQL)."""
        with metrics.lock_queue() as slot:
            async with self.locks.hold((platform, thread_key)), self.store.thread_lock(
                platform, thread_key
            ):
                slot.acquired()
                yield

    def _clean(self, raw: str) -> tuple[str, bool]:
        """Drop control characters and cap the length, so nothing hostile reaches storage."""
        text = "".join(
            ch for ch in raw if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs")
        ).strip()
        limit = self.settings.max_message_chars
        if len(text) > limit:
            return text[:limit], True
        return text, False

    async def _respond(
        self,
        conv: Conversation,
        user_msg: Message,
        language: str,
        sink: ReplySink | None,
        truncated: bool,
    ) -> Reply:
        text = user_msg.text
        if conv.status in (Status.WAITING, Status.HUMAN):
            await self.store.set_message_state(user_msg.id, "relayed")
            await self._desk_call(conv.platform, "relay_to_staff", conv.id, text)
            return Reply(conv.id, Outcome.RELAYED, language=language)

        self.detector.refresh()
        detection = self.detector.detect(text)
        if detection.handoff:
            return await self._hand_off(
                conv, user_msg, reason=detection.reason, actor=f"customer:{conv.customer_id}",
                language=language, sink=sink,
            )

        # after the handoff check: a limited customer can still ask for a person
        verdict = await self.limits.check(self.store, conv.platform, conv.customer_id)
        if verdict is not None:
            return await self._limited(conv, user_msg, verdict, language, sink)

        hits = await self._search(text)
        confident = [h for h in hits if h.score >= self.settings.faq_confidence]
        note = self.prompts.message("message_truncated", language,
                                    limit=self.settings.max_message_chars) if truncated else ""

        if self.llm is None:
            if confident:
                best = confident[0]
                return await self._answer(
                    conv, user_msg, _with_note(note, best.entry.answer.strip()), Outcome.FAQ,
                    language, sink, sources=[best],
                )
            return await self._fail(conv, user_msg, Outcome.DONT_KNOW, language, sink, note)

        snippets = confident or hits[:1]
        try:
            answer, completion, sent_id = await self._ask_llm(
                conv, user_msg, language, snippets, sink, note
            )
        except LLMError as exc:
            log.warning("LLM could not answer: %s", exc, extra={"error": type(exc).__name__})
            return await self._fail(conv, user_msg, Outcome.LLM_FAILED, language, sink, note)
        answer, wants_handoff = split_marker(answer)
        if wants_handoff:
            return await self._hand_off(
                conv, user_msg, reason="llm", actor="bot", language=language, sink=sink,
                text=answer or None, already_sent=sent_id,
            )
        if not answer.strip():
            return await self._fail(conv, user_msg, Outcome.DONT_KNOW, language, sink, note)
        return await self._answer(
            conv, user_msg, _with_note(note, answer), Outcome.LLM, language, sink,
            sources=snippets, completion=completion, already_sent=sent_id,
        )

    async def _limited(
        self, conv: Conversation, user_msg: Message, verdict: Verdict, language: str,
        sink: ReplySink | None,
    ) -> Reply:
        """Past a limit: one notice per window, then silence; the LLM is never asked."""
        metrics.LIMITED.labels(conv.platform, verdict.kind).inc()
        log.info("customer limited", extra={"limit": verdict.kind, "notified": verdict.notify})
        text: str | None = None
        message_id = None
        if verdict.notify:
            text = self._words(verdict.message, language, conv)
            message_id = await self._deliver(
                conv.id, user_msg, text, sink, outcome=Outcome.LIMITED, author=verdict.author
            )
        await self.store.set_message_state(user_msg.id, "limited")
        return Reply(conv.id, Outcome.LIMITED, text=text if message_id else None,
                     language=language, message_id=message_id)

    async def _search(self, text: str) -> list[Hit]:
        now = time.monotonic()
        if now - self._knowledge_checked >= self.settings.knowledge_reload_seconds:
            self._knowledge_checked = now
            await self.knowledge.refresh()
        return await self.knowledge.search(text, k=self.settings.faq_top_k)

    async def _ask_llm(
        self,
        conv: Conversation,
        user_msg: Message,
        language: str,
        hits: list[Hit],
        sink: ReplySink | None,
        note: str,
    ) -> tuple[str, Completion, str | bool | None]:
        """Ask the model; stream into the sink when streaming is on.

        Returns the answer, the completion and, when it was already streamed to the customer,
        the platform message id (or ``True`` when the sink gave none)."""
        assert self.llm is not None
        try:
            system = self.prompts.render_system(
                conv.platform,
                # the customer picks their display name: one short line, never instructions
                customer_name=" ".join(conv.customer_name.split())[:64],
                language=language,
                now=datetime.now(ZoneInfo(self.settings.timezone)),
                snippets=[
                    Snippet(h.entry.id, h.entry.question, h.entry.answer, h.entry.url)
                    for h in hits
                ],
                handoff_marker=HANDOFF_MARKER,
                business_hours=self.settings.business_hours,
            )
        except Exception as exc:  # broken since start, no good version to fall back on
            raise PromptUnavailable(f"system prompt does not render: {exc}") from exc
        history = await self.store.history(conv.id, before_id=user_msg.id)
        messages = [
            {"role": "system", "content": system},
            *trim_history(history, self.settings.history_token_budget),
            {"role": "user", "content": user_msg.text},
        ]
        if sink is None or not self.settings.llm_stream:
            completion = await self.llm.complete(messages)
            return completion.text, completion, None
        return await self._stream(conv.id, messages, sink, note)

    async def _stream(
        self, conversation_id: int, messages: list[dict[str, str]], sink: ReplySink, note: str
    ) -> tuple[str, Completion, str | bool | None]:
        assert self.llm is not None
        done = object()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def produce() -> Completion:
            try:
                return await self.llm.complete(messages, on_delta=queue.put)  # type: ignore[union-attr]
            finally:
                queue.put_nowait(done)

        producer = asyncio.create_task(produce())
        first = await queue.get()
        if first is done:  # nothing streamed: errors surface here, the answer goes out whole
            completion = await producer
            return completion.text, completion, None
        if not await self._bot_owns(conversation_id):
            completion = await producer
            return completion.text, completion, None  # _answer will suppress it

        marker = MarkerStreamFilter()

        async def chunks() -> AsyncIterator[str]:
            if note:
                yield note + "\n\n"
            item = first
            while item is not done:
                visible = marker.feed(item)
                if visible:
                    yield visible
                item = await queue.get()
            tail = marker.flush()
            if tail:
                yield tail

        sent_id = await sink.send_stream(chunks())
        completion = await producer
        return completion.text, completion, sent_id if sent_id is not None else True

    # --- outcomes -------------------------------------------------------------------------

    async def _answer(
        self,
        conv: Conversation,
        user_msg: Message,
        text: str,
        outcome: Outcome,
        language: str,
        sink: ReplySink | None,
        *,
        sources: list[Hit],
        completion: Completion | None = None,
        already_sent: str | bool | None = None,
        conversation_values: dict[str, Any] | None = None,
    ) -> Reply:
        cited = [Source(h.entry.id, h.entry.question, h.entry.url, round(h.score, 4))
                 for h in sources]
        reply = Reply(conv.id, outcome, text=text, sources=cited, language=language)
        usage: dict[str, Any] = {}
        if completion is not None:
            usage = {
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "usage_estimated": completion.usage_estimated,
            }
        if outcome in (Outcome.FAQ, Outcome.LLM) and conv.failures:
            conversation_values = {**(conversation_values or {}), "failures": 0}
        delivered = await self._deliver(
            conv.id, user_msg, text, sink, outcome=outcome,
            sources={"ids": [s.id for s in cited]}, already_sent=already_sent,
            conversation_values=conversation_values, **usage,
        )
        if delivered is None:
            reply.text = None
            reply.outcome = Outcome.RELAYED
            return reply
        reply.message_id = delivered
        return reply

    async def _fail(
        self,
        conv: Conversation,
        user_msg: Message,
        outcome: Outcome,
        language: str,
        sink: ReplySink | None,
        note: str,
    ) -> Reply:
        """Don't know, or the LLM failed: say so honestly, offer a human, and after N in a row
        hand the thread over."""
        failures = conv.failures + 1
        values: dict[str, Any] = {"failures": failures}
        if outcome is Outcome.LLM_FAILED:
            values["bot_failed"] = True
        conv.failures = failures
        if failures >= self.settings.failures_before_handoff:
            return await self._hand_off(
                conv, user_msg, reason=f"repeated_failure:{outcome}", actor="bot",
                language=language, sink=sink, conversation_values=values,
            )
        name = "llm_failed" if outcome is Outcome.LLM_FAILED else "dont_know"
        text = _with_note(note, self._words(name, language, conv))
        return await self._answer(conv, user_msg, text, outcome, language, sink, sources=[],
                                  conversation_values=values)

    async def _hand_off(
        self,
        conv: Conversation,
        user_msg: Message | None,
        *,
        reason: str,
        actor: str,
        language: str,
        sink: ReplySink | None,
        text: str | None = None,
        already_sent: str | bool | None = None,
        conversation_values: dict[str, Any] | None = None,
    ) -> Reply:
        moved = await self.store.transition(
            conv.id, to=Status.WAITING, allowed_from=(Status.BOT,), actor=actor, reason=reason,
            handoff_reason=reason, waiting_since=datetime.now(UTC), wait_notices=0,
        )
        if text is None:
            text = self._handoff_notice(language, conv)
        message_id = await self._deliver(
            conv.id, user_msg, text, sink, outcome=Outcome.HANDOFF, check_owner=False,
            already_sent=already_sent, conversation_values=conversation_values,
        )
        if moved is not None:
            metrics.HANDOFFS.labels(metrics.handoff_trigger(reason)).inc()
            log.info("handed off", extra={"reason": reason, "actor": actor})
            await self._desk_call(conv.platform, "handoff_requested", conv.id, reason)
        return Reply(conv.id, Outcome.HANDOFF, text=text, handed_off=True, language=language,
                     message_id=message_id)

    def _handoff_notice(self, language: str, conv: Conversation) -> str:
        now = datetime.now(UTC)
        if self.hours.is_open(now):
            return self._words("handoff_requested", language, conv)
        next_open = self.hours.next_open(now)
        if next_open is not None:
            next_open = next_open.astimezone(ZoneInfo(self.settings.timezone))
        return self._words("handoff_after_hours", language, conv, next_open=next_open)

    def _words(self, name: str, language: str, conv: Conversation | None = None,
               **context: Any) -> str:
        return self.prompts.message(
            name, language, customer_name=conv.customer_name if conv else "", **context
        )

    async def _deliver(
        self,
        conversation_id: int,
        user_msg: Message | None,
        text: str,
        sink: ReplySink | None,
        *,
        outcome: Outcome,
        check_owner: bool = True,
        already_sent: str | bool | None = None,
        conversation_values: dict[str, Any] | None = None,
        **fields: Any,
    ) -> int | None:
        """Store the reply and re-check ownership (one transaction), send, then mark both
        turns done (another), applying ``conversation_values`` with it.

        Returns the stored reply's id, or ``None`` when a human took the thread meanwhile."""
        user_id = user_msg.id if user_msg is not None else None
        reply_id = await self.store.stage_reply(
            conversation_id, user_id, text, require_bot=check_owner and not already_sent,
            outcome=str(outcome), **fields,
        )
        if reply_id is None:
            log.info("reply suppressed: a human owns the thread")
            return None
        platform_id: str | None = already_sent if isinstance(already_sent, str) else None
        if sink is not None and not already_sent:
            platform_id = await sink.send(text, feedback_id=reply_id if outcome.rated else None)
        await self.store.finish_reply(conversation_id, reply_id, user_id, platform_id,
                                      conversation_values)
        return reply_id

    async def _bot_owns(self, conversation_id: int) -> bool:
        conv = await self.store.conversation(conversation_id)
        return conv is not None and conv.status == Status.BOT

    async def _desk_call(self, platform: str, method: str, conversation_id: int,
                         *args: Any) -> None:
        desk = self._desks.get(platform)
        if desk is None:
            return
        view = await self.get_conversation(conversation_id)
        if view is None:
            return
        try:
            await getattr(desk, method)(view, *args)
        except Exception:  # staff-side trouble must not break the customer's reply
            log.exception("staff desk %s.%s failed", platform, method)

    async def _notify_customer(self, conversation_id: int, name: str, **context: Any) -> bool:
        view = await self.get_conversation(conversation_id)
        if view is None or view.platform not in self._sinks:
            return False
        text = self.prompts.message(name, view.language, customer_name=view.customer_name,
                                    **context)
        await self.store.add_message(conversation_id, "assistant", text, "sent",
                                     outcome="notice")
        try:
            await self._sinks[view.platform](view).send(text)
        except Exception:
            log.exception("could not notify the customer")
            return False
        metrics.MESSAGES_OUT.labels(view.platform).inc()
        return True

    # --- staff actions ----------------------------------------------------------------------

    async def take_over(self, conversation_id: int, actor: str) -> bool:
        conv = await self.store.transition(
            conversation_id, to=Status.HUMAN, allowed_from=(Status.BOT, Status.WAITING),
            actor=actor, reason="take over", assignee=actor, waiting_since=None,
        )
        if conv is not None:
            await self._desk_call(conv.platform, "status_changed", conv.id, actor)
        return conv is not None

    async def hand_back(self, conversation_id: int, actor: str) -> bool:
        conv = await self.store.transition(
            conversation_id, to=Status.BOT, allowed_from=(Status.HUMAN, Status.WAITING),
            actor=actor, reason="hand back", assignee=None, waiting_since=None, failures=0,
            bot_failed=False,
        )
        if conv is None:
            return False
        await self._desk_call(conv.platform, "status_changed", conv.id, actor)
        await self._notify_customer(conv.id, "handed_back")
        return True

    async def close(self, conversation_id: int, actor: str, *, notify: bool = True) -> bool:
        conv = await self.store.transition(
            conversation_id, to=Status.CLOSED, allowed_from=OPEN_STATES, actor=actor,
            reason="close", waiting_since=None,
        )
        if conv is None:
            return False
        await self._desk_call(conv.platform, "status_changed", conv.id, actor)
        if notify:
            await self._notify_customer(conv.id, "closed")
        return True

    async def request_handoff(
        self,
        platform: str,
        thread_key: str,
        customer_id: str,
        reason: str,
        actor: str,
        *,
        sink: ReplySink | None = None,
        language: str | None = None,
        customer_name: str = "",
    ) -> ConversationView:
        """An explicit request (``/human``): open the conversation if needed and hand it over."""
        async with self._thread(platform, thread_key):
            lang = language or self.settings.default_language
            conv = await self.store.open_conversation(
                platform=platform, thread_key=thread_key, customer_id=customer_id, language=lang,
                customer_name=customer_name,
            )
            if conv.status == Status.BOT:
                await self._hand_off(conv, None, reason=reason, actor=actor,
                                     language=conv.language, sink=sink)
        view = await self.get_conversation(conv.id)
        assert view is not None
        return view

    async def staff_message(self, conversation_id: int, actor: str, text: str) -> None:
        """A staff member wrote to the customer: store it, and the writer owns the thread."""
        conv = await self.store.conversation(conversation_id)
        if conv is None:
            return
        if conv.status in (Status.BOT, Status.WAITING):
            await self.take_over(conversation_id, actor)
        await self.store.add_message(conversation_id, "staff", text, "sent", author=actor)

    async def new_conversation(self, platform: str, thread_key: str, actor: str) -> None:
        async with self._thread(platform, thread_key):
            conv = await self.store.find_open(platform, thread_key)
            if conv is not None:
                await self.close(conv.id, actor, notify=False)

    async def record_feedback(self, message_id: int, helpful: bool, actor: str,
                              comment: str | None = None) -> bool:
        """A customer's vote on one bot answer; False unless ``actor`` (``<platform>:<user id>``)
        is the customer of that answer's conversation. A later vote replaces an earlier one."""
        found = await reports.feedback_target(self.store, message_id)
        platform, _, user = actor.partition(":")
        if found is None or (found[1].platform, found[1].customer_id) != (platform, user):
            log.warning("feedback refused", extra={"actor": actor, "message_id": message_id})
            return False
        message, _conv = found
        await reports.save_feedback(
            self.store, message, helpful=helpful, actor=actor,
            comment=(comment or "").strip()[:2000] or None,
        )
        metrics.FEEDBACK.labels(platform, "yes" if helpful else "no").inc()
        log.info("feedback recorded", extra={"message_id": message_id, "helpful": helpful,
                                             "conversation_id": message.conversation_id})
        return True

    async def claim_event(self, platform: str, event_id: str) -> bool:
        return await self.store.claim_event(platform, event_id)

    async def set_staff_ref(self, conversation_id: int, ref: str | None) -> None:
        await self.store.update_conversation(conversation_id, staff_ref=ref)

    # --- reads ---------------------------------------------------------------------------------

    async def find_conversation(self, platform: str, thread_key: str) -> ConversationView | None:
        conv = await self.store.find_open(platform, thread_key)
        return await self.get_conversation(conv.id) if conv else None

    async def find_by_staff_ref(self, platform: str, ref: str) -> ConversationView | None:
        conv = await self.store.find_by_staff_ref(platform, ref)
        return await self.get_conversation(conv.id) if conv else None

    async def get_conversation(self, conversation_id: int) -> ConversationView | None:
        conv = await self.store.conversation(conversation_id)
        if conv is None:
            return None
        recent = await self.store.recent(conv.id, limit=10)
        turns = [TurnView(m.role, m.text, m.created_at) for m in recent]
        return ConversationView(
            id=conv.id,
            platform=conv.platform,
            thread_key=conv.thread_key,
            customer_id=conv.customer_id,
            customer_name=conv.customer_name,
            status=Status(conv.status),
            assignee=conv.assignee,
            language=conv.language,
            summary=_summary(conv, turns),
            staff_ref=conv.staff_ref,
            created_at=conv.created_at,
            recent=turns,
        )

    # --- background duties ------------------------------------------------------------------

    def start_background(self, interval: float = 30.0) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.check_waiting()
                except Exception:
                    log.exception("waiting-thread check failed")

        task = asyncio.create_task(loop())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def check_waiting(self, now: datetime | None = None) -> int:
        """Tell customers nobody has picked their thread up yet: once after the configured
        wait, once more after another, never again."""
        now = now or datetime.now(UTC)
        wait = timedelta(seconds=self.settings.handoff_wait_seconds)
        told = 0
        for conv in await self.store.waiting_since_before(now - wait):
            due = conv.waiting_since + wait * (conv.wait_notices + 1)  # type: ignore[operator]
            if conv.wait_notices >= 2 or due > now:
                continue
            if not await self.store.claim_wait_notice(conv.id, conv.wait_notices):
                continue  # another process sent this notice
            if await self._notify_customer(conv.id, "handoff_still_waiting"):
                told += 1
        return told

    async def recover(self, now: datetime | None = None) -> dict[str, int]:
        """Answer customer messages a crash left unanswered and wait for it (see
        :meth:`queue_recovery`); ``start`` does the same in the background."""
        items = await self.queue_recovery(now, wait=True)
        await asyncio.gather(*(item.job.future for item in items), return_exceptions=True)
        counts = {"answered": 0, "expired": 0, "skipped": 0}
        for item in items:
            counts[item.outcome or "skipped"] += 1
        return counts

    async def queue_recovery(self, now: datetime | None = None, *,
                             wait: bool = False) -> Any:
        """Queue every message stored but never answered at the front of its thread's queue,
        oldest first: young ones are answered, older than ``recover_max_age_seconds`` are
        handed to staff instead. Returns the counts queued (or the jobs, with ``wait``)."""
        max_age = timedelta(seconds=self.settings.recover_max_age_seconds)
        by_thread: dict[tuple[str, str], list[_QueuedTurn]] = {}
        skipped = 0
        for message in await self.store.unanswered():
            if message.id in self._queued:
                continue  # already on its way
            conv = await self.store.conversation(message.conversation_id)
            if conv is None or conv.platform not in self._sinks:
                skipped += 1
                continue
            item = _QueuedTurn(None, None, None, recovered=message.id)
            by_thread.setdefault((conv.platform, conv.thread_key), []).append(item)
            self._queued[message.id] = item
        queued: list[_QueuedTurn] = []
        for key, items in by_thread.items():
            runs = [functools.partial(self._recover_one, item, now, max_age) for item in items]
            for item, job in zip(items, self.queues.submit_front(key, runs), strict=True):
                item.job = job
                queued.append(item)
        if wait:
            return queued
        return {"queued": len(queued), "skipped": skipped}

    async def _recover_one(self, item: _QueuedTurn, now: datetime | None,
                           max_age: timedelta) -> Reply:
        assert item.recovered is not None
        try:
            return await self._recover_message(item, now, max_age)
        finally:
            self._queued.pop(item.recovered, None)

    async def _recover_message(self, item: _QueuedTurn, now: datetime | None,
                               max_age: timedelta) -> Reply:
        item.outcome = "skipped"
        skipped = Reply(None, Outcome.DUPLICATE)
        message = await self.store.message(item.recovered)  # type: ignore[arg-type]
        conv = await self.store.conversation(message.conversation_id) if message else None
        if message is None or conv is None:
            return skipped
        async with self._thread(conv.platform, conv.thread_key):
            conv = await self.store.conversation(message.conversation_id)
            fresh = await self.store.message(message.id)
            if conv is None or fresh is None or fresh.state != "received":
                return skipped  # another process got to it first
            if (now or datetime.now(UTC)) - message.created_at > max_age:
                await self.store.set_message_state(message.id, "expired")
                await self.store.update_conversation(conv.id, bot_failed=True)
                if conv.status == Status.BOT:
                    moved = await self.store.transition(
                        conv.id, to=Status.WAITING, allowed_from=(Status.BOT,),
                        actor="bot", reason="unanswered_after_restart",
                        handoff_reason="unanswered_after_restart",
                        waiting_since=now or datetime.now(UTC), wait_notices=0,
                    )
                    if moved is not None:
                        metrics.HANDOFFS.labels("unanswered_after_restart").inc()
                        await self._desk_call(conv.platform, "handoff_requested", conv.id,
                                              "unanswered_after_restart")
                item.outcome = "expired"
                return Reply(conv.id, Outcome.HANDOFF, handed_off=True, language=conv.language)
            view = await self.get_conversation(conv.id)
            assert view is not None
            sink = item.sink or self._sinks[conv.platform](view)
            reply = await self._respond(conv, fresh, conv.language, sink, truncated=False)
            item.outcome = "answered"
            return reply

class _QueuedTurn:
    """A stored message waiting in its thread's queue; the sink may still be swapped for a
    live one (a redelivery while recovery had queued it)."""

    __slots__ = ("accepted", "customer_name", "job", "outcome", "recovered", "sink")

    def __init__(self, accepted: Accepted | None, sink: ReplySink | None,
                 customer_name: Callable[[], Awaitable[str]] | None, *,
                 recovered: int | None = None) -> None:
        self.accepted, self.sink, self.customer_name = accepted, sink, customer_name
        self.recovered = recovered  # the message id, for a recovered message
        self.outcome: str | None = None  # recovery: answered, expired or skipped
        self.job: Job


class PromptUnavailable(LLMError):
    """The system prompt cannot be rendered, so the LLM cannot be asked."""


def _with_note(note: str, text: str) -> str:
    return f"{note}\n\n{text}" if note else text

def _summary(conv: Conversation, turns: list[TurnView]) -> str:
    questions = [t.text for t in turns if t.role == "user"]
    parts = []
    if questions:
        parts.append(f"First question: {_short(questions[0])}")
        if len(questions) > 1:
            parts.append(f"Latest: {_short(questions[-1])}")
    if conv.handoff_reason:
        parts.append(f"Reason: {conv.handoff_reason}")
    if conv.bot_failed:
        parts.append("The bot failed to answer.")
    return "\n".join(parts) or "(no messages yet)"

def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

