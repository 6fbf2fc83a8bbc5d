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


async def test_the_write_ahead_log_is_checkpointed_off_the_event_loop(tmp_path):
    """Commits on the loop never checkpoint (that fsyncs); a worker thread copies the log into
    the database file while the store stays open."""
    import sqlite3

    store = await open_store(tmp_path)
    for i in range(3):
        await store.claim_event("slack", f"Ev{i}")
    async with store.read() as conn:
        autocheckpoint = (await conn.execute(text("pragma wal_autocheckpoint"))).scalar()

    def in_database_file() -> int:
        """Rows the database file itself holds, ignoring the log (read-only, immutable)."""
        uri = f"file:{tmp_path / 'db.sqlite'}?immutable=1"
        try:
            with sqlite3.connect(uri, uri=True) as db:
                return db.execute("select count(*) from handled_events").fetchone()[0]
        except sqlite3.OperationalError:  # not even the schema checkpointed yet
            return 0

    for _ in range(100):
        if (checkpointed := in_database_file()) == 3:
            break
        await asyncio.sleep(0.1)
    await store.close()  # (closing checkpoints anyway: look before it)
    assert autocheckpoint == 0
    assert checkpointed == 3


async def test_if_background_checkpoints_stop_sqlite_checkpoints_in_commits_again(
    tmp_path, monkeypatch
):
    import sqlite3

    store = await open_store(tmp_path)
    async with store.read() as conn:  # the store's own connection, checkpoints off
        before = (await conn.execute(text("pragma wal_autocheckpoint"))).scalar()

    def refuse(*args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(sqlite3, "connect", refuse)  # the checkpointer has not started yet
    for _ in range(50):
        await asyncio.sleep(0.01)
    monkeypatch.undo()
    async with store.read() as conn:
        after = (await conn.execute(text("pragma wal_autocheckpoint"))).scalar()
    await store.close()
    assert (before, after) == (0, 1000)
