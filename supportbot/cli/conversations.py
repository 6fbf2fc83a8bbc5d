"""Staff tools: list, read, export, hand back and close conversations."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from supportbot.cli.common import load_settings, with_engine
from supportbot.cli.data import require_staff

if TYPE_CHECKING:  # imported when a command runs (see supportbot.cli.common)
    from supportbot.engine import Engine

STATUSES = ("bot", "waiting", "human", "closed")


@click.group()
def conversations() -> None:
    """Read and act on conversations (an audit trail records every change)."""


@conversations.command("list")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def list_(status: str | None, limit: int, as_json: bool) -> None:
    """Most recently active conversations."""

    async def work(engine: Engine) -> None:
        for conv in await engine.store.list_conversations(status=status, limit=limit):
            row = {
                "id": conv.id, "platform": conv.platform, "thread": conv.thread_key,
                "customer": conv.customer_name or conv.customer_id, "status": conv.status,
                "assignee": conv.assignee, "bot_failed": conv.bot_failed,
                "updated_at": conv.updated_at.isoformat(),
            }
            if as_json:
                click.echo(json.dumps(row, ensure_ascii=False))
            else:
                flag = " !bot-failed" if conv.bot_failed else ""
                click.echo(f"{conv.id:>6}  {conv.status:<8} {conv.platform:<9} "
                           f"{row['customer']:<20} {conv.updated_at:%Y-%m-%d %H:%M}"
                           f"{'  ' + conv.assignee if conv.assignee else ''}{flag}")

    with_engine(load_settings(), work)


async def _export(engine: Engine, conversation_id: int) -> dict[str, Any] | None:
    conv = await engine.store.conversation(conversation_id)
    if conv is None:
        return None
    return {
        "id": conv.id,
        "platform": conv.platform,
        "thread_key": conv.thread_key,
        "customer_id": conv.customer_id,
        "customer_name": conv.customer_name,
        "status": conv.status,
        "assignee": conv.assignee,
        "language": conv.language,
        "bot_failed": conv.bot_failed,
        "handoff_reason": conv.handoff_reason,
        "created_at": conv.created_at.isoformat(),
        "messages": [
            {
                "id": m.id, "role": m.role, "text": m.text, "state": m.state,
                "author": m.author, "outcome": m.outcome, "sources": m.sources,
                "prompt_tokens": m.prompt_tokens, "completion_tokens": m.completion_tokens,
                "created_at": m.created_at.isoformat(),
            }
            for m in await engine.store.messages(conv.id)
        ],
        "transitions": [
            {
                "from": t.from_status, "to": t.to_status, "actor": t.actor,
                "reason": t.reason, "at": t.created_at.isoformat(),
            }
            for t in await engine.store.transitions(conv.id)
        ],
    }


def _missing(conversation_id: int) -> None:
    click.echo(f"conversation {conversation_id} not found", err=True)
    sys.exit(1)


@conversations.command()
@click.argument("conversation_id", type=int)
def show(conversation_id: int) -> None:
    """Full history with the audit trail."""
    data = with_engine(load_settings(), lambda e: _export(e, conversation_id))
    if data is None:
        _missing(conversation_id)
        return
    click.echo(f"#{data['id']} {data['platform']} {data['thread_key']} — {data['status']}"
               f"{' (assigned to ' + data['assignee'] + ')' if data['assignee'] else ''}")
    click.echo(f"customer: {data['customer_name'] or data['customer_id']}  "
               f"language: {data['language']}")
    events = [(m["created_at"], f"{m['role']:>9}: {m['text']}"
               + (f"  [{m['state']}]" if m["state"] not in ("sent", "answered") else ""))
              for m in data["messages"]]
    events += [(t["at"], f"   status: {t['from']} -> {t['to']} by {t['actor']}"
                + (f" ({t['reason']})" if t["reason"] else "")) for t in data["transitions"]]
    for at, line in sorted(events, key=lambda e: e[0]):
        click.echo(f"{at[:19].replace('T', ' ')}  {line}")


@conversations.command()
@click.argument("conversation_id", type=int)
def export(conversation_id: int) -> None:
    """One conversation as JSON (messages and transitions)."""
    data = with_engine(load_settings(), lambda e: _export(e, conversation_id))
    if data is None:
        _missing(conversation_id)
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


def _staff_action(action: str, conversation_id: int) -> None:
    settings = load_settings()
    as_user = require_staff(settings, f"conversations {action}")

    async def work(engine: Engine) -> bool:
        method = getattr(engine, action)
        return bool(await method(conversation_id, f"cli:{as_user}"))

    if not with_engine(settings, work):
        click.echo(f"conversation {conversation_id}: nothing to {action.replace('_', ' ')} "
                   "(not found, or not in a state that allows it)", err=True)
        sys.exit(1)
    click.echo(f"conversation {conversation_id}: done")


@conversations.command()
@click.argument("conversation_id", type=int)
def handback(conversation_id: int) -> None:
    """Give the thread back to the bot."""
    _staff_action("hand_back", conversation_id)


@conversations.command()
@click.argument("conversation_id", type=int)
def close(conversation_id: int) -> None:
    """Close the thread; the customer's next message starts a fresh conversation."""
    _staff_action("close", conversation_id)


@conversations.command()
@click.argument("conversation_id", type=int)
def take(conversation_id: int) -> None:
    """Take the thread over (the bot goes silent in it)."""
    _staff_action("take_over", conversation_id)
