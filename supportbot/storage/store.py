"""All database access goes through :class:`Store`, so the engine reads like the workflow."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from supportbot.storage.db import create_engine, migrate
from supportbot.storage.models import Conversation, HandledEvent, Message, Transition, utcnow

OPEN = ("bot", "waiting", "human")


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    async def open(cls, url: str, *, pool_size: int = 5, max_overflow: int = 10) -> Store:
        engine = create_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        await migrate(engine)
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def thread_lock(self, platform: str, thread_key: str) -> AsyncIterator[None]:
        """Serialise one thread across processes sharing a PostgreSQL database.

        A session-level advisory lock on a connection of its own; SQLite serves one process,
        whose in-memory locks are enough, so there it is a no-op."""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        digest = hashlib.blake2b(f"{platform}\0{thread_key}".encode(), digest_size=8).digest()
        key = int.from_bytes(digest, "big", signed=True)
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            await conn.commit()
            try:
                yield
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                await conn.commit()

    # --- events --------------------------------------------------------------------------

    async def claim_event(self, platform: str, event_id: str) -> bool:
        """True the first time an event id is seen, False for every redelivery."""
        try:
            async with self.sessions.begin() as session:
                session.add(HandledEvent(platform=platform, event_id=event_id))
            return True
        except IntegrityError:
            return False

    # --- accepting customer messages -----------------------------------------------------

    async def accept(
        self,
        *,
        platform: str,
        event_id: str,
        thread_key: str,
        customer_id: str,
        customer_name: str,
        language: str,
        text: str,
    ) -> tuple[Conversation, Message] | None:
        """Claim the event, find or open the conversation and store the customer's message,
        in one transaction. ``None`` means the event was already handled."""
        try:
            async with self.sessions.begin() as session:
                session.add(HandledEvent(platform=platform, event_id=event_id))
                await session.flush()
                conv = await self._open_conversation(session, platform, thread_key)
                if conv is None:
                    conv = Conversation(
                        platform=platform,
                        thread_key=thread_key,
                        customer_id=customer_id,
                        customer_name=customer_name,
                        language=language,
                        status="bot",
                        failures=0,
                        bot_failed=False,
                        wait_notices=0,
                    )
                    session.add(conv)
                    await session.flush()
                    session.add(
                        Transition(
                            conversation_id=conv.id,
                            from_status="new",
                            to_status="bot",
                            actor=f"customer:{customer_id}",
                            reason="first message",
                        )
                    )
                else:
                    conv.language = language
                    if customer_name:
                        conv.customer_name = customer_name
                message = Message(
                    conversation_id=conv.id,
                    role="user",
                    text=text,
                    state="received",
                    platform_message_id=event_id,
                    author=customer_id,
                    usage_estimated=False,
                )
                session.add(message)
            return conv, message
        except IntegrityError:
            return None

    @staticmethod
    async def _open_conversation(
        session: AsyncSession, platform: str, thread_key: str
    ) -> Conversation | None:
        return await session.scalar(
            select(Conversation).where(
                Conversation.platform == platform,
                Conversation.thread_key == thread_key,
                Conversation.status.in_(OPEN),
            )
        )

    # --- conversations --------------------------------------------------------------------

    async def conversation(self, conversation_id: int) -> Conversation | None:
        async with self.sessions() as session:
            return await session.get(Conversation, conversation_id)

    async def find_open(self, platform: str, thread_key: str) -> Conversation | None:
        async with self.sessions() as session:
            return await self._open_conversation(session, platform, thread_key)

    async def find_by_staff_ref(self, platform: str, ref: str) -> Conversation | None:
        async with self.sessions() as session:
            return await session.scalar(
                select(Conversation)
                .where(Conversation.platform == platform, Conversation.staff_ref == ref)
                .order_by(Conversation.id.desc())
                .limit(1)
            )

    async def open_conversation(
        self, *, platform: str, thread_key: str, customer_id: str, language: str,
        customer_name: str = "",
    ) -> Conversation:
        """The open conversation of a thread, created when there is none (for /human before
        any question)."""
        async with self.sessions.begin() as session:
            conv = await self._open_conversation(session, platform, thread_key)
            if conv is None:
                conv = Conversation(
                    platform=platform,
                    thread_key=thread_key,
                    customer_id=customer_id,
                    customer_name=customer_name,
                    language=language,
                    status="bot",
                    failures=0,
                    bot_failed=False,
                    wait_notices=0,
                )
                session.add(conv)
            return conv

    async def update_conversation(self, conversation_id: int, **values: Any) -> None:
        async with self.sessions.begin() as session:
            await session.execute(
                update(Conversation).where(Conversation.id == conversation_id).values(**values)
            )

    async def transition(
        self,
        conversation_id: int,
        *,
        to: str,
        allowed_from: Iterable[str],
        actor: str,
        reason: str = "",
        **values: Any,
    ) -> Conversation | None:
        """Compare-and-set on the status: exactly one of two racing callers wins.

        Returns the updated conversation, or ``None`` when its status was not in
        ``allowed_from`` (someone else moved it first)."""
        allowed = tuple(allowed_from)
        async with self.sessions.begin() as session:
            current = await session.scalar(
                select(Conversation.status).where(Conversation.id == conversation_id)
            )
            if current is None or current not in allowed:
                return None
            result = await session.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id, Conversation.status == current)
                .values(status=to, updated_at=utcnow(), **values)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return None
            session.add(
                Transition(
                    conversation_id=conversation_id,
                    from_status=current,
                    to_status=to,
                    actor=actor,
                    reason=reason,
                )
            )
        return await self.conversation(conversation_id)

    async def list_conversations(
        self, *, status: str | None = None, limit: int = 50
    ) -> Sequence[Conversation]:
        query = select(Conversation).order_by(Conversation.updated_at.desc()).limit(limit)
        if status:
            query = query.where(Conversation.status == status)
        async with self.sessions() as session:
            return (await session.scalars(query)).all()

    async def waiting_since_before(self, cutoff: datetime) -> Sequence[Conversation]:
        async with self.sessions() as session:
            result = await session.scalars(
                select(Conversation).where(
                    Conversation.status == "waiting", Conversation.waiting_since < cutoff
                )
            )
            return result.all()

    # --- messages -------------------------------------------------------------------------

    async def add_message(self, conversation_id: int, role: str, text: str, state: str,
                          **values: Any) -> Message:
        values.setdefault("usage_estimated", False)
        message = Message(conversation_id=conversation_id, role=role, text=text, state=state,
                          **values)
        async with self.sessions.begin() as session:
            session.add(message)
            await session.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id)
                .values(updated_at=utcnow())
            )
        return message

    async def set_message_state(self, message_id: int, state: str, **values: Any) -> None:
        async with self.sessions.begin() as session:
            await session.execute(
                update(Message).where(Message.id == message_id).values(state=state, **values)
            )

    async def history(self, conversation_id: int, *, before_id: int | None = None,
                      limit: int = 50) -> list[Message]:
        """Newest ``limit`` turns worth showing the model, oldest first."""
        query = (
            select(Message)
            .where(
                Message.conversation_id == conversation_id,
                Message.state.in_(("answered", "sent", "relayed", "received", "expired")),
            )
            .order_by(Message.id.desc())
            .limit(limit)
        )
        if before_id is not None:
            query = query.where(Message.id < before_id)
        async with self.sessions() as session:
            rows = (await session.scalars(query)).all()
        return list(reversed(rows))

    async def messages(self, conversation_id: int) -> Sequence[Message]:
        async with self.sessions() as session:
            result = await session.scalars(
                select(Message)
                .where(Message.conversation_id == conversation_id)
                .order_by(Message.id)
            )
            return result.all()

    async def transitions(self, conversation_id: int) -> Sequence[Transition]:
        async with self.sessions() as session:
            result = await session.scalars(
                select(Transition)
                .where(Transition.conversation_id == conversation_id)
                .order_by(Transition.id)
            )
            return result.all()

    async def unanswered(self) -> Sequence[Message]:
        """Customer messages accepted but never answered (the process died mid-way)."""
        async with self.sessions() as session:
            result = await session.scalars(
                select(Message).where(Message.role == "user", Message.state == "received")
                .order_by(Message.id)
            )
            return result.all()

    async def count_messages(self) -> int:
        async with self.sessions() as session:
            return int(await session.scalar(select(func.count(Message.id))) or 0)

    async def purge_events_before(self, cutoff: datetime) -> int:
        async with self.sessions.begin() as session:
            result = await session.execute(
                delete(HandledEvent).where(HandledEvent.created_at < cutoff)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]
