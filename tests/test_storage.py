"""The store: migrations at start, SQLite tuned for concurrency, atomic status changes."""

from __future__ import annotations

import asyncio

from sqlalchemy import inspect, text

from supportbot.storage import Store
from supportbot.storage.db import head_revision


async def open_store(tmp_path) -> Store:
    return await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")


async def test_migrations_create_the_schema_and_are_idempotent(tmp_path):
    store = await open_store(tmp_path)
    await store.close()
    store = await open_store(tmp_path)  # second start: nothing to do, nothing breaks
    async with store.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        version = (await conn.execute(text("select version_num from alembic_version"))).scalar()
        mode = (await conn.execute(text("pragma journal_mode"))).scalar()
    await store.close()
    assert {"conversations", "messages", "transitions", "handled_events"} <= tables
    assert version == head_revision()
    assert mode == "wal"


async def test_event_ids_are_claimed_once(tmp_path):
    store = await open_store(tmp_path)
    results = await asyncio.gather(*(store.claim_event("slack", "Ev1") for _ in range(5)))
    other = await store.claim_event("telegram", "Ev1")
    await store.close()
    assert sorted(results) == [False] * 4 + [True]
    assert other is True


async def test_accept_stores_message_and_rejects_redelivery(tmp_path):
    store = await open_store(tmp_path)
    fields = dict(platform="slack", thread_key="T:C:1", customer_id="U1", customer_name="Ann",
                  language="en", text="hello")
    first = await store.accept(event_id="e1", **fields)
    second = await store.accept(event_id="e1", **fields)
    third = await store.accept(event_id="e2", **fields)
    messages = await store.messages(first[0].id)
    await store.close()
    assert second is None
    assert third[0].id == first[0].id
    assert [m.state for m in messages] == ["received", "received"]


async def test_one_open_conversation_per_thread(tmp_path):
    store = await open_store(tmp_path)
    fields = dict(platform="slack", thread_key="T:C:1", customer_id="U1", customer_name="",
                  language="en", text="hi")
    conv, _ = await store.accept(event_id="e1", **fields)
    closed = await store.transition(conv.id, to="closed", allowed_from=("bot",), actor="x")
    fresh, _ = await store.accept(event_id="e2", **fields)
    again = await store.transition(conv.id, to="closed", allowed_from=("bot",), actor="x")
    await store.close()
    assert closed.status == "closed"
    assert fresh.id != conv.id
    assert again is None


def test_head_revision_matches_alembic():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from supportbot.storage.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()


async def test_sqlite_connections_get_the_pragmas(tmp_path):
    store = await open_store(tmp_path)
    for _ in range(2):  # the first connection, and one opened after the pool lost it
        async with store.read() as conn:
            values = [(await conn.execute(text(f"pragma {name}"))).scalar()
                      for name in ("journal_mode", "busy_timeout", "foreign_keys")]
            assert values == ["wal", 5000, 1]
        await store.engine.dispose()
    await store.close()


async def test_writers_of_one_process_queue_for_the_connection_not_for_the_lock(
    tmp_path, monkeypatch
):
    """A write transaction that takes longer than the busy timeout must not make another task's
    write fail with "database is locked": in-process writers wait for the one connection.
    (SQLite's busy handler is not fair: writers polling it against each other starve.)"""
    from supportbot.storage import db

    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 100)
    store = await open_store(tmp_path)
    try:
        async with store.begin() as conn:
            await conn.execute(text("insert into handled_events (platform, event_id, created_at)"
                                    " values ('slack', 'Ev0', current_timestamp)"))
            other = asyncio.create_task(store.claim_event("slack", "Ev1"))
            await asyncio.sleep(0.3)  # three busy timeouts while holding the write lock
        assert await other is True
    finally:
        await store.close()


async def test_another_process_holding_the_write_lock_never_freezes_the_event_loop(tmp_path):
    """The staff CLI (or a backup) may hold SQLite's write lock: our write waits for it on
    aiosqlite's thread while the loop keeps serving everyone else."""
    import sqlite3

    store = await open_store(tmp_path)
    other = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # the write lock, as another process would hold it
        write = asyncio.create_task(store.claim_event("slack", "Ev1"))
        await asyncio.sleep(0.2)  # the loop runs on while the write waits for the lock
        assert not write.done()
        other.execute("COMMIT")
        assert await write is True
    finally:
        other.close()
        await store.close()
