"""Data rights: one customer's data as JSON, and deletion by age or by customer.

Operators honour retention periods (``purge_older_than``) and a customer's access and deletion
requests (``export_customer``, ``purge_customer``) with these; the CLI in ``supportbot.cli.data``
is a thin wrapper. Every function takes a :class:`Store`, so they work on SQLite and PostgreSQL.

A purge must really erase. On SQLite the deleting connection turns ``secure_delete`` on (freed
space is overwritten with zeros instead of keeping the old text), and the write-ahead log, which
still holds every earlier version of the deleted pages, is checkpointed into the database and
truncated to zero bytes afterwards. The platform event ids of purged messages are kept (they
carry no text): they are what makes a platform's redelivery of a purged message a no-op instead
of storing and answering it again. Event ids go only with age, and never younger than
:data:`EVENT_TOMBSTONE_AGE` (platforms redeliver for hours, not days).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from supportbot.storage.models import Attachment, Conversation, HandledEvent, Message, Transition
from supportbot.storage.store import Store

log = logging.getLogger("supportbot.storage")
# handled event ids younger than this survive any purge, so redeliveries stay no-ops
EVENT_TOMBSTONE_AGE = timedelta(days=2)
CHECKPOINT_ATTEMPTS = 20  # a reader mid-query delays a TRUNCATE checkpoint by milliseconds


@dataclass(slots=True)
class PurgeCounts:
    conversations: int = 0
    messages: int = 0
    transitions: int = 0
    handled_events: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _customer_filter(customer_id: str, platform: str | None) -> ColumnElement[bool]:
    clause = Conversation.customer_id == customer_id
    return and_(clause, Conversation.platform == platform) if platform else clause


def _authored_filter(customer_id: str, platform: str | None) -> ColumnElement[bool]:
    """The customer's own turns, also in threads someone else opened (Slack channel threads)."""
    clause = and_(Message.role == "user", Message.author == customer_id)
    if platform:
        clause = and_(
            clause,
            Message.conversation_id.in_(
                select(Conversation.id).where(Conversation.platform == platform)
            ),
        )
    return clause


def _message_json(m: Message, files: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "id": m.id, "conversation_id": m.conversation_id, "role": m.role, "text": m.text,
        "state": m.state, "author": m.author, "outcome": m.outcome, "sources": m.sources,
        "created_at": m.created_at.isoformat(), "attachments": files.get(m.id, []),
    }


async def _attachments(session: AsyncSession,
                       message_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """The files that came with these messages, by message id: what the platform said about
    each and whether its bytes are kept (``bytes_stored``), never the bytes themselves (an
    export is read by people; the file id fetches it from the platform)."""
    files: dict[int, list[dict[str, Any]]] = {}
    for start in range(0, len(message_ids), 500):  # bounded IN lists
        rows = await session.execute(
            select(Attachment.message_id, Attachment.platform, Attachment.file_id,
                   Attachment.kind, Attachment.mime, Attachment.size, Attachment.filename,
                   Attachment.caption, Attachment.url, Attachment.status,
                   Attachment.data.is_not(None), Attachment.created_at)
            .where(Attachment.message_id.in_(message_ids[start:start + 500]))
            .order_by(Attachment.id)
        )
        for (message_id, platform, file_id, kind, mime, size, name, caption, url, status,
             stored, created_at) in rows:
            files.setdefault(message_id, []).append({
                "platform": platform, "file_id": file_id, "kind": kind, "mime": mime,
                "size": size, "name": name, "caption": caption, "url": url, "status": status,
                "bytes_stored": bool(stored), "created_at": created_at.isoformat(),
            })  # fmt: skip
    return files


async def export_customer(
    store: Store, customer_id: str, platform: str | None = None
) -> dict[str, Any]:
    """Everything stored about one customer: their conversations (every turn, the audit trail)
    and their own messages in threads that other people opened."""
    async with store.sessions() as session:
        convs = (
            await session.scalars(
                select(Conversation)
                .where(_customer_filter(customer_id, platform))
                .order_by(Conversation.id)
            )
        ).all()
        ids = [c.id for c in convs]
        messages = (
            await session.scalars(
                select(Message).where(Message.conversation_id.in_(ids)).order_by(Message.id)
            )
        ).all() if ids else []
        transitions = (
            await session.scalars(
                select(Transition)
                .where(Transition.conversation_id.in_(ids))
                .order_by(Transition.id)
            )
        ).all() if ids else []
        elsewhere = (
            await session.scalars(
                select(Message)
                .where(_authored_filter(customer_id, platform), Message.conversation_id.not_in(ids))
                .order_by(Message.id)
            )
        ).all()
        files = await _attachments(session, [m.id for m in (*messages, *elsewhere)])
    out = []
    for conv in convs:
        out.append({
            "id": conv.id, "platform": conv.platform, "thread_key": conv.thread_key,
            "customer_id": conv.customer_id, "customer_name": conv.customer_name,
            "status": conv.status, "assignee": conv.assignee, "language": conv.language,
            "handoff_reason": conv.handoff_reason, "bot_failed": conv.bot_failed,
            "created_at": conv.created_at.isoformat(), "updated_at": conv.updated_at.isoformat(),
            "messages": [_message_json(m, files) for m in messages
                         if m.conversation_id == conv.id],
            "transitions": [
                {"from": t.from_status, "to": t.to_status, "actor": t.actor, "reason": t.reason,
                 "at": t.created_at.isoformat()}
                for t in transitions if t.conversation_id == conv.id
            ],
        })  # fmt: skip
    return {
        "customer_id": customer_id,
        "platform": platform,
        "exported_at": datetime.now(UTC).isoformat(),
        "conversations": out,
        "messages_in_other_threads": [_message_json(m, files) for m in elsewhere],
    }


async def _count(session: AsyncSession, model: Any, where: ColumnElement[bool]) -> int:
    return int(await session.scalar(select(func.count()).select_from(model).where(where)) or 0)


async def _purge(
    store: Store,
    conversations: ColumnElement[bool],
    extra_messages: ColumnElement[bool] | None,
    events: list[ColumnElement[bool]],
    dry_run: bool,
) -> PurgeCounts:
    """Delete matching conversations with their turns and audit trail, in one transaction."""
    conv_ids = select(Conversation.id).where(conversations).scalar_subquery()
    message_where: ColumnElement[bool] = Message.conversation_id.in_(conv_ids)
    if extra_messages is not None:
        message_where = or_(message_where, extra_messages)
    transition_where = Transition.conversation_id.in_(conv_ids)
    sqlite = store.engine.dialect.name == "sqlite"
    async with store.sessions.begin() as session:
        if sqlite and not dry_run:
            # per connection: the pages these deletes free are zeroed, not left holding text
            await session.execute(text("PRAGMA secure_delete=ON"))
        counts = PurgeCounts(
            conversations=await _count(session, Conversation, conversations),
            messages=await _count(session, Message, message_where),
            transitions=await _count(session, Transition, transition_where),
        )
        for where in events:
            counts.handled_events += await _count(session, HandledEvent, where)
        if dry_run:
            await session.rollback()
            return counts
        for where in events:
            await session.execute(delete(HandledEvent).where(where))
        await session.execute(delete(Message).where(message_where))
        await session.execute(delete(Transition).where(transition_where))
        await session.execute(delete(Conversation).where(conversations))
    if sqlite:
        await checkpoint_wal(store)
    return counts


async def checkpoint_wal(store: Store) -> bool:
    """Copy SQLite's write-ahead log into the database and truncate it to zero bytes, so the
    earlier versions of purged pages it holds are gone. False (and a warning) when another
    connection kept it busy through every attempt."""
    for attempt in range(CHECKPOINT_ATTEMPTS):
        async with store.engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            row = (await auto.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")).first()
        if row is None or row[0] == 0:
            return True
        await asyncio.sleep(0.05 * (attempt + 1))
    log.warning("purge: the write-ahead log stayed busy; it is checkpointed on the next quiet "
                "moment, until then it may still hold purged text")
    return False


async def purge_older_than(store: Store, cutoff: datetime, *, dry_run: bool = False) -> PurgeCounts:
    """Delete conversations with no activity since ``cutoff`` (any status: a retention period
    applies to everything), and handled event ids older than it (but never younger than
    :data:`EVENT_TOMBSTONE_AGE`)."""
    event_cutoff = min(cutoff, datetime.now(UTC) - EVENT_TOMBSTONE_AGE)
    return await _purge(
        store,
        Conversation.updated_at < cutoff,
        None,
        [HandledEvent.created_at < event_cutoff],
        dry_run,
    )


async def purge_customer(
    store: Store, customer_id: str, platform: str | None = None, *, dry_run: bool = False
) -> PurgeCounts:
    """A deletion request: the customer's conversations and their own messages in other
    threads. Their platform event ids stay as tombstones (ids only, no text), so a redelivered
    update is recognised and neither stored nor answered again."""
    return await _purge(
        store,
        _customer_filter(customer_id, platform),
        _authored_filter(customer_id, platform),
        [],
        dry_run,
    )
