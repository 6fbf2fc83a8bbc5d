"""What adapters hand the engine and what they get back.

Adapters translate platform events into :class:`IncomingMessage` and implement
:class:`ReplySink` / :class:`StaffDesk`; the engine never imports a platform SDK.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable


class Status(enum.StrEnum):
    BOT = "bot"
    WAITING = "waiting"
    HUMAN = "human"
    CLOSED = "closed"


class Outcome(enum.StrEnum):
    """How the engine dealt with one customer message."""

    FAQ = "faq"  # answered from the FAQ without an LLM
    LLM = "llm"  # answered by the LLM
    DONT_KNOW = "dont_know"  # honest "I don't know", offered a human
    LLM_FAILED = "llm_failed"  # the LLM could not answer; apologised and offered a human
    HANDOFF = "handoff"  # thread handed to staff
    RELAYED = "relayed"  # a human owns the thread: relayed to staff, no bot reply
    LIMITED = "limited"  # rate limit or budget reached
    INTERRUPTED = "interrupted"  # staff took over while the answer was streaming: cut short
    DUPLICATE = "duplicate"  # redelivery of a message already handled
    IGNORED = "ignored"  # empty or otherwise not for the bot

    @property
    def rated(self) -> bool:
        """An answer the customer may rate (the adapters' feedback buttons)."""
        return self in (Outcome.FAQ, Outcome.LLM)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file that came with a customer's message: a photo, a screenshot, a document.

    Only what the platform told us; the bytes are fetched later, through the adapter's
    :class:`supportbot.engine.attachments.FileFetcher`, when the engine needs them (vision,
    ``store_file_bytes``, a relay to staff) and never before the platform is acknowledged.
    ``kind`` is ``image`` or ``file`` (what the bot can handle) or what else it is
    (``sticker``, ``voice``, ``video``…: unsupported). ``url`` is where the platform serves it
    to the bot (Slack ``url_private``; needs the bot token), empty when an id is enough."""

    file_id: str
    kind: str
    mime: str = ""
    size: int | None = None
    filename: str = ""
    caption: str = ""
    url: str = ""


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One customer message, normalized.

    ``thread_key`` identifies the conversation within the platform and must already include the
    workspace/chat (Slack: ``team:channel:thread_ts``; Telegram: ``chat_id[:topic_id]``).
    ``message_id`` is the platform's id for this message (Slack ``channel:ts``, the same whether
    it came as ``message`` or ``app_mention``; Telegram ``update_id``); redeliveries carry the
    same id and are answered once.
    """

    platform: str
    thread_key: str
    customer_id: str
    text: str
    message_id: str
    customer_name: str = ""
    workspace: str = ""
    language: str | None = None  # a hint from the platform (Telegram language_code), may be None
    received_at: datetime | None = None
    # files that came with it (stored with the message; its ``text`` is then the caption)
    attachments: tuple[Attachment, ...] = ()


class Intake(enum.StrEnum):
    """What :meth:`Engine.accept` did with a message."""

    STORED = "stored"  # stored for the first time: it will be answered
    DUPLICATE = "duplicate"  # a redelivery of a message stored before: nothing to do
    IGNORED = "ignored"  # nothing to answer (empty once cleaned): nothing stored


@dataclass(frozen=True, slots=True)
class Accepted:
    """The result of storing one customer message (``Engine.accept``), before any answer.

    A door acknowledges the platform once it has this (any ``intake``: a duplicate or an
    ignored message needs no redelivery either) and hands it to ``Engine.dispatch``.
    """

    intake: Intake
    platform: str
    thread_key: str
    event_id: str
    language: str
    conversation_id: int | None = None
    message_id: int | None = None  # the stored customer message
    truncated: bool = False  # cut to ``max_message_chars``

    @property
    def stored(self) -> bool:
        return self.intake is Intake.STORED

    @property
    def duplicate(self) -> bool:
        return self.intake is Intake.DUPLICATE


@dataclass(slots=True)
class Source:
    """An FAQ entry an answer used."""

    id: str
    title: str
    url: str | None = None
    score: float = 0.0


@dataclass(slots=True)
class Reply:
    """The engine's result for one incoming message.

    ``text`` is ``None`` when nothing is sent to the customer (duplicate, a human owns the thread).
    """

    conversation_id: int | None
    outcome: Outcome
    text: str | None = None
    sources: list[Source] = field(default_factory=list)
    handed_off: bool = False
    language: str = "en"
    message_id: int | None = None  # our stored assistant message id (for feedback)


@runtime_checkable
class ReplySink(Protocol):
    """Where the engine delivers a reply for one conversation; implemented by each adapter.

    The engine calls it while it holds the conversation's lock and right after re-checking that
    the bot still owns the thread, so adapters must not send bot replies any other way.
    """

    async def send(self, text: str, *, feedback_id: int | None = None) -> str | None:
        """Send a complete reply; return the platform message id if there is one.

        ``feedback_id`` is the stored reply's id when the customer may rate this answer:
        adapters with rating buttons attach them to this message, so no edit is needed later.
        (Streamed answers get their buttons afterwards, from ``Reply.message_id``.)"""
        ...

    async def send_stream(self, chunks: AsyncIterator[str]) -> str | None:
        """Send a reply as it is generated (placeholder + edits). May just join and send."""
        ...


@runtime_checkable
class StaffDesk(Protocol):
    """The place staff work on a platform (a Slack channel, a Telegram staff group)."""

    async def handoff_requested(self, conversation: ConversationView, reason: str) -> None:
        """A thread went to ``waiting``: notify staff with a summary."""
        ...

    async def relay_to_staff(self, conversation: ConversationView, text: str) -> None:
        """A customer wrote while a human owns (or is awaited in) the thread."""
        ...

    async def status_changed(self, conversation: ConversationView, actor: str) -> None:
        """Taken over, handed back or closed: update the staff-side view."""
        ...


@dataclass(slots=True)
class TurnView:
    role: str  # user | assistant | staff | system
    text: str
    created_at: datetime


@dataclass(slots=True)
class ConversationView:
    """A read-only snapshot handed to adapters (never a live ORM object)."""

    id: int
    platform: str
    thread_key: str
    customer_id: str
    customer_name: str
    status: Status
    assignee: str | None
    language: str
    summary: str
    staff_ref: str | None  # adapter's handle for the staff-side thread/topic
    created_at: datetime
    recent: list[TurnView] = field(default_factory=list)
    handoff_reason: str = ""  # why it went to staff, in words
    with_staff: bool = False  # a person owns it or is awaited: customers' words go to staff
    # the staff actions the handoff table allows now (``handoff.Event`` values), for buttons
    staff_actions: tuple[str, ...] = ()


class FileUnavailable(Exception):
    """A file could not be fetched from the platform (gone, refused, 404/5xx); ``too_large``
    when it is bigger than the limit the caller asked for (nothing more was read)."""

    def __init__(self, reason: str, *, too_large: bool = False) -> None:
        super().__init__(reason)
        self.too_large = too_large


@runtime_checkable
class FileFetcher(Protocol):
    """How the engine reads a customer's file through the platform's API (the adapter's,
    with the bot's token): for vision, for keeping the bytes, for re-sharing it to staff."""

    async def fetch(self, attachment: Attachment, max_bytes: int) -> bytes:
        """The file's bytes; raises :class:`FileUnavailable` (``too_large`` past
        ``max_bytes``)."""
        ...


class StaffWrote(enum.StrEnum):
    """What became of a staff member's message (``Engine.staff_message``)."""

    SENT = "sent"  # stored; it is (or, when the desk delivers it itself, may be) sent
    NOTE = "note"  # an internal note: stored in the audit trail, never sent to the customer
    CLOSED = "closed"  # the conversation is closed: the customer did not get it
    MISSING = "missing"  # no such conversation
    DUPLICATE = "duplicate"  # a redelivery of a staff message already handled
