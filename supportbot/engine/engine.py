"""The conversation engine every platform shares: the public face of ``supportbot.engine``.

A door stores a customer's message (:meth:`Engine.accept`, one short transaction) before the
platform hears "OK", and hands it to :meth:`Engine.dispatch` (both in :mod:`.inbox`); the
answer is produced in the background, one message at a time per thread (:mod:`.queues`), under
the thread's lock, by the turn (:mod:`.turn`). Who owns a conversation changes only through the
handoff table (:mod:`.handoff`, applied by :mod:`.transitions`): customer requests, the LLM,
failures, staff actions (:mod:`.staff`), the waiting timer and recovery (:mod:`.recovery`)
alike. A failure after the store never loses the message: it stays ``received`` and is answered
again by the sweep or after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from supportbot import metrics
from supportbot.config import Settings
from supportbot.defaults import resolve
from supportbot.engine.answering import Answering, PromptUnavailable
from supportbot.engine.attachments import Files
from supportbot.engine.core import Core, SinkFactory
from supportbot.engine.delivery import Delivery
from supportbot.engine.inbox import Inbox
from supportbot.engine.queues import ThreadQueues
from supportbot.engine.recovery import Recovery
from supportbot.engine.staff import StaffActions
from supportbot.engine.transitions import Transitions
from supportbot.engine.turn import TurnRunner
from supportbot.engine.types import (
    Accepted,
    ConversationView,
    FileFetcher,
    IncomingMessage,
    Reply,
    ReplySink,
    StaffDesk,
    StaffWrote,
)
from supportbot.handoff import BusinessHours, HandoffDetector
from supportbot.handoff.model import model_path
from supportbot.knowledge import Hit, KnowledgeBase
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
        # messages with files pass through Files first (vision, limits, relay of the files)
        self.files = Files(self.core, self.delivery, self.turns.respond,
                           vision=settings.llm_vision and llm is not None)
        self.inbox = Inbox(self.core, self.queues, self.files.respond)
        self.recovery = Recovery(self.core, self.delivery, self.transitions, self.queues,
                                 self.inbox.queued, self.inbox.run)
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
        # compiled by the first turn, or in the background by start(): staff commands that
        # open an engine to list or hand back threads never need the rules
        detector = HandoffDetector.load(
            resolve(settings.prompts_dir, "handoff_phrases.yaml").path,
            lazy=True,
            model=model_path(settings.handoff_model),
        )
        llm = LLMClient.from_settings(settings) if settings.llm_configured else None
        return cls(settings, store, knowledge, prompts, detector, llm)

    async def drain(self, grace: float) -> None:
        """Before the adapters stop: answers being produced may finish (see ThreadQueues)."""
        await self.queues.drain(grace)

    async def aclose(self) -> None:
        await self.queues.aclose()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self.core.streams.close()
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

    def register_file_fetcher(self, platform: str, fetcher: FileFetcher) -> None:
        """How the engine reads the files customers send on a platform (vision, keeping the
        bytes); without one, pictures are answered as unseen."""
        self.files.register(platform, fetcher)

    # --- customer messages -------------------------------------------------------------------

    async def accept(self, msg: IncomingMessage) -> Accepted:
        """Store one customer message, and nothing else (see :meth:`Inbox.accept`): what a
        door awaits before the platform hears "OK"; raises if the store fails."""
        return await self.inbox.accept(msg)

    def dispatch(
        self,
        accepted: Accepted,
        sink: ReplySink | None = None,
        *,
        customer_name: Callable[[], Awaitable[str]] | None = None,
    ) -> asyncio.Future[Reply]:
        """Answer an accepted message in the background, in its thread's queue; never awaits
        (see :meth:`Inbox.dispatch`). Call it right after ``accept``."""
        return self.inbox.dispatch(accepted, sink, customer_name=customer_name)

    async def handle(self, msg: IncomingMessage, sink: ReplySink | None = None) -> Reply:
        """Store and answer one message, waiting for the answer (terminal, tests)."""
        return await self.dispatch(await self.accept(msg), sink)

    def backlog(self) -> int:
        """Messages waiting for or being answered in this process (for ``/healthz``)."""
        return self.queues.backlog

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
        # where replies went, written the instant the platform answers (streams.Journal)
        self.core.streams.open_journal(self.settings.data_dir)
        self.queues.pause()
        self._spawn(asyncio.to_thread(self.detector.refresh))  # before the first customer
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
