"""Database URLs as people and platforms write them: mapped to the async drivers, DATABASE_URL
read when SUPPORTBOT_DATABASE_URL is unset, and one clear line (password masked) for a URL we
cannot use or a server we cannot reach."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from supportbot.cli import cli
from supportbot.config import Settings
from supportbot.database_url import DatabaseURLError, masked, normalize

POSTGRES_ADMIN = os.environ.get(
    "SUPPORTBOT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


@pytest.mark.parametrize(("written", "used"), [
    ("sqlite:///bot.db", "sqlite+aiosqlite:///bot.db"),
    ("sqlite:////var/lib/bot/bot.db", "sqlite+aiosqlite:////var/lib/bot/bot.db"),
    ("sqlite+pysqlite:///bot.db", "sqlite+aiosqlite:///bot.db"),
    ("sqlite+aiosqlite:///bot.db", "sqlite+aiosqlite:///bot.db"),
    ("postgres://u:p@db.example.com:5432/app", "postgresql+asyncpg://u:p@db.example.com:5432/app"),
    ("postgresql://u:p@db.example.com/app", "postgresql+asyncpg://u:p@db.example.com/app"),
    ("postgresql+psycopg2://u@h/app", "postgresql+asyncpg://u@h/app"),
    ("postgresql+asyncpg://u@h/app", "postgresql+asyncpg://u@h/app"),
    ("postgres://u:p@h/app?sslmode=require", "postgresql+asyncpg://u:p@h/app?ssl=require"),
    ("  postgres://u@h/app\n", "postgresql+asyncpg://u@h/app"),
])
def test_urls_as_written_map_to_the_async_drivers(written, used):
    assert normalize(written) == used


@pytest.mark.parametrize("url", ["mysql://root:hunter2@db/app", "mongodb://root:hunter2@db/app"])
def test_an_unknown_database_is_one_line_naming_the_setting(url):
    with pytest.raises(DatabaseURLError) as caught:
        normalize(url, "DATABASE_URL")
    message = str(caught.value)
    assert message.startswith("DATABASE_URL: unsupported database")
    assert "hunter2" not in message and "root:***@db" in message


def test_garbage_is_not_echoed():
    with pytest.raises(DatabaseURLError) as caught:
        normalize("hunter2 is my password")
    assert "hunter2" not in str(caught.value)
    assert masked("x://user:hunter2@h/d") == "x://user:***@h/d"


def settings_from(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name in ("SUPPORTBOT_DATABASE_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)


def test_platform_database_url_is_read_when_ours_is_unset(monkeypatch):
    settings = settings_from(monkeypatch, DATABASE_URL="postgres://u:p@h/app")
    assert settings.resolved_database_url == "postgresql+asyncpg://u:p@h/app"
    assert settings.database_setting == "DATABASE_URL"
    both = settings_from(monkeypatch, DATABASE_URL="postgres://u:p@h/app",
                         SUPPORTBOT_DATABASE_URL="sqlite:///mine.db")
    assert both.resolved_database_url == "sqlite+aiosqlite:///mine.db"
    assert both.database_setting == "SUPPORTBOT_DATABASE_URL"
    neither = settings_from(monkeypatch, SUPPORTBOT_DATA_DIR="/srv/bot")
    assert neither.resolved_database_url == "sqlite+aiosqlite:////srv/bot/supportbot.db"


def cli_env(tmp_path: Path, **env: str) -> dict[str, str | None]:
    return {"SUPPORTBOT_DATABASE_URL": None, "DATABASE_URL": None,
            "SUPPORTBOT_DATA_DIR": str(tmp_path), **env}


def test_unknown_scheme_stops_every_command_with_one_line(tmp_path):
    env = cli_env(tmp_path, DATABASE_URL="mysql://root:hunter2@db.example.com/app")
    for args in (["chat"], ["check"], ["serve"], ["conversations", "list"]):
        result = CliRunner().invoke(cli, args, env=env, input="hi\n")
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("DATABASE_URL: unsupported database")
        assert "hunter2" not in result.output


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_is_one_line_with_the_password_masked(tmp_path):
    url = f"postgres://bot:hunter2@127.0.0.1:{closed_port()}/app"
    for args in (["chat"], ["serve"]):
        result = CliRunner().invoke(cli, args, env=cli_env(tmp_path, DATABASE_URL=url),
                                    input="hi\n")
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.strip().splitlines()
                 if not line.startswith("{")]  # serve's start-up log line, then the error
        assert len(lines) == 1, result.output
        assert lines[0].startswith(
            "DATABASE_URL: cannot open the database postgresql+asyncpg://bot:***@127.0.0.1:")
        assert "hunter2" not in result.output and "Traceback" not in result.output
        if args == ["serve"]:  # its start-up log line says which files are in use
            assert "files in use: prompts: package defaults" in result.output
            assert "knowledge: the package's example FAQ" in result.output


def run_chat(folder: Path, text: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith("SUPPORTBOT_") and k != "DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "supportbot", "chat", "--json"], input=text, capture_output=True,
        text=True, cwd=folder, env={**environment, "SUPPORTBOT_LOG_LEVEL": "WARNING", **env},
        timeout=120,
    )


def test_sqlite_url_as_sqlalchemy_users_write_it(tmp_path):
    result = run_chat(tmp_path, "How long do refunds take?\n",
                      SUPPORTBOT_DATABASE_URL="sqlite:///bot.db")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outcome"] == "faq"
    assert (tmp_path / "bot.db").is_file()


async def _admin(sql: str) -> None:
    import asyncpg

    dsn = make_url(POSTGRES_ADMIN).set(drivername="postgresql")
    conn = await asyncpg.connect(dsn.render_as_string(hide_password=False), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def scratch_postgres() -> Iterator[str]:
    """A database of our own on the local server, as ``postgres://`` (Heroku's spelling)."""
    name = f"supportbot_url_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, TimeoutError, ImportError) as exc:
        if os.environ.get("SUPPORTBOT_TEST_POSTGRES_URL"):
            raise
        pytest.skip(f"no PostgreSQL server to try DATABASE_URL=postgres://… on: {exc}")
    base = make_url(POSTGRES_ADMIN).set(drivername="postgres", database=name)
    try:
        yield base.render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_heroku_style_postgres_url_works(tmp_path, scratch_postgres):
    assert scratch_postgres.startswith("postgres://")
    result = run_chat(tmp_path, "How long do refunds take?\n", DATABASE_URL=scratch_postgres)
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["outcome"] == "faq"
    assert not (tmp_path / ".supportbot" / "supportbot.db").exists()  # stored in PostgreSQL


def test_staff_and_report_commands_say_the_same_one_line(tmp_path):
    url = f"postgres://bot:hunter2@127.0.0.1:{closed_port()}/app"
    for args in (["report"], ["export", "--customer", "U1"], ["purge", "--older-than", "30"]):
        result = CliRunner().invoke(cli, args, env=cli_env(tmp_path, DATABASE_URL=url))
        assert result.exit_code == 2, (args, result.output)
        lines = [line for line in result.output.strip().splitlines()
                 if not line.startswith("{")]  # a staff command's audit log line
        assert lines and lines[-1].startswith("DATABASE_URL: cannot open the database"), lines
        assert "hunter2" not in result.output and "Traceback" not in result.output


def test_check_reports_a_postgres_server_that_does_not_answer(tmp_path):
    url = f"postgres://bot:hunter2@127.0.0.1:{closed_port()}/app"
    result = CliRunner().invoke(cli, ["check"], env=cli_env(tmp_path, DATABASE_URL=url))
    assert result.exit_code == 1
    assert "environment:0: DATABASE_URL: cannot open the database postgresql+asyncpg://bot:***@" \
        in result.output
    assert "hunter2" not in result.output


def test_check_passes_on_a_postgres_server_that_answers(tmp_path, scratch_postgres):
    result = CliRunner().invoke(cli, ["check"],
                                env=cli_env(tmp_path, DATABASE_URL=scratch_postgres))
    assert result.exit_code == 0, result.output
