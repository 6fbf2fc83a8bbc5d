"""The conversation engine every platform shares: the public face of ``supportbot.engine``.

A door stores a customer's message (:meth:`Engine.accept`, one short transaction) before the
platform hears "OK", and hands it to :meth:`Engine.dispatch`; the answer is produced in the
background, one message at a time per thread (:mod:`.queues`), under the thread's lock, by the
turn (:mod:`.turn`). Who owns a conversation changes only through the handoff table
(:mod:`.handoff`, applied by :mod:`.transitions`): customer requests, the LLM, failures, staff
actions (:mod:`.staff`), the waiting timer and recovery (:mod:`.recovery`) alike. A failure after
the store never loses the message: it stays ``received`` and is answered again by the sweep or
after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
import unicodedata
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from supportbot import logs, metrics
from supportbot.config import Settings
from supportbot.defaults import resolve
from supportbot.engine.answering import Answering, PromptUnavailable
from supportbot.engine.core import Core, SinkFactory
from supportbot.engine.delivery import Delivery, ResumedSink
from supportbot.engine.queues import ThreadQueues
from supportbot.engine.recovery import Expire, QueuedTurn, Recovery
from supportbot.engine.staff import StaffActions
from supportbot.engine.transitions import Transitions
from supportbot.engine.turn import Turn, TurnRunner
from supportbot.engine.types import (
    Accepted,
    ConversationView,
    IncomingMessage,
    Intake,
    Outcome,
    Reply,
    ReplySink,
    StaffDesk,
    StaffWrote,
)
from supportbot.handoff import BusinessHours, HandoffDetector
from supportbot.knowledge import Hit, KnowledgeBase
from supportbot.language import detect_language
from supportbot.limits import Limits
from supportbot.llm import LLMClient
from supportbot.prompts import PromptLibrary
from supportbot.storage import Store, reports

log = logging.getLogger("supportbot.engine")

__all__ = ["Engine", "PromptUnavailable", "SinkFactory"]


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
        self.settings, self.store, self.knowledge = settings, store, knowledge
        self.prompts, self.detector, self.llm = prompts, detector, llm
        self.core = Core(settings, store, prompts,
                         BusinessHours.parse(settings.business_hours, settings.timezone))
        self.limits = Limits(settings.rate_limit_per_minute, settings.daily_token_budget)
        self.queues = ThreadQueues(settings.max_concurrent_turns)
        self.delivery = Delivery(self.core)
        self.transitions = Transitions(self.core, self.delivery)
        self.staff = StaffActions(self.core, self.delivery, self.transitions)
        self.turns = TurnRunner(self.core, self.delivery, self.transitions, detector,
                                self.limits, self._search,
                                Answering(self.core, llm) if llm is not None else None)
        self._queued: dict[int, QueuedTurn] = {}  # stored message id -> its place in a queue
        self.recovery = Recovery(self.core, self.delivery, self.transitions, self.queues,
                                 self._queued, self._run)
        self._knowledge_checked = 0.0
        self._background: set[asyncio.Task[Any]] = set()
        self._started = False

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
        self.core.desks[platform] = desk

    def register_sink_factory(self, platform: str, factory: SinkFactory) -> None:
        """How the engine reaches a customer unprompted (hand-back notice, waiting notice,
        answers recovered after a restart, staff replies it delivers)."""
        self.core.sinks[platform] = factory

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
        async with self.core.locks.hold(("accept", msg.platform, msg.thread_key)):
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
                queued.sink, queued.recovered = sink, False
            return queued.job.future
        item = QueuedTurn(accepted.message_id, sink, accepted=accepted,
                          customer_name=customer_name)
        item.job = self.queues.submit((accepted.platform, accepted.thread_key),
                                      lambda: self._run_dispatched(item))
        self._queued[accepted.message_id] = item
        return item.job.future

    async def handle(self, msg: IncomingMessage, sink: ReplySink | None = None) -> Reply:
        """Store and answer one message, waiting for the answer (terminal, tests)."""
        return await self.dispatch(await self.accept(msg), sink)

    def backlog(self) -> int:
        """Messages waiting for or being answered in this process (for ``/healthz``)."""
        return self.queues.backlog

    async def _run_dispatched(self, item: QueuedTurn) -> Reply:
        accepted = item.accepted
        assert accepted is not None
        try:
            if item.customer_name is not None and accepted.conversation_id is not None:
                await self._fill_customer_name(accepted.conversation_id, item.customer_name)
            return await self._run(item, accepted.platform, accepted.thread_key, None)
        finally:
            self._queued.pop(item.message_id, None)

    async def _fill_customer_name(self, conversation_id: int,
                                  lookup: Callable[[], Awaitable[str]]) -> None:
        try:
            name = await lookup()
        except Exception as exc:  # a display name is a nicety: answer without it
            log.warning("customer name lookup failed: %s", type(exc).__name__)
            return
        if name:
            await self.store.update_conversation(conversation_id, customer_name=name)

    async def _run(self, item: QueuedTurn, platform: str, thread_key: str,
                   expire: Expire | None) -> Reply:
        """Answer one stored message under its thread's lock, if nobody has yet."""
        started = time.perf_counter()
        async with self.core.thread(platform, thread_key):
            message = await self.store.message(item.message_id)
            conv = (await self.store.conversation(message.conversation_id)
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
            streamed = await self.store.streamed_into(message.id) if sink is not None else None
            if sink is not None and streamed:  # a crash cut its reply's stream: finish that one
                sink = ResumedSink(sink, streamed, self.prompts.message(
                    "answer_resumed", conv.language))
            truncated = len(message.text) >= self.settings.max_message_chars
            turn = Turn(conv, message, sink, conv.language, note=self.prompts.message(
                "message_truncated", conv.language, limit=self.settings.max_message_chars,
            ) if truncated else "")
            token = logs.conversation_id.set(conv.id)
            try:
                if expire is not None and (expired := await expire(turn)) is not None:
                    item.outcome = "expired"
                    return expired
                with metrics.turn() as stats:
                    reply = await self.turns.respond(turn)
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
                if self.settings.log_message_text:
                    extra["text"] = message.text
                log.info("message processed", extra=extra)
                return reply
            finally:
                logs.conversation_id.reset(token)

    def _clean(self, raw: str) -> tuple[str, bool]:
        """Cap the length, then drop control characters, so nothing hostile reaches storage.
        The cap comes first: a 10 MB message must not be walked character by character on the
        event loop (the window leaves room for control characters and spaces to drop)."""
        limit = self.settings.max_message_chars
        window = raw[: 4 * limit + 64]
        text = "".join(
            ch for ch in window if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs")
        ).strip()
        if len(text) > limit:
            return text[:limit], True
        return text, len(raw) > len(window)

    async def _search(self, text: str) -> list[Hit]:
        now = time.monotonic()
        if now - self._knowledge_checked >= self.settings.knowledge_reload_seconds:
            self._knowledge_checked = now
            await self.knowledge.refresh()
        return await self.knowledge.search(text, k=self.settings.faq_top_k)

    # --- background duties ------------------------------------------------------------------

    def start(self, *, interval: float = 30.0) -> None:
        """Begin the background duties: recovery of messages stored but never answered (a
        crash), then every ``interval`` the waiting-thread notices and the sweep of messages
        left unanswered. Returns at once; serving never waits for it.

        Until the unanswered messages are listed (one query), queued work is held back, so a
        new message for a thread being recovered waits behind that thread's recovery."""
        if self._started:
            return
        self._started = True
        self.queues.pause()
        self._spawn(self._recover_in_background())
        self._spawn(self.recovery.run_duties(
            interval, timedelta(seconds=self.settings.sweep_after_seconds)
        ))

    def start_background(self, interval: float = 30.0) -> None:
        """The waiting notices and the sweep only (recovery is :meth:`start`'s)."""
        self._spawn(self.recovery.run_duties(
            interval, timedelta(seconds=self.settings.sweep_after_seconds)
        ))

    async def _recover_in_background(self) -> None:
        try:
            queued = await self.recovery.queue()
            if queued:
                log.info("recovered unanswered messages", extra={"queued": len(queued)})
        except Exception:
            log.exception("could not list unanswered messages")
        finally:
            self.queues.resume()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def recover(self, now: datetime | None = None) -> dict[str, int]:
        """Answer the messages a crash left unanswered and wait for it (``start`` does the
        same in the background); older ones go to staff."""
        items = await self.recovery.queue(now)
        await asyncio.gather(*(item.job.future for item in items), return_exceptions=True)
        counts = {"answered": 0, "expired": 0, "skipped": 0}
        for item in items:
            counts[item.outcome or "skipped"] += 1
        return counts

    async def check_waiting(self, now: datetime | None = None) -> int:
        return await self.recovery.check_waiting(now)

    # --- staff actions (and a customer's /human, /new) ----------------------------------------

    async def take_over(self, conversation_id: int, actor: str) -> bool:
        return await self.staff.take_over(conversation_id, actor)

    async def hand_back(self, conversation_id: int, actor: str) -> bool:
        return await self.staff.hand_back(conversation_id, actor)

    async def close(self, conversation_id: int, actor: str, *, notify: bool = True) -> bool:
        return await self.staff.close(conversation_id, actor, notify=notify)

    async def staff_message(self, conversation_id: int, actor: str, text: str, *,
                            deliver: bool = False, event_id: str | None = None) -> StaffWrote:
        """See :meth:`StaffActions.message`: notes stay internal, replies take over."""
        return await self.staff.message(conversation_id, actor, text, deliver=deliver,
                                        event_id=event_id)

    def is_staff_note(self, text: str) -> bool:
        return self.staff.is_note(text)

    async def request_handoff(
        self, platform: str, thread_key: str, customer_id: str, reason: str, actor: str, *,
        sink: ReplySink | None = None, language: str | None = None, customer_name: str = "",
    ) -> ConversationView:
        return await self.staff.request_handoff(
            platform, thread_key, customer_id, reason, actor, sink=sink,
            language=language or self.settings.default_language, customer_name=customer_name,
        )

    async def new_conversation(self, platform: str, thread_key: str, actor: str) -> None:
        await self.staff.new_conversation(platform, thread_key, actor)

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

    async def answer_language(self, message_id: int) -> str | None:
        """The language of the conversation a stored answer belongs to (for thanking a
        customer for their vote in it)."""
        found = await reports.feedback_target(self.store, message_id)
        return found[1].language if found else None

    async def claim_event(self, platform: str, event_id: str) -> bool:
        return await self.store.claim_event(platform, event_id)

    async def set_staff_ref(self, conversation_id: int, ref: str | None) -> None:
        await self.store.update_conversation(conversation_id, staff_ref=ref)

    # --- reads ---------------------------------------------------------------------------------

    async def find_conversation(self, platform: str, thread_key: str) -> ConversationView | None:
        conv = await self.store.find_open(platform, thread_key)
        return await self.core.view(conv.id) if conv else None

    async def find_by_staff_ref(self, platform: str, ref: str) -> ConversationView | None:
        conv = await self.store.find_by_staff_ref(platform, ref)
        return await self.core.view(conv.id) if conv else None

    async def get_conversation(self, conversation_id: int) -> ConversationView | None:
        return await self.core.view(conversation_id)
