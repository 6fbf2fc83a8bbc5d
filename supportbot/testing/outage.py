"""A database that refuses to store, for tests of "never acknowledge what is not stored".

``async with store_outage(store):`` renames the table every incoming event is claimed in, so
each attempt to store a customer message fails the way it would with the database down or the
disk full (an error from the driver, inside the store's own transaction); leaving the block puts
the table back. Works on SQLite and PostgreSQL, through the store's own connections.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text

from supportbot.storage import Store

_TABLE = "handled_events"
_AWAY = "handled_events_outage"


@asynccontextmanager
async def store_outage(store: Store) -> AsyncIterator[None]:
    async with store.begin() as conn:
        await conn.execute(text(f"ALTER TABLE {_TABLE} RENAME TO {_AWAY}"))
    try:
        yield
    finally:
        async with store.begin() as conn:
            await conn.execute(text(f"ALTER TABLE {_AWAY} RENAME TO {_TABLE}"))


@asynccontextmanager
async def store_stall(store: Store) -> AsyncIterator[None]:
    """Hold the events table in a transaction of its own, so storing a message waits (a
    database too busy to answer in time) until the block ends."""
    async with store.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text(f"LOCK TABLE {_TABLE} IN ACCESS EXCLUSIVE MODE"))
        else:  # SQLite: take the database's write lock
            await conn.execute(text(f"DELETE FROM {_TABLE} WHERE 0 = 1"))
        yield
