"""Data rights: ``supportbot export`` and ``supportbot purge``, and who may run staff commands.

Staff commands act on a database that may be shared by several people; when
``SUPPORTBOT_STAFF_CLI_USERS`` lists OS user names, only those may run them (anyone else is
refused and the attempt is logged). This guards against mistakes on a shared host, not against
someone who can open the database file directly: file permissions do that.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import click

from supportbot.cli.common import load_settings, require_database
from supportbot.config import Settings
from supportbot.storage import Store
from supportbot.storage.retention import (
    PurgeCounts,
    export_customer,
    purge_customer,
    purge_older_than,
)

log = logging.getLogger("supportbot.cli")
T = TypeVar("T")


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return ""


def require_staff(settings: Settings, action: str) -> str:
    """Return the OS user name, or exit with status 3 if it may not run staff commands."""
    user = os_user()
    allowed = settings.staff_cli_users
    if allowed and user not in allowed:
        log.warning("staff command refused for a non-staff OS user",
                    extra={"os_user": user, "action": action})
        click.echo(f"{action}: refused: OS user {user!r} is not in SUPPORTBOT_STAFF_CLI_USERS",
                   err=True)
        sys.exit(3)
    log.info("staff command", extra={"os_user": user, "action": action})
    return user


def _run_store(settings: Settings, work: Callable[[Store], Awaitable[T]]) -> T:
    """Just the store: data commands need no knowledge index, prompts or LLM."""
    require_database(settings)

    async def run() -> T:
        store = await Store.open(
            settings.resolved_database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


@click.command("export")
@click.option("--customer", "customer_id", required=True, help="The platform's user id.")
@click.option("--platform", help="slack, telegram, … (default: every platform).")
def export(customer_id: str, platform: str | None) -> None:
    """One customer's data as JSON (an access request)."""
    settings = load_settings()
    require_staff(settings, "export")
    data = _run_store(settings, lambda store: export_customer(store, customer_id, platform))
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


def _report(counts: PurgeCounts, dry_run: bool) -> None:
    verb = "would delete" if dry_run else "deleted"
    parts = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in counts.as_dict().items())
    click.echo(f"{verb}: {parts}")


@click.command()
@click.option("--older-than", "days", type=click.IntRange(min=0),
              help="Delete conversations with no activity for this many days.")
@click.option("--customer", "customer_id", help="Delete everything about this customer.")
@click.option("--platform", help="With --customer: only this platform.")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def purge(days: int | None, customer_id: str | None, platform: str | None, dry_run: bool,
          as_json: bool) -> None:
    """Delete old conversations (a retention period) or one customer's data (a deletion
    request), with their messages and audit trail. The text is erased from the database files
    too (SQLite: overwritten and checkpointed out of the write-ahead log). Platform event ids
    (no text) stay as tombstones so a redelivery is not answered again; --older-than also
    deletes event ids older than the cutoff (and older than 2 days)."""
    if (days is None) == (customer_id is None):
        raise click.UsageError("give exactly one of --older-than DAYS or --customer ID")
    if platform and customer_id is None:
        raise click.UsageError("--platform goes with --customer")
    settings = load_settings()
    require_staff(settings, "purge")
    if customer_id is not None:
        counts = _run_store(
            settings, lambda s: purge_customer(s, customer_id, platform, dry_run=dry_run)
        )
    else:
        assert days is not None
        cutoff = datetime.now(UTC) - timedelta(days=days)
        counts = _run_store(settings, lambda s: purge_older_than(s, cutoff, dry_run=dry_run))
    log.info("purge", extra={"dry_run": dry_run, **counts.as_dict()})
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, **counts.as_dict()}))
    else:
        _report(counts, dry_run)
