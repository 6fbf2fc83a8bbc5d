"""The conversation engine every platform shares.

One customer message: claim its event id and store it (one transaction), then under the thread's
lock decide who answers (staff, the FAQ, the LLM), re-check that the bot still owns the thread,
and deliver. A failure after the store never loses the message: it stays ``received`` and is
recovered on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import unicodedata
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from supportbot import logs, metrics
from supportbot.config import Settings
from supportbot.engine.history import trim_history
from supportbot.engine.locks import Admission, KeyedLocks
from supportbot.engine.types import (
    ConversationView,
    IncomingMessage,
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
# messages that begin preparation per event-loop iteration (see Admission): ~10 ms of work, so
# in a burst, network work (LLM requests out, replies in, acks) runs at least that often
ADMISSION_PER_TURN = 8

class Engine:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        knowledge: KnowledgeBase,
        prompts: PromptLibrary,
        detector: HandoffDetector,
        llm: LLMClient | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.knowledge = knowledge
        self.prompts = prompts
        self.detector = detector
        self.llm = llm
        self.hours = BusinessHours.parse(settings.business_hours, settings.timezone)
        self.locks = KeyedLocks()
        self.admission = Admission(ADMISSION_PER_TURN)
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
        detector = HandoffDetector.load(settings.prompts_dir / "handoff_phrases.yaml")
        llm = LLMClient.from_settings(settings) if settings.llm_configured else None
        return cls(settings, store, knowledge, prompts, detector, llm)

    async def aclose(self) -> None:
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

    async def handle(self, msg: IncomingMessage, sink: ReplySink | None = None) -> Reply:
        started = time.perf_counter()
        metrics.MESSAGES_IN.labels(msg.platform).inc()
        text, truncated = self._clean(msg.text)
        if not text:
            return metrics.count_reply(msg.platform, Reply(None, Outcome.IGNORED))
        language = detect_language(text, msg.language, default=self.settings.default_language)
        async with self._thread(msg.platform, msg.thread_key):
            await self.admission.wait()
            accepted = await self.store.accept(
                platform=msg.platform,
                event_id=msg.message_id,
                thread_key=msg.thread_key,
                customer_id=msg.customer_id,
                customer_name=msg.customer_name,
                language=language,
                text=text,
            )
            if accepted is None:
                log.info("duplicate delivery ignored",
                         extra={"platform": msg.platform, "event_id": msg.message_id})
                return metrics.count_reply(
                    msg.platform, Reply(None, Outcome.DUPLICATE, language=language)
                )
            conv, user_msg = accepted
            token = logs.conversation_id.set(conv.id)
            try:
                with metrics.turn() as stats:
                    reply = await self._respond(conv, user_msg, language, sink, truncated)
                metrics.count_reply(msg.platform, reply)
                extra: dict[str, Any] = {
                    "platform": msg.platform,
                    "outcome": str(reply.outcome),
                    "latency_ms": round((time.perf_counter() - started) * 1000, 1),
                    "llm_ms": round(stats.llm_ms, 1),
                    "prompt_tokens": stats.prompt_tokens,
                    "completion_tokens": stats.completion_tokens,
                }
                if self.settings.log_message_text:
                    extra["text"] = text
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
        """Answer customer messages a crash left unanswered; hand older ones to staff."""
        now = now or datetime.now(UTC)
        max_age = timedelta(seconds=self.settings.recover_max_age_seconds)
        counts = {"answered": 0, "expired": 0, "skipped": 0}
        for message in await self.store.unanswered():
            conv = await self.store.conversation(message.conversation_id)
            if conv is None or conv.platform not in self._sinks:
                counts["skipped"] += 1
                continue
            async with self._thread(conv.platform, conv.thread_key):
                conv = await self.store.conversation(message.conversation_id)
                fresh = await self.store.message(message.id)
                if conv is None or fresh is None or fresh.state != "received":
                    counts["skipped"] += 1  # another process got to it first
                    continue
                if now - message.created_at > max_age:
                    await self.store.set_message_state(message.id, "expired")
                    await self.store.update_conversation(conv.id, bot_failed=True)
                    if conv.status == Status.BOT:
                        moved = await self.store.transition(
                            conv.id, to=Status.WAITING, allowed_from=(Status.BOT,),
                            actor="bot", reason="unanswered_after_restart",
                            handoff_reason="unanswered_after_restart",
                            waiting_since=now, wait_notices=0,
                        )
                        if moved is not None:
                            metrics.HANDOFFS.labels("unanswered_after_restart").inc()
                            await self._desk_call(conv.platform, "handoff_requested", conv.id,
                                                  "unanswered_after_restart")
                    counts["expired"] += 1
                    continue
                view = await self.get_conversation(conv.id)
                assert view is not None
                await self._respond(conv, message, conv.language, self._sinks[conv.platform](view),
                                    truncated=False)
                counts["answered"] += 1
        return counts

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

