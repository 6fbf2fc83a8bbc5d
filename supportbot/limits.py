"""Abuse limits: a per-customer message rate and a daily LLM token budget.

Counted from the messages table (one indexed query), so every process sharing the database
sees the same numbers. Past a limit the customer gets one polite notice per window and then
silence until the window passes; nothing reaches the LLM meanwhile. Staff are never limited:
their messages go through ``Engine.staff_message``, not ``handle``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from supportbot.storage import Store
from supportbot.storage.reports import BUDGET_NOTICE, RATE_NOTICE, customer_usage

WINDOW = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A limit was hit: ``kind`` is ``rate`` or ``budget``; ``notify`` is False once told."""

    kind: str
    notify: bool

    @property
    def message(self) -> str:
        """Name of the bot's words for the notice (prompts/messages/*.yaml)."""
        return "rate_limited" if self.kind == "rate" else "budget_exhausted"

    @property
    def author(self) -> str:
        """Marks the stored notice, so the next check knows the customer was told."""
        return RATE_NOTICE if self.kind == "rate" else BUDGET_NOTICE


class Limits:
    def __init__(self, per_minute: int, daily_tokens: int) -> None:
        self.per_minute = max(0, per_minute)
        self.daily_tokens = max(0, daily_tokens)

    @property
    def enabled(self) -> bool:
        return bool(self.per_minute or self.daily_tokens)

    async def check(
        self, store: Store, platform: str, customer_id: str, now: datetime | None = None
    ) -> Verdict | None:
        """Call after the customer's message is stored (it counts towards the rate)."""
        if not self.enabled:
            return None
        now = now or datetime.now(UTC)
        day_start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        usage = await customer_usage(
            store, platform, customer_id, minute_ago=now - WINDOW, day_start=day_start
        )
        if self.per_minute and usage.recent_messages > self.per_minute:
            return Verdict("rate", notify=usage.rate_notices == 0)
        if self.daily_tokens and usage.tokens_today >= self.daily_tokens:
            return Verdict("budget", notify=usage.budget_notices == 0)
        return None
