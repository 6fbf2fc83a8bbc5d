"""Database URLs as people and platforms write them, turned into the async drivers we run on.

SQLAlchemy users write ``sqlite:///bot.db``; Heroku, Render and Fly hand over
``postgres://user:pass@host/db?sslmode=require``. Our storage runs on SQLAlchemy's asyncio
extension, which needs an async driver (aiosqlite, asyncpg) named in the URL, and asyncpg calls
``sslmode`` ``ssl``. This module maps the usual spellings and says in one line what is wrong with
the others, with the password masked.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

SQLITE = "sqlite+aiosqlite"
POSTGRES = "postgresql+asyncpg"
_DRIVERS = {
    "sqlite": SQLITE,
    "sqlite+pysqlite": SQLITE,
    "sqlite+aiosqlite": SQLITE,
    "postgres": POSTGRES,
    "postgresql": POSTGRES,
    "postgresql+psycopg2": POSTGRES,
    "postgresql+psycopg": POSTGRES,
    "postgresql+asyncpg": POSTGRES,
}


class DatabaseURLError(ValueError):
    """A URL we cannot use; the message names the setting and shows the URL masked."""


def masked(url: str | URL) -> str:
    """The URL with its password replaced by ``***`` (safe for logs and error messages)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        # not even parseable: keep the scheme, drop whatever could be a credential
        text = str(url)
        scheme, sep, _ = text.partition("://")
        return f"{scheme}://***" if sep else "***"


def normalize(url: str, setting: str = "SUPPORTBOT_DATABASE_URL") -> str:
    """``url`` with the async driver for its database; raises :class:`DatabaseURLError`."""
    try:
        parsed = make_url(url.strip())
    except ArgumentError:
        raise DatabaseURLError(
            f"{setting}: not a database URL ({masked(url)}); use sqlite:///path/to/file.db or "
            "postgresql://user:password@host:5432/database"
        ) from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise DatabaseURLError(
            f"{setting}: unsupported database {parsed.drivername!r} in {masked(parsed)}; "
            "supportbot runs on SQLite (sqlite:///path/to/file.db) or PostgreSQL "
            "(postgresql://user:password@host:5432/database)"
        )
    parsed = parsed.set(drivername=driver)
    if driver == POSTGRES and "sslmode" in parsed.query:
        # libpq's name for it; asyncpg takes the same modes as ``ssl``
        query = dict(parsed.query)
        query.setdefault("ssl", query.pop("sslmode"))
        query.pop("sslmode", None)
        parsed = parsed.set(query=query)
    return parsed.render_as_string(hide_password=False)


async def unreachable(url: str, setting: str, seconds: float = 15.0) -> str | None:
    """Connect once; ``None`` when that works, else one line: which setting, what was tried
    (password masked) and why it failed. Commands call it before they start, so a wrong URL or
    a server that is down reads as a sentence, not a traceback from deep inside a driver."""
    from supportbot.storage.db import create_engine

    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with asyncio.timeout(seconds), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (DBAPIError, OSError, TimeoutError) as exc:
        return f"{setting}: cannot open the database {masked(url)}: {_reason(exc, url)}"
    finally:
        await engine.dispose()
    return None


def _reason(exc: BaseException, url: str) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer (timed out)"
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    password = make_url(url).password
    return reason.replace(str(password), "***") if password else reason
