"""PostgreSQL as the shared database of several processes: each ``Store``/``Engine`` below has
its own connection pool, exactly as separate ``supportbot serve`` processes would.

Skipped unless ``SUPPORTBOT_TEST_POSTGRES_URL`` is set (see tests/conftest.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from supportbot.engine import Outcome
from supportbot.storage import Store
from supportbot.storage.store import _lock_key
from supportbot.testing import waiting
from supportbot.testing.bot import OfflineBot
from supportbot.testing.fake_llm import FakeLLM

pytestmark = pytest.mark.postgres_only
WAIT = 15.0  # upper bound for anything below to happen; nothing here should take a second


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    await waiting.eventually(check, within=WAIT, interval=0.02, what=what)


class Admin:
    """A separate superuser session: reads pg_locks, terminates backends, takes table locks."""

    def __init__(self, conn: asyncpg.Connection, database: str) -> None:
        self.conn, self.database = conn, database

    async def lock_waiters(self) -> int:
        return int(await self.conn.fetchval(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = $1",
            self.database,
        ))

    async def waiting_pids(self, locktype: str) -> list[int]:
        rows = await self.conn.fetch(
            "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = $1 AND NOT l.granted AND a.datname = $2",
            locktype, self.database,
        )
        return [r["pid"] for r in rows]

    async def terminate_all(self) -> int:
        return int(await self.conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            self.database,
        ))


@pytest.fixture
async def admin(postgres_url: str, postgres_admin_dsn: str) -> Any:
    conn = await asyncpg.connect(postgres_admin_dsn)
    try:
        yield Admin(conn, postgres_url.rsplit("/", 1)[1])
    finally:
        await conn.close()


@pytest.fixture
async def stores(postgres_url: str) -> Any:
    """Two stores on one database, as two processes would have."""
    opened = [await Store.open(postgres_url, pool_size=2, max_overflow=0) for _ in range(2)]
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()


async def test_thread_lock_serialises_one_thread_across_stores(stores: list[Store],
                                                                admin: Admin) -> None:
    first, second = stores
    entered: list[str] = []
    release = asyncio.Event()

    async def hold(store: Store, name: str) -> None:
        async with store.thread_lock("telegram", "42"):
            entered.append(name)
            await release.wait()

    a = asyncio.create_task(hold(first, "a"))
    await eventually(lambda: _true(entered == ["a"]), "the first holder")
    b = asyncio.create_task(hold(second, "b"))
    await eventually(lambda: _eq(admin.lock_waiters(), 1), "the second store to wait")
    assert entered == ["a"]
    # another thread is not held up by it
    async with second.thread_lock("telegram", "43"):
        pass
    release.set()
    await asyncio.wait_for(asyncio.gather(a, b), WAIT)
    assert entered == ["a", "b"]


async def test_waiting_for_thread_locks_does_not_starve_the_pool(postgres_url: str,
                                                                   tmp_path: Path) -> None:
    """More concurrent threads than pooled connections: waiting lock holders must not take
    the connections the running ones need to finish (that deadlocked until the pool timed
    out when the locks shared the main pool)."""
    async with OfflineBot(tmp_path, db_pool_size=1, db_max_overflow=0) as bot:
        replies = await asyncio.wait_for(
            asyncio.gather(*(bot.ask("How long do refunds take?", thread=f"t{i}")
                             for i in range(6))),
            WAIT,
        )
    assert [r.outcome for r in replies] == [Outcome.FAQ] * 6


async def test_one_reply_per_event_when_delivered_to_two_processes(postgres_url: str,
                                                                    tmp_path: Path) -> None:
    async with OfflineBot(tmp_path / "a") as a, OfflineBot(tmp_path / "b") as b:
        outcomes = []
        for i in range(10):
            pair = await asyncio.gather(
                a.ask("How long do refunds take?", thread=f"t{i % 3}", message_id=f"e{i}"),
                b.ask("How long do refunds take?", thread=f"t{i % 3}", message_id=f"e{i}"),
            )
            outcomes.append(sorted(str(r.outcome) for r in pair))
        assert outcomes == [sorted([str(Outcome.FAQ), str(Outcome.DUPLICATE)])] * 10
        assert a.engine is not None
        assert await a.engine.store.count_messages() == 20  # 10 questions, 10 answers


async def test_exactly_one_of_two_processes_takes_a_thread(postgres_url: str,
                                                            tmp_path: Path) -> None:
    async with OfflineBot(tmp_path / "a") as a, OfflineBot(tmp_path / "b") as b:
        assert a.engine is not None and b.engine is not None
        ids = []
        for i in range(8):
            view = await a.engine.request_handoff("test", f"t{i}", "c", "customer", "test:c")
            ids.append(view.id)
        for conv_id in ids:
            won = await asyncio.gather(
                a.engine.take_over(conv_id, "test:alice"),
                b.engine.take_over(conv_id, "test:bob"),
            )
            assert sorted(won) == [False, True]
            moves = [(t.from_status, t.to_status)
                     for t in await a.engine.store.transitions(conv_id)]
            assert moves.count(("waiting", "human")) == 1
            conv = await b.engine.store.conversation(conv_id)
            assert conv is not None and conv.status == "human"
            assert conv.assignee == ("test:alice" if won[0] else "test:bob")


async def test_thread_order_holds_across_processes(postgres_url: str, tmp_path: Path,
                                                   admin: Admin) -> None:
    """Three engines, one thread: the second and third message arrive while the first is
    still with the LLM; they wait their turn and each sees the answers before it."""
    gate = threading.Event()

    def responder(messages: list[dict[str, Any]]) -> str:
        last = messages[-1]["content"]
        if "first" in last:
            gate.wait(WAIT)
        return f"answer to {last.split()[-1]}"

    with FakeLLM(responder=responder) as fake:
        llm = {"llm_base_url": fake.url, "llm_api_key": "sk-test", "llm_stream": False}
        async with (OfflineBot(tmp_path / "a", **llm) as a,
                    OfflineBot(tmp_path / "b", **llm) as b,
                    OfflineBot(tmp_path / "c", **llm) as c):
            one = asyncio.create_task(a.ask("please answer the first", message_id="1"))
            await eventually(lambda: _true(len(fake.chat_requests()) == 1), "the first LLM call")
            two = asyncio.create_task(b.ask("please answer the second", message_id="2"))
            await eventually(lambda: _eq(admin.lock_waiters(), 1), "the second to wait")
            three = asyncio.create_task(c.ask("please answer the third", message_id="3"))
            await eventually(lambda: _eq(admin.lock_waiters(), 2), "the third to wait")
            assert len(fake.chat_requests()) == 1
            gate.set()
            replies = await asyncio.wait_for(asyncio.gather(one, two, three), WAIT)
        asked = [r.messages[-1]["content"] for r in fake.chat_requests()]
        third_saw = [m["content"] for m in fake.chat_requests()[2].messages[1:]]
    assert [r.text for r in replies] == ["answer to first", "answer to second", "answer to third"]
    assert asked == ["please answer the first", "please answer the second",
                     "please answer the third"]
    assert third_saw == ["please answer the first", "answer to first",
                         "please answer the second", "answer to second",
                         "please answer the third"]


async def test_only_one_process_gets_a_singleton_lock(stores: list[Store]) -> None:
    first, second = stores
    async with first.try_singleton_lock("telegram-polling") as held:
        assert held
        async with second.try_singleton_lock("telegram-polling") as other:
            assert not other
        assert await second.try_singleton_lock("other-job").acquire()
    lock = second.try_singleton_lock("telegram-polling")
    assert await lock.acquire()
    assert not await first.try_singleton_lock("telegram-polling").acquire()
    await lock.release()
    assert await first.try_singleton_lock("telegram-polling").acquire()


async def test_singleton_lock_is_released_when_its_connection_dies(stores: list[Store],
                                                                    admin: Admin) -> None:
    first, second = stores
    assert await first.try_singleton_lock("telegram-polling").acquire()
    assert not await second.try_singleton_lock("telegram-polling").acquire()
    await admin.terminate_all()  # the holder's process is gone, as far as the server knows
    assert await second.try_singleton_lock("telegram-polling").acquire()


async def test_store_survives_terminated_backends(postgres_url: str, tmp_path: Path,
                                                  admin: Admin) -> None:
    async with OfflineBot(tmp_path) as bot:
        for i in range(5):
            assert await admin.terminate_all() >= 1  # the bot's pooled connections died
            reply = await bot.ask("How long do refunds take?", thread=f"t{i}")
            assert reply.outcome == Outcome.FAQ
        assert bot.engine is not None
        assert await bot.engine.store.count_messages() == 10


async def test_query_killed_mid_flight_is_retried(stores: list[Store], admin: Admin,
                                                  postgres_url: str) -> None:
    """pool_pre_ping cannot help once a query is running: hold a table lock so a transition
    is stuck on the server, terminate that backend, and the store must retry on a fresh
    connection instead of failing."""
    store = stores[0]
    conv = await store.open_conversation(platform="test", thread_key="t", customer_id="c",
                                         language="en")
    blocker = await asyncpg.connect(postgres_url.replace("+asyncpg", ""))
    await blocker.execute("BEGIN")
    await blocker.execute("LOCK TABLE conversations IN ACCESS EXCLUSIVE MODE")
    move = asyncio.create_task(
        store.transition(conv.id, to="waiting", allowed_from=("bot",), actor="test:x")
    )
    await eventually(lambda: _len(admin.waiting_pids("relation"), 1), "the stuck transition")
    for pid in await admin.waiting_pids("relation"):
        await admin.conn.execute("SELECT pg_terminate_backend($1)", pid)
    await asyncio.sleep(0.05)
    await blocker.execute("COMMIT")
    await blocker.close()
    moved = await asyncio.wait_for(move, WAIT)
    assert moved is not None and moved.status == "waiting"


async def test_lock_waiter_killed_mid_wait_still_gets_the_lock(stores: list[Store],
                                                                admin: Admin) -> None:
    first, second = stores
    release = asyncio.Event()
    entered: list[str] = []

    async def hold(store: Store, name: str) -> None:
        async with store.thread_lock("slack", "C1:1.0"):
            entered.append(name)
            await release.wait()

    a = asyncio.create_task(hold(first, "a"))
    await eventually(lambda: _true(entered == ["a"]), "the first holder")
    b = asyncio.create_task(hold(second, "b"))
    await eventually(lambda: _eq(admin.lock_waiters(), 1), "the waiter")
    for pid in await admin.waiting_pids("advisory"):
        await admin.conn.execute("SELECT pg_terminate_backend($1)", pid)
    # the waiter reconnects and queues again; it must not have slipped in
    await eventually(lambda: _eq(admin.lock_waiters(), 1), "the waiter to queue again")
    assert entered == ["a"]
    release.set()
    await asyncio.wait_for(asyncio.gather(a, b), WAIT)
    assert entered == ["a", "b"]
    # nothing is left locked
    async with first.lock_engine.connect() as conn:  # type: ignore[union-attr]
        key = _lock_key("slack\0C1:1.0")
        assert await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})


async def test_processes_starting_together_migrate_once(postgres_admin_dsn: str,
                                                        postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_admin_dsn)
    name = postgres_url.rsplit("/", 1)[1] + "_empty"
    await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = postgres_url.rsplit("/", 1)[0] + "/" + name
        opened = await asyncio.wait_for(
            asyncio.gather(*(Store.open(url) for _ in range(3))), WAIT
        )
        for store in opened:
            assert await store.count_messages() == 0
            await store.close()
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def _true(value: bool) -> bool:
    return value


async def _eq(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _len(value: Awaitable[list[int]], expected: int) -> bool:
    return len(await value) == expected


async def test_each_waiting_notice_is_claimed_by_one_process(stores: list[Store]) -> None:
    first, second = stores
    conv = await first.open_conversation(platform="test", thread_key="t", customer_id="c",
                                         language="en")
    for seen in range(3):
        won = await asyncio.gather(first.claim_wait_notice(conv.id, seen),
                                   second.claim_wait_notice(conv.id, seen))
        assert sorted(won) == [False, True]
    fresh = await second.conversation(conv.id)
    assert fresh is not None and fresh.wait_notices == 3
