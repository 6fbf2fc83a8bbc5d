"""All database access goes through :class:`Store`, so the engine reads like the workflow."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Row,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from supportbot.storage.db import (
    RETRY_DELAYS,
    PriorityGate,
    create_engine,
    is_disconnect,
    migrate,
    retry_disconnects,
)
from supportbot.storage.models import (
    Attachment,
    Conversation,
    HandledEvent,
    Message,
    Transition,
    utcnow,
)

log = logging.getLogger("supportbot.storage")

# The per-message path runs these Core statements, built once: SQLAlchemy caches their compiled
# form, and without the ORM's unit of work a message costs a fraction of the CPU.
CONVERSATIONS, MESSAGES = Conversation.__table__, Message.__table__
_CLAIM_EVENT = insert(HandledEvent.__table__)
_OPEN_CONVERSATION = select(CONVERSATIONS).where(
    CONVERSATIONS.c.platform == bindparam("platform"),
    CONVERSATIONS.c.thread_key == bindparam("thread_key"),
    # the partial unique index's own predicate, written out, so SQLite uses that index: it
    # cannot match ``status IN ('bot', 'waiting', 'human')`` to it (and scanned the platform's
    # threads), and with ``!= ?`` it re-plans the statement on every run
    CONVERSATIONS.c.status != literal_column("'closed'"),
)
_CONVERSATION = select(CONVERSATIONS).where(CONVERSATIONS.c.id == bindparam("id"))
_STATUS = select(CONVERSATIONS.c.status).where(CONVERSATIONS.c.id == bindparam("id"))
_INSERT_CONVERSATION = insert(CONVERSATIONS)
_INSERT_MESSAGE = insert(MESSAGES)
_INSERT_TRANSITION = insert(Transition.__table__)
ATTACHMENTS = Attachment.__table__
_INSERT_ATTACHMENT = insert(ATTACHMENTS)
_ATTACHMENTS_OF = select(ATTACHMENTS).where(
    ATTACHMENTS.c.message_id == bindparam("message_id")
).order_by(ATTACHMENTS.c.id)
_HISTORY_STATES = ("answered", "sent", "relayed", "received", "expired")
_SHOWN = MESSAGES.c.conversation_id == bindparam("conversation_id"), MESSAGES.c.state.in_(
    # constants in the SQL: a bound IN list is re-expanded on every execution
    [literal_column(f"'{state}'") for state in _HISTORY_STATES]
)
_NEWEST_FIRST = MESSAGES.c.id.desc()
# A reply sorts right after the question it answers: questions are stored on arrival, so a
# later question may be stored before the answer to an earlier one.
_position = func.coalesce(MESSAGES.c.answers, MESSAGES.c.id)
# what the model sees: no timestamps, whose parsing was most of this query's cost
_HISTORY = select(MESSAGES.c.id, MESSAGES.c.role, MESSAGES.c.text).where(
    *_SHOWN, _position < bindparam("before_id")
).order_by(_position.desc(), _NEWEST_FIRST).limit(bindparam("limit"))
# Per customer (groups, channel threads): only the turns of the customer who wrote message
# ``before_id`` and the bot's answers to them; NULL turns count as the conversation's customer.
_ASKING = MESSAGES.alias("asking")
_OWNER = select(CONVERSATIONS.c.customer_id).where(
    CONVERSATIONS.c.id == bindparam("conversation_id")
).scalar_subquery()
_ASKER = select(func.coalesce(_ASKING.c.customer_id, _OWNER)).where(
    _ASKING.c.id == bindparam("before_id")
).scalar_subquery()
_OWN_HISTORY = _HISTORY.where(func.coalesce(MESSAGES.c.customer_id, _OWNER) == _ASKER)
_CUSTOMER_OF = select(MESSAGES.c.customer_id).where(MESSAGES.c.id == bindparam("id"))
_RECENT = select(MESSAGES.c.id, MESSAGES.c.role, MESSAGES.c.text, MESSAGES.c.created_at).where(
    *_SHOWN
).order_by(_NEWEST_FIRST).limit(bindparam("limit"))
# the SET clause of these two comes from the parameters' column names
_MESSAGE_STATE = update(MESSAGES).where(MESSAGES.c.id == bindparam("message_id"))
# the placeholder row of a reply that was streaming, once the reply is finished
_STREAM_DONE = update(MESSAGES).where(
    MESSAGES.c.answers == bindparam("user_message_id"),
    MESSAGES.c.state == literal_column("'streaming'"),
).values(state="streamed")
_TOUCH_CONVERSATION = update(CONVERSATIONS).where(
    CONVERSATIONS.c.id == bindparam("conversation_id")
)


@retry_disconnects
class Store:
    def __init__(self, engine: AsyncEngine, *, pool_size: int = 5, max_overflow: int = 10) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False, class_=AsyncSession)
        # PostgreSQL advisory locks live on connections of their own, held while a thread is
        # handled: taken from the main pool, waiting holders would starve the very queries
        # that let the holders finish. Waiting for one of these never times out.
        self.lock_engine: AsyncEngine | None = None
        self._singletons: set[SingletonLock] = set()
        # SQLite: one connection, taken through a gate where a door's store goes first
        self.gate = PriorityGate() if engine.dialect.name == "sqlite" else None
        if engine.dialect.name == "postgresql":
            self.lock_engine = create_engine(
                engine.url, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=None
            )

    @classmethod
    async def open(cls, url: str, *, pool_size: int = 5, max_overflow: int = 10) -> Store:
        engine = create_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        await migrate(engine)
        return cls(engine, pool_size=pool_size, max_overflow=max_overflow)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection in a transaction, committed on exit: the per-message path."""
        async with self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection for reads."""
        async with self.engine.connect() as conn:
            yield conn

    async def close(self) -> None:
        for lock in list(self._singletons):
            await lock.release()
        if self.lock_engine is not None:
            await self.lock_engine.dispose()
        await self.engine.dispose()

    @asynccontextmanager
    async def thread_lock(self, platform: str, thread_key: str) -> AsyncIterator[None]:
        """Serialise one thread across processes sharing a PostgreSQL database.

        A session-level advisory lock on a connection of its own; SQLite serves one process,
        whose in-memory locks are enough, so there it is a no-op."""
        if self.lock_engine is None:
            yield
            return
        key = _lock_key(f"{platform}\0{thread_key}")
        conn = await self._advisory_lock(key, wait=True)
        assert conn is not None
        try:
            yield
        finally:
            await _advisory_unlock(conn, key)

    def try_singleton_lock(self, name: str) -> SingletonLock:
        """A lock only one process sharing the database can hold (e.g. Telegram polling)::

            async with store.try_singleton_lock("telegram-polling") as held:
                if not held: ...

        or ``await lock.acquire()`` / ``await lock.release()`` across start and stop. Always
        granted on SQLite, which serves one process anyway."""
        return SingletonLock(self, name)

    async def _advisory_lock(self, key: int, *, wait: bool) -> AsyncConnection | None:
        """A connection holding session-level advisory lock ``key``; ``None`` when ``wait`` is
        false and another session holds it. A connection lost while waiting is replaced."""
        assert self.lock_engine is not None
        for delay in (*RETRY_DELAYS, None):
            conn = await self.lock_engine.connect()
            try:
                if wait:
                    await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                    granted = True
                else:
                    granted = bool(
                        await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key})
                    )
                await conn.commit()
            except BaseException as exc:
                # cancelled or broken mid-request: the lock may or may not be ours now, so
                # drop the session; PostgreSQL releases whatever it held
                await _discard(conn)
                if delay is None or not isinstance(exc, Exception) or not is_disconnect(exc):
                    raise
                log.warning("database connection lost while waiting for a lock; retrying",
                            extra={"error": type(exc).__name__, "retry_in": delay})
                await asyncio.sleep(delay)
                continue
            if granted:
                return conn
            await conn.close()
            return None
        raise AssertionError("unreachable")

    # --- events --------------------------------------------------------------------------

    async def claim_event(self, platform: str, event_id: str) -> bool:
        """True the first time an event id is seen, False for every redelivery."""
        try:
            async with self.begin() as conn:
                await conn.execute(_CLAIM_EVENT, {"platform": platform, "event_id": event_id})
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
        attachments: Sequence[dict[str, Any]] = (),
    ) -> tuple[Conversation, Message] | None:
        """Claim the event, find or open the conversation and store the customer's message,
        in one transaction. ``None`` means the event was already handled. ``attachments``
        (column values of :class:`Attachment` rows) are stored with the message, in the same
        transaction: a file is never acknowledged to the platform without its message."""
        try:
            async with self.begin() as conn:
                await conn.execute(_CLAIM_EVENT, {"platform": platform, "event_id": event_id})
                row = (await conn.execute(
                    _OPEN_CONVERSATION, {"platform": platform, "thread_key": thread_key}
                )).first()
                if row is None:
                    conv = await self._start_conversation(
                        conn, platform, thread_key, customer_id, customer_name, language,
                        reason="first message",
                    )
                else:
                    conv = Conversation(**row._mapping)
                    changes = {"language": language} if language != conv.language else {}
                    # another customer writing in a group or channel thread never takes the
                    # conversation over: it keeps its first customer's id and name
                    if (customer_name and customer_name != conv.customer_name
                            and customer_id == conv.customer_id):
                        changes["customer_name"] = customer_name
                    if changes:
                        await conn.execute(_TOUCH_CONVERSATION,
                                           {"conversation_id": conv.id, **changes})
                        for key, value in changes.items():
                            setattr(conv, key, value)
                values = {
                    "conversation_id": conv.id, "role": "user", "text": text,
                    "state": "received", "platform_message_id": event_id,
                    "author": customer_id, "customer_id": customer_id,
                    "usage_estimated": False, "created_at": utcnow(),
                }
                result = await conn.execute(_INSERT_MESSAGE, values)
                message_id = result.inserted_primary_key[0]
                if attachments:
                    now = utcnow()
                    await conn.execute(_INSERT_ATTACHMENT, [
                        {"caption": "", "url": "", "mime": "", "filename": "", "size": None,
                         "status": "received", "data": None, **row,
                         "message_id": message_id, "platform": platform, "created_at": now}
                        for row in attachments
                    ])
            return conv, Message(id=message_id, **values)
        except IntegrityError:
            return None

    # --- conversations --------------------------------------------------------------------

    async def conversation(self, conversation_id: int) -> Conversation | None:
        async with self.read() as conn:
            row = (await conn.execute(_CONVERSATION, {"id": conversation_id})).first()
        return Conversation(**row._mapping) if row is not None else None

    async def find_open(self, platform: str, thread_key: str) -> Conversation | None:
        async with self.read() as conn:
            row = (await conn.execute(
                _OPEN_CONVERSATION, {"platform": platform, "thread_key": thread_key}
            )).first()
        return Conversation(**row._mapping) if row is not None else None

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
        async with self.begin() as conn:
            row = (await conn.execute(
                _OPEN_CONVERSATION, {"platform": platform, "thread_key": thread_key}
            )).first()
            if row is not None:
                return Conversation(**row._mapping)
            return await self._start_conversation(
                conn, platform, thread_key, customer_id, customer_name, language,
                reason="asked for a person",
            )

    @staticmethod
    async def _start_conversation(
        conn: AsyncConnection, platform: str, thread_key: str, customer_id: str,
        customer_name: str, language: str, *, reason: str,
    ) -> Conversation:
        now = utcnow()
        values: dict[str, Any] = {
            "platform": platform, "thread_key": thread_key, "customer_id": customer_id,
            "customer_name": customer_name, "language": language, "status": "bot",
            "assignee": None, "staff_ref": None, "failures": 0, "bot_failed": False,
            "handoff_reason": None, "waiting_since": None, "wait_notices": 0,
            "created_at": now, "updated_at": now,
        }
        result = await conn.execute(_INSERT_CONVERSATION, values)
        conv = Conversation(id=result.inserted_primary_key[0], **values)
        await conn.execute(_INSERT_TRANSITION, {
            "conversation_id": conv.id, "from_status": "new", "to_status": "bot",
            "actor": f"customer:{customer_id}", "reason": reason,
        })
        return conv

    async def update_conversation(self, conversation_id: int, **values: Any) -> None:
        async with self.begin() as conn:
            await conn.execute(_TOUCH_CONVERSATION, {"conversation_id": conversation_id, **values})

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

    async def claim_wait_notice(self, conversation_id: int, seen: int) -> bool:
        """Count one more "still waiting" notice if the count is still ``seen``: with several
        processes checking waiting threads, exactly one of them sends each notice."""
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id, Conversation.wait_notices == seen)
                .values(wait_notices=seen + 1)
            )
            return result.rowcount == 1  # type: ignore[attr-defined]

    async def message(self, message_id: int) -> Message | None:
        """One turn, fresh: recovery re-reads a message's state under the thread lock, since
        another process may have answered it meanwhile."""
        async with self.sessions() as session:
            return await session.get(Message, message_id)

    async def set_message_state(self, message_id: int, state: str, **values: Any) -> None:
        async with self.begin() as conn:
            await conn.execute(_MESSAGE_STATE, {"message_id": message_id, "state": state, **values})

    async def history(self, conversation_id: int, before_id: int,
                      limit: int = 50, *, shared: bool = False) -> list[Row[Any]]:
        """The newest ``limit`` turns before ``before_id`` worth showing the model, oldest
        first: rows of ``id``, ``role`` and ``text``. Only the turns of the customer who wrote
        ``before_id`` (and the bot's answers to them), so in a group or channel thread no
        customer's request carries another's data; ``shared`` gives every turn of the thread."""
        params = {"conversation_id": conversation_id, "before_id": before_id, "limit": limit}
        async with self.read() as conn:
            rows = (await conn.execute(_HISTORY if shared else _OWN_HISTORY, params)).all()
        rows.reverse()
        return rows

    async def recent(self, conversation_id: int, limit: int = 10) -> list[Row[Any]]:
        """The newest ``limit`` turns for a staff view, oldest first: rows of ``id``, ``role``,
        ``text`` and ``created_at``."""
        params = {"conversation_id": conversation_id, "limit": limit}
        async with self.read() as conn:
            rows = (await conn.execute(_RECENT, params)).all()
        rows.reverse()
        return rows

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

    async def stage_reply(
        self, conversation_id: int, user_message_id: int | None, text: str, *,
        require_bot: bool, **values: Any,
    ) -> int | None:
        """Store a bot reply as ``pending`` before it is sent.

        With ``require_bot``, the conversation's status is re-read in the same transaction: if a
        human owns the thread the reply is kept as ``suppressed`` (and the customer's message as
        ``relayed``) and ``None`` is returned."""
        async with self.begin() as conn:
            owned = True
            if require_bot:
                status = (await conn.execute(_STATUS, {"id": conversation_id})).scalar()
                owned = status == "bot"
            if user_message_id is not None and "customer_id" not in values:
                # the answer belongs to the customer it answers (per-customer history)
                values["customer_id"] = (await conn.execute(
                    _CUSTOMER_OF, {"id": user_message_id})).scalar()
            reply = {
                "usage_estimated": False, **values, "conversation_id": conversation_id,
                "answers": user_message_id,
                "role": "assistant", "text": text, "state": "pending" if owned else "suppressed",
                "created_at": utcnow(),
            }
            result = await conn.execute(_INSERT_MESSAGE, reply)
            if not owned and user_message_id is not None:
                await conn.execute(_MESSAGE_STATE,
                                   {"message_id": user_message_id, "state": "relayed"})
            return result.inserted_primary_key[0] if owned else None

    async def finish_reply(
        self, conversation_id: int, reply_id: int, user_message_id: int | None,
        platform_message_id: str | None, conversation_values: dict[str, Any] | None = None,
    ) -> None:
        """The reply went out: mark it sent and the customer's message answered, together."""
        async with self.begin() as conn:
            await conn.execute(_MESSAGE_STATE, {
                "message_id": reply_id, "state": "sent",
                "platform_message_id": platform_message_id,
            })
            if user_message_id is not None:
                await conn.execute(_MESSAGE_STATE, {"message_id": user_message_id,
                                                    "state": "answered"})
                await conn.execute(_STREAM_DONE, {"user_message_id": user_message_id})
            await conn.execute(_TOUCH_CONVERSATION, {
                "conversation_id": conversation_id, **(conversation_values or {})
            })

    async def stage_stream(self, conversation_id: int, user_message_id: int,
                           platform_message_id: str) -> None:
        """A reply began streaming into platform message ``platform_message_id``: remember it
        (state ``streaming``) so that after a crash recovery edits that message to the full
        answer instead of leaving it half written."""
        async with self.begin() as conn:
            await conn.execute(_INSERT_MESSAGE, {
                "conversation_id": conversation_id, "role": "assistant", "text": "",
                "state": "streaming", "platform_message_id": platform_message_id,
                "answers": user_message_id, "usage_estimated": False, "created_at": utcnow(),
            })

    async def streamed_into(self, user_message_id: int) -> str | None:
        """The platform message a reply to ``user_message_id`` was streaming into, if one was."""
        async with self.read() as conn:
            return (await conn.execute(
                select(MESSAGES.c.platform_message_id)
                .where(MESSAGES.c.answers == user_message_id,
                       MESSAGES.c.state == literal_column("'streaming'"))
                .order_by(MESSAGES.c.id.desc()).limit(1)
            )).scalar()

    async def record_interrupted(
        self, conversation_id: int, user_message_id: int, shown: str,
        platform_message_id: str | None,
    ) -> None:
        """Staff took over while a reply was streaming: keep what the customer saw as an
        ``interrupted`` reply (not an answer) and the customer's message as ``relayed``."""
        async with self.begin() as conn:
            await conn.execute(_INSERT_MESSAGE, {
                "conversation_id": conversation_id, "role": "assistant",
                "text": shown or "(interrupted before any words)", "state": "sent",
                "outcome": "interrupted", "platform_message_id": platform_message_id,
                "answers": user_message_id,
                "usage_estimated": False, "created_at": utcnow(),
            })
            await conn.execute(_MESSAGE_STATE, {"message_id": user_message_id,
                                                "state": "relayed"})
            await conn.execute(_STREAM_DONE, {"user_message_id": user_message_id})
            await conn.execute(_TOUCH_CONVERSATION, {"conversation_id": conversation_id})

    # --- attachments ------------------------------------------------------------------------

    async def attachments(self, message_id: int) -> list[Attachment]:
        """The files that came with one message, in the order they were sent (bytes included
        when they were kept)."""
        async with self.read() as conn:
            rows = (await conn.execute(_ATTACHMENTS_OF, {"message_id": message_id})).all()
        return [Attachment(**row._mapping) for row in rows]

    async def update_attachment(self, attachment_id: int, **values: Any) -> None:
        """Record what became of a file (``status``, and ``data`` when its bytes are kept)."""
        async with self.begin() as conn:
            await conn.execute(
                update(ATTACHMENTS).where(ATTACHMENTS.c.id == attachment_id).values(**values)
            )

    async def count_messages(self) -> int:
        async with self.sessions() as session:
            return int(await session.scalar(select(func.count(Message.id))) or 0)



class SingletonLock:
    """See :meth:`Store.try_singleton_lock`."""

    def __init__(self, store: Store, name: str) -> None:
        self.store, self.name = store, name
        self._conn: AsyncConnection | None = None
        self.held = False

    async def acquire(self) -> bool:
        """True when this process now holds the lock (or already did)."""
        if self.held:
            return True
        if self.store.lock_engine is None:
            self.held = True
            return True
        self._conn = await self.store._advisory_lock(_lock_key(f"singleton\0{self.name}"),
                                                     wait=False)
        self.held = self._conn is not None
        if self.held:
            self.store._singletons.add(self)  # held until released or the store closes
        return self.held

    async def release(self) -> None:
        conn, self._conn, self.held = self._conn, None, False
        self.store._singletons.discard(self)
        if conn is not None:
            await _advisory_unlock(conn, _lock_key(f"singleton\0{self.name}"))

    async def __aenter__(self) -> bool:
        return await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


def _lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for a name."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def _advisory_unlock(conn: AsyncConnection, key: int) -> None:
    """Release and return the connection; if it broke, closing the session released the lock
    already (and another process may have taken it: worth a warning, not a failure)."""
    try:
        released = await conn.scalar(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        await conn.commit()
    except BaseException as exc:
        await _discard(conn)
        if not isinstance(exc, Exception) or not is_disconnect(exc):
            raise
        log.warning("database connection holding a lock was lost",
                    extra={"error": type(exc).__name__})
        return
    if not released:
        log.warning("advisory lock was no longer held when released")
    await conn.close()


async def _discard(conn: AsyncConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.invalidate()
    with contextlib.suppress(Exception):
        await conn.close()
