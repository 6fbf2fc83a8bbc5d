"""Database engine creation and migrations applied at start.

One code path for both databases: SQLAlchemy's asyncio engine, on aiosqlite for SQLite and
asyncpg for PostgreSQL. aiosqlite runs each SQLite connection on a thread of its own, so a lock
held by another process (the staff CLI, a backup) is waited for there, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import inspect
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import URL, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from supportbot.storage.private_files import private_file

MIGRATIONS = Path(__file__).parent / "migrations"
# Waits between attempts when the database connection is lost (about 8 s in all: long enough
# for a PostgreSQL restart or failover to finish, short enough that a platform retries).
RETRY_DELAYS = (0.1, 0.3, 0.6, 1.0, 2.0, 4.0)
# pg_advisory_xact_lock key that serialises migrations of processes starting together
MIGRATION_LOCK = 0x5355_5050_4F52_5400  # "SUPPORT\0"
# How long a SQLite statement waits for another connection's write lock before "locked".
SQLITE_BUSY_TIMEOUT_MS = 5000
# How long a task waits in line for the process's one SQLite connection.
SQLITE_QUEUE_TIMEOUT_S = 300.0
# Store methods a door awaits before the platform hears "OK" (Slack allows 3 s): on SQLite they
# take the one connection before any other waiting work (see PriorityGate).
URGENT = frozenset({"accept", "claim_event"})

log = logging.getLogger("supportbot.storage")
C = TypeVar("C", bound=type)


def create_engine(
    url: str | URL,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_timeout: float | None = 30.0,
) -> AsyncEngine:
    """The asyncio engine for ``url``; SQLite connections get their pragmas as they open."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            private_file(Path(database))  # 0600 in a 0700 folder: it holds every conversation
            # One connection per process: SQLite takes one writer at a time, and writers of one
            # process then queue in SQLAlchemy's pool, first come first served, instead of
            # polling SQLite's busy handler against each other (which starves some for seconds
            # under load). ``busy_timeout`` still covers other processes (the staff CLI). A
            # burst queues for as long as the work ahead of it takes: the bound only catches a
            # bug (a second connection wanted while the first is held), not a busy minute.
            pool: dict[str, Any] = {"pool_size": 1, "max_overflow": 0,
                                    "pool_timeout": SQLITE_QUEUE_TIMEOUT_S}
        else:
            pool = {}  # in memory: one shared connection already (StaticPool)
        engine = create_async_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **pool
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_timeout=pool_timeout,
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside the writer (and other processes read while we write);
    busy_timeout waits for a lock instead of failing with "locked"; SQLite leaves foreign keys
    off unless each connection asks."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA secure_delete=ON")  # deleted text is overwritten, not left in free pages
    cursor.close()


def head_revision() -> str:
    """The newest migration, read from file names (``NNNN_description.py``), so a start with an
    up-to-date schema never pays for importing Alembic."""
    return max(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        try:
            current = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        except DBAPIError:
            current = None
    if current == head_revision():
        return
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # several processes starting on one new database: one migrates, the others wait
            # and then find nothing to do (Alembic re-reads the version after the lock)
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        await conn.run_sync(_upgrade)


def is_disconnect(exc: BaseException) -> bool:
    """A lost or refused server connection, worth retrying on a fresh one.

    pool_pre_ping only catches connections that died while idle in the pool; one killed
    mid-query (``pg_terminate_backend``, a server restart) surfaces as an invalidated
    DBAPIError, and a server that is still starting refuses new connections outright."""
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(
            exc, OperationalError | InterfaceError
        )
    if isinstance(exc, ConnectionError):
        return True
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        return False
    return isinstance(exc, asyncpg.CannotConnectNowError | asyncpg.ConnectionDoesNotExistError)


class PriorityGate:
    """Who uses the process's one SQLite connection next: urgent work first, then the rest in
    arrival order.

    SQLAlchemy's pool serves waiters first come, first served. Under load hundreds of answering
    turns queue there, each for a few milliseconds of queries, and a door's store (the one
    thing a platform's acknowledgement waits for) queued behind them took seconds: past Slack's
    ack budget, so the message was refused and delivered again. Every store method runs inside
    this gate (:func:`retry_disconnects` wraps them), so the pool never has a queue and a store
    for a door jumps the line. Re-entrant for the task that holds it (a method calling another).
    """

    def __init__(self) -> None:
        self._owner: asyncio.Task[Any] | None = None
        self._waiters: list[tuple[int, int, asyncio.Future[None], asyncio.Task[Any] | None]] = []
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def hold(self, *, urgent: bool) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if task is not None and self._owner is task:
            yield  # already ours (a store method calling another)
            return
        if self._owner is not None or self._waiters:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (0 if urgent else 1, next(self._order), turn, task))
            try:
                await turn
            except BaseException:
                if turn.done() and not turn.cancelled():
                    self._release()  # handed over just as we were cancelled: pass it on
                raise
        self._owner = task
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        self._owner = None
        while self._waiters:
            _, _, turn, task = heapq.heappop(self._waiters)
            if not turn.done():  # a cancelled waiter's turn is done already: skip it
                self._owner = task  # nobody may barge in before it wakes
                turn.set_result(None)
                return


def retry_disconnects(cls: C) -> C:
    """Class decorator: every public coroutine method of a store runs again, on a new
    connection, when the server connection is lost (PostgreSQL only; SQLite has no server).

    Each method is one short transaction, so a retry re-runs the whole transaction. The one
    doubt is a connection lost during COMMIT itself: the retry then meets its own row (a
    duplicate event id, an already moved status) and reports it as done by someone else; the
    customer message stays ``received`` and start-up recovery answers it."""
    for name, fn in list(vars(cls).items()):
        if name.startswith("_") or name in {"close"} or not inspect.iscoroutinefunction(fn):
            continue
        setattr(cls, name, _retrying(fn))
    return cls


def _retrying(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.engine.dialect.name == "sqlite":
            gate: PriorityGate | None = getattr(self, "gate", None)
            if gate is None:
                return await fn(self, *args, **kwargs)
            async with gate.hold(urgent=fn.__name__ in URGENT):
                return await fn(self, *args, **kwargs)
        for delay in RETRY_DELAYS:
            try:
                return await fn(self, *args, **kwargs)
            except Exception as exc:
                if not is_disconnect(exc):
                    raise
                log.warning(
                    "database connection lost; retrying",
                    extra={"operation": fn.__name__, "error": type(exc).__name__,
                           "retry_in": delay},
                )
            await asyncio.sleep(delay)
        return await fn(self, *args, **kwargs)

    return wrapper
