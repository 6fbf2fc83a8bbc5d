"""Shared fixtures: a temp data dir per test, a FakeLLM on loopback, and the PostgreSQL pass.

With ``SUPPORTBOT_TEST_POSTGRES_URL`` set (e.g.
``postgresql+asyncpg://postgres@127.0.0.1:5432/postgres``) every test gets a fresh PostgreSQL
database, cloned from a template migrated once per session (a clone takes tens of milliseconds,
migrating each one would not), and ``SUPPORTBOT_DATABASE_URL`` points at it, so every
``Settings()`` and every subprocess the test starts uses PostgreSQL instead of SQLite.
Mark a test ``@pytest.mark.sqlite_only`` when it is about SQLite itself.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import itertools
import os
import sys
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

# Each xdist worker imports every test module (pytest rewrites their asserts) and the package,
# and the tests start ~100 bot, CLI and benchmark processes. With bytecode caching off
# (PYTHONDONTWRITEBYTECODE, common in containers and set on our CI machines) each of them
# compiles what it imports again (collecting: 8.4 s of CPU per worker instead of 3.2 s). The
# cache lands in git-ignored __pycache__ folders.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # for the processes the tests start

import pytest  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from supportbot.testing.fake_llm import FakeLLM  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
POSTGRES_ENV = "SUPPORTBOT_TEST_POSTGRES_URL"
POSTGRES_URL = os.environ.get(POSTGRES_ENV, "")
ENABLE_HINT = (
    f"PostgreSQL only: set {POSTGRES_ENV}=postgresql+asyncpg://postgres@127.0.0.1:5432/postgres "
    "(a server where that user may CREATE DATABASE) to run it"
)
T = TypeVar("T")
CLONE_AHEAD = 2  # databases cloned ahead of the tests that will use them


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: about SQLite itself; skipped on PostgreSQL")
    config.addinivalue_line("markers", "postgres_only: needs " + POSTGRES_ENV)


def pytest_report_header(config: pytest.Config) -> str:
    if POSTGRES_URL:
        return f"database: PostgreSQL ({make_url(POSTGRES_URL).render_as_string()})"
    return f"database: SQLite (set {POSTGRES_ENV} for the PostgreSQL pass)"


# pytest-xdist (see pyproject.toml: three workers, ``--dist loadgroup``): each test is its own
# work unit, handed to whichever worker is free, so one slow module is not one worker's tail.
# Modules whose tests fill the machine with processes for tens of seconds (kill -9 under a
# burst, the storm) share one group, so they run one after another on one worker (side by side
# each would starve the other's deadlines) while the others run the rest; xdist hands out
# groups, its largest units, in the first round. A lock file keeps them apart even where the
# group is not honoured (pytest 9.2 broke loadgroup, pytest-xdist#1386; pyproject pins below
# it) or tests are distributed another way.
MACHINE_FILLING = ("test_crash_burst", "test_storm")
# Modules whose module fixtures are the expensive part (the handoff rules scored over the dev
# set) stay on one worker each, so the fixture runs once, not once per worker.
ONE_WORKER = ("test_handoff_quality", "test_handoff_triggers")
# Then the slow ones (subprocesses, servers; seconds each) go first, so they overlap the short
# tests instead of being the tail the other workers wait for. Only the order changes.
SLOW_FIRST = (
    "test_crash_burst", "test_storm", "test_bench_smoke", "test_crash_recovery",
    "test_multiprocess", "test_cli_chat", "test_hostile_input", "test_init", "test_secrets",
    "test_doors_fuzz", "test_config_database", "test_feedback", "test_report", "test_server",
    "test_security_limits", "test_flaky_platform", "test_engine",
)


@pytest.fixture(scope="module", autouse=True)
def _one_machine_filling_module_at_a_time(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Hold an exclusive lock on a file all workers see (the parent of each worker's basetemp)
    while a machine-filling module runs; autouse, so it is taken before the module's own
    fixtures start their processes."""
    if Path(str(request.path)).stem not in MACHINE_FILLING:
        yield
        return
    lock_path = tmp_path_factory.getbasetemp().parent / "machine-filling.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups off the items
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if POSTGRES_URL and item.get_closest_marker("sqlite_only"):
            item.add_marker(pytest.mark.skip(reason="SQLite-specific; this is the PostgreSQL pass"))
        if not POSTGRES_URL and item.get_closest_marker("postgres_only"):
            item.add_marker(pytest.mark.skip(reason=ENABLE_HINT))
        stem = Path(item.path).stem
        if stem in MACHINE_FILLING:
            item.add_marker(pytest.mark.xdist_group("machine_filling"))
        elif stem in ONE_WORKER:
            item.add_marker(pytest.mark.xdist_group(stem))
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    # a stable sort: the order within a module stays as written
    items.sort(key=lambda item: rank.get(Path(item.path).stem, len(rank)))


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM() as fake:
        yield fake


SHARED_DATASETS = Path(os.environ.get("SUPPORTBOT_DATASETS", REPO.parent / "shared" / "datasets"))


def shared_dataset(name: str) -> Path:
    """A read-only dataset in ``../shared/datasets``: a test that needs one is skipped on a
    machine without it, but fails in CI (``CI`` set), where a skip would hide a lost check."""
    path = SHARED_DATASETS / name
    if not path.is_dir():
        message = f"dataset {name!r} not found at {path} (../shared is absent)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run this test", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture
def stackfaq() -> Path:
    """StackFAQ (``faq.jsonl``, ``queries.jsonl``); see ``shared_dataset``."""
    return shared_dataset("stackfaq")


@pytest.fixture
def afqmc() -> Path:
    """AFQMC's Chinese customer-service questions (``faq.jsonl``, ``queries.jsonl``)."""
    return shared_dataset("afqmc-train")


class PostgresAdmin:
    """CREATE/DROP DATABASE on one asyncpg connection, from a loop in a thread of its own, so
    sync fixtures can use it without touching the event loop pytest-asyncio gives each test."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.url = parsed
        self.dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        self.prefix = f"supportbot_test_{os.getpid()}"
        self.template = f"{self.prefix}_template"
        self._names = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._conn: Any = None
        self._dropper: Any = None
        self._drops: list[Any] = []
        self._drop_lock = asyncio.Lock()
        self._create_lock = asyncio.Lock()
        self._ahead: collections.deque[Any] = collections.deque()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=120)

    def database_url(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    async def _execute(self, sql: str) -> None:
        import asyncpg

        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.dsn)
        await self._conn.execute(sql)

    async def _drop(self, name: str) -> None:
        import asyncpg

        async with self._drop_lock:
            if self._dropper is None or self._dropper.is_closed():
                self._dropper = await asyncpg.connect(self.dsn)
            await self._dropper.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def start(self) -> None:
        from supportbot.storage import Store

        async def build() -> None:
            await self._execute("SELECT 1")
            for row in await self._conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE 'supportbot\\_test\\_%'"
            ):
                if not _alive(int(row["datname"].split("_")[2])):  # left by a killed run
                    await self._execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
            await self._execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
            await self._execute(f'CREATE DATABASE "{self.template}"')
            store = await Store.open(self.database_url(self.template))
            await store.close()

        self.run(build())

    async def _create(self, name: str) -> str:
        async with self._create_lock:
            await self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    def create(self) -> str:
        """A fresh database; the next ones are cloned in the background meanwhile, so a test
        rarely waits for the server's copy."""
        while len(self._ahead) < 1 + CLONE_AHEAD:
            name = f"{self.prefix}_{next(self._names)}"
            self._ahead.append(asyncio.run_coroutine_threadsafe(self._create(name), self._loop))
        return str(self._ahead.popleft().result(timeout=120))

    def drop(self, name: str) -> None:
        """Dropped on a connection of its own while the next test already runs."""
        self._drops.append(asyncio.run_coroutine_threadsafe(self._drop(name), self._loop))

    def close(self) -> None:
        async def finish() -> None:
            await self._execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
            await self._conn.close()
            if self._dropper is not None:
                await self._dropper.close()

        for unused in self._ahead:
            self.drop(unused.result(timeout=120))
        for pending in self._drops:
            pending.result(timeout=120)

        try:
            self.run(finish())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[PostgresAdmin | None]:
    if not POSTGRES_URL:
        yield None
        return
    admin = PostgresAdmin(POSTGRES_URL)
    admin.start()
    try:
        yield admin
    finally:
        admin.close()


@pytest.fixture(autouse=True)
def database_url(
    postgres_admin: PostgresAdmin | None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str | None]:
    """The PostgreSQL database this test uses (``None`` on the SQLite pass)."""
    if postgres_admin is None:
        monkeypatch.delenv("SUPPORTBOT_DATABASE_URL", raising=False)
        yield None
        return
    name = postgres_admin.create()
    url = postgres_admin.database_url(name)
    monkeypatch.setenv("SUPPORTBOT_DATABASE_URL", url)
    try:
        yield url
    finally:
        postgres_admin.drop(name)


@pytest.fixture
def postgres_url(database_url: str | None) -> str:
    """This test's fresh PostgreSQL database; skips the test on the SQLite pass."""
    if database_url is None:
        pytest.skip(ENABLE_HINT)
    return database_url


@pytest.fixture
def postgres_admin_dsn(postgres_admin: PostgresAdmin | None) -> str:
    """A plain asyncpg DSN to the maintenance database, for pg_locks / pg_terminate_backend."""
    if postgres_admin is None:
        pytest.skip(ENABLE_HINT)
    return postgres_admin.dsn
