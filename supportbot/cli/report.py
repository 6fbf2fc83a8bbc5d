"""``supportbot report``: does the bot help, what does it cost, what should staff write next."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from supportbot.cli.common import load_settings, require_database
from supportbot.storage import Store
from supportbot.storage.reports import build_report

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$", re.IGNORECASE)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``7d``, ``24h``, ``30m``, ``2w`` back from now, or an ISO date/time (UTC if naive)."""
    now = now or datetime.now(UTC)
    match = _SPAN.match(value)
    if match:
        return now - timedelta(**{_UNITS[match.group(2).lower()]: float(match.group(1))})
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: use a span like 7d, 24h, 30m, 2w or a date like 2026-01-31"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def render_text(data: dict[str, Any], currency: str = "") -> str:
    m, a, fb, tok = data["messages"], data["answered"], data["feedback"], data["tokens"]
    wait = data["median_first_human_response_seconds"]
    lines = [
        f"Since {data['since'][:16].replace('T', ' ')} UTC",
        f"Conversations:        {data['conversations']}",
        f"Messages:             {m['total']} (customer {m['customer']}, bot {m['bot']}, "
        f"staff {m['staff']})",
        f"Answered from FAQ:    {a['faq']}",
        f"Answered by LLM:      {a['llm']}",
        f"Didn't know:          {a['dont_know']}",
        f"LLM failures:         {a['llm_failed']}",
        f"Limited:              {a['limited']}",
        f"Handed off:           {data['handed_off']} ({_pct(data['handoff_rate'])} of "
        "conversations)",
    ]
    for trigger, count in data["handoffs_by_trigger"].items():
        lines.append(f"  {trigger:<20}{count}")
    lines += [
        f"Resolution rate:      {_pct(data['resolution_rate'])} (no handoff, no thumbs-down)",
        "Median first human response: "
        + ("n/a" if wait is None else _duration(wait)),
        f"Feedback:             {fb['helpful']} helpful, {fb['unhelpful']} not helpful",
        f"Tokens:               {tok['total']} (prompt {tok['prompt']}, completion "
        f"{tok['completion']}; {tok['estimated_replies']} replies estimated)",
        f"Cost:                 {currency}{data['cost']:.4f}",
    ]
    if data["top_faq"]:
        lines.append("Most used FAQ entries:")
        lines += [f"  {row['uses']:>5}  {row['id']}" for row in data["top_faq"]]
    if data["unanswered_questions"]:
        lines.append("Questions the FAQ could not answer (write these next):")
        lines += [f"  {row['count']:>5}  {row['question'][:200]}"
                  for row in data["unanswered_questions"]]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@click.command()
@click.option("--since", "since", default="7d", show_default=True,
              help="Span back from now (30m, 24h, 7d, 2w) or an ISO date.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@click.option("--top", default=10, show_default=True, help="Rows in the FAQ and question lists.")
def report(since: str, as_json: bool, top: int) -> None:
    """Usage, outcomes, handoffs, feedback, tokens and cost, and the questions to write next."""
    start = parse_since(since)
    settings = load_settings()
    require_database(settings)

    async def run() -> dict[str, Any]:
        store = await Store.open(settings.resolved_database_url)
        try:
            return await build_report(
                store, start,
                price_prompt_per_1k=settings.price_prompt_per_1k,
                price_completion_per_1k=settings.price_completion_per_1k,
                top=top,
            )
        finally:
            await store.close()

    data = asyncio.run(run())
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        click.echo(render_text(data))
