"""What every part of the engine shares: settings, store, prompts, the adapters' desks and sinks,
the per-thread lock, and read-only views of conversations for adapters."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from supportbot import metrics
from supportbot.config import Settings
from supportbot.engine.handoff import staff_events, with_staff
from supportbot.engine.locks import KeyedLocks
from supportbot.engine.streams import Streams
from supportbot.engine.types import ConversationView, ReplySink, StaffDesk, Status, TurnView
from supportbot.handoff import BusinessHours
from supportbot.prompts import PromptLibrary
from supportbot.storage import Store
from supportbot.storage.models import Conversation

log = logging.getLogger("supportbot.engine")

SinkFactory = Callable[[ConversationView], ReplySink]


@dataclass
class Core:
    settings: Settings
    store: Store
    prompts: PromptLibrary
    hours: BusinessHours
    locks: KeyedLocks = field(default_factory=KeyedLocks)
    streams: Streams = field(default_factory=Streams)
    desks: dict[str, StaffDesk] = field(default_factory=dict)
    sinks: dict[str, SinkFactory] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def thread(self, platform: str, thread_key: str) -> AsyncIterator[None]:
        """One thread at a time: in this process, then across processes (PostgreSQL). The
        engine is the only holder of this lock."""
        with metrics.lock_queue() as slot:
            async with self.locks.hold((platform, thread_key)), self.store.thread_lock(
                platform, thread_key
            ):
                slot.acquired()
                yield

    def words(self, name: str, language: str, customer_name: str = "", **context: Any) -> str:
        return self.prompts.message(name, language, customer_name=customer_name, **context)

    def handoff_notice(self, language: str, customer_name: str = "") -> str:
        """"A person will reply", or when staff are back if they are not in now."""
        now = datetime.now(UTC)
        if self.hours.is_open(now):
            return self.words("handoff_requested", language, customer_name)
        next_open = self.hours.next_open(now)
        if next_open is not None:
            next_open = next_open.astimezone(ZoneInfo(self.settings.timezone))
        return self.words("handoff_after_hours", language, customer_name, next_open=next_open)

    def sink_for(self, view: ConversationView) -> ReplySink | None:
        factory = self.sinks.get(view.platform)
        return factory(view) if factory is not None else None

    async def desk_call(self, platform: str, method: str, conversation_id: int,
                        *args: Any) -> Any:
        """Tell the platform's staff desk; staff-side trouble never breaks a customer's turn."""
        desk = self.desks.get(platform)
        if desk is None:
            return None
        view = await self.view(conversation_id)
        if view is None:
            return None
        try:
            return await getattr(desk, method)(view, *args)
        except Exception:
            log.exception("staff desk %s.%s failed", platform, method)
            return None

    async def view(self, conversation_id: int) -> ConversationView | None:
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
            summary=summary(conv, turns),
            staff_ref=conv.staff_ref,
            created_at=conv.created_at,
            recent=turns,
            handoff_reason=describe_reason(conv.handoff_reason),
            with_staff=with_staff(conv.status),
            staff_actions=tuple(str(e) for e in staff_events(conv.status)),
        )


def summary(conv: Conversation, turns: list[TurnView]) -> str:
    """What staff read first: the questions; the handoff reason is shown once, by the desk."""
    questions = [t.text for t in turns if t.role == "user"]
    parts = []
    if questions:
        parts.append(f"First question: {_short(questions[0])}")
        if len(questions) > 1:
            parts.append(f"Latest: {_short(questions[-1])}")
    if conv.bot_failed:
        parts.append("The bot failed to answer.")
    return "\n".join(parts) or "(no messages yet)"


_REASONS = {
    "llm": "the bot decided a person should answer",
    "unanswered_after_restart": "a message went unanswered (the bot restarted)",
    "repeated_failure:dont_know": "the bot could not answer several times in a row",
    "repeated_failure:llm_failed": "the AI service failed several times in a row",
    "customer asked for a person": "asked for a person (/human)",
    "customer wrote while waiting": "the customer wrote while waiting",
}


def describe_reason(reason: str | None) -> str:
    """A handoff reason in words for staff, never a raw pattern or code."""
    if not reason:
        return ""
    if reason in _REASONS:
        return _REASONS[reason]
    kind, _, detail = reason.partition(":")
    if kind == "asked" and detail:  # asked:<the customer's words>
        return f"asked for a person: '{_short(detail, 120)}'"
    if kind == "llm" and detail:  # llm:<the model's reason>
        return f"the bot decided a person should answer: {_short(detail, 160)}"
    if kind == "repeated_failure":
        return "the bot could not answer several times in a row"
    return reason


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
