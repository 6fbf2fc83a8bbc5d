"""Tables: conversations, their messages, the audit trail of status changes, handled event ids."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class Conversation(Base):
    """One support thread. A closed thread keeps its row; the next message opens a new one."""

    __tablename__ = "conversations"
    __table_args__ = (
        # at most one open conversation per platform thread
        Index(
            "uq_conversations_open_thread",
            "platform",
            "thread_key",
            unique=True,
            sqlite_where=text("status != 'closed'"),
            postgresql_where=text("status != 'closed'"),
        ),
        Index("ix_conversations_status", "status"),
        Index("ix_conversations_customer", "platform", "customer_id"),
        Index("ix_conversations_staff_ref", "platform", "staff_ref"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    thread_key: Mapped[str] = mapped_column(String(255))
    customer_id: Mapped[str] = mapped_column(String(255))
    customer_name: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(16), default="bot")
    assignee: Mapped[str | None] = mapped_column(String(255))
    language: Mapped[str] = mapped_column(String(16), default="en")
    staff_ref: Mapped[str | None] = mapped_column(String(255))
    # consecutive "don't know" / LLM failures; reset by a good answer
    failures: Mapped[int] = mapped_column(Integer, default=0)
    bot_failed: Mapped[bool] = mapped_column(Boolean, default=False)
    handoff_reason: Mapped[str | None] = mapped_column(String(255))
    waiting_since: Mapped[datetime | None]
    wait_notices: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Message(Base):
    """A turn. Customer messages move received -> answered | relayed | expired; bot replies
    move pending -> sent | suppressed, so a crash between the two is visible on restart."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_conversation", "conversation_id", "id"),
        Index("ix_messages_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))  # user | assistant | staff | system
    text: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    platform_message_id: Mapped[str | None] = mapped_column(String(255))
    author: Mapped[str | None] = mapped_column(String(255))
    # whose turn this is: the customer who wrote it or whom the bot answered. In a group or a
    # channel thread each customer's LLM history holds only their own turns; NULL (staff,
    # notices, rows older than the column) counts as the conversation's first customer
    customer_id: Mapped[str | None] = mapped_column(String(255))
    # a reply: the customer message it answers (history puts it right after that question)
    answers: Mapped[int | None]
    outcome: Mapped[str | None] = mapped_column(String(32))
    sources: Mapped[dict[str, Any] | None]
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    usage_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Transition(Base):
    """Audit trail: every status change with who, when and why."""

    __tablename__ = "transitions"
    __table_args__ = (Index("ix_transitions_conversation", "conversation_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    from_status: Mapped[str] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class HandledEvent(Base):
    """Platform event ids already accepted: the primary key makes redeliveries a no-op."""

    __tablename__ = "handled_events"

    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Feedback(Base):
    """A customer's vote on one bot answer: one row per answer, a later vote replaces it."""

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_created", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), unique=True
    )
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    helpful: Mapped[bool] = mapped_column(Boolean)
    comment: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Attachment(Base):
    """A file that came with a customer's message (migration 0005): what the platform said
    about it, and its bytes only when ``store_file_bytes`` is on (within ``max_file_bytes``).

    ``status``: ``received`` (nothing fetched yet), ``stored`` (bytes kept), ``fetched`` (read,
    not kept), ``too_large``, ``unsupported`` or ``failed`` (the platform would not give it)."""

    __tablename__ = "attachments"
    __table_args__ = (Index("ix_attachments_message", "message_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(32))
    file_id: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    mime: Mapped[str] = mapped_column(String(255), default="")
    size: Mapped[int | None]
    filename: Mapped[str] = mapped_column(String(255), default="")
    caption: Mapped[str] = mapped_column(Text, default="")
    url: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="received")
    data: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# The abuse limits count a customer's recent turns: conversation, then time (migration 0002).
Index("ix_messages_conversation_created", Message.conversation_id, Message.created_at)
