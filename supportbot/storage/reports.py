"""Reads and writes for operating the bot: feedback, abuse-limit counts and the usage report.

Functions take a :class:`Store` so the core store stays about the conversation workflow.
"""

from __future__ import annotations

import functools
import statistics
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, bindparam, case, func, select
from sqlalchemy.exc import IntegrityError

from supportbot.metrics import handoff_trigger
from supportbot.storage.models import Conversation, Feedback, Message, Transition, utcnow
from supportbot.storage.store import Store

ANSWER_OUTCOMES = ("faq", "llm", "dont_know", "llm_failed", "handoff")
RATE_NOTICE, BUDGET_NOTICE = "limit:rate", "limit:budget"

# --- feedback --------------------------------------------------------------------------------


async def feedback_target(store: Store, message_id: int) -> tuple[Message, Conversation] | None:
    """The bot answer a vote is about, with its conversation (``None`` if it is not one)."""
    async with store.sessions() as session:
        row = (
            await session.execute(
                select(Message, Conversation)
                .join(Conversation, Conversation.id == Message.conversation_id)
                .where(Message.id == message_id, Message.role == "assistant")
            )
        ).first()
    return (row[0], row[1]) if row else None


async def save_feedback(
    store: Store, message: Message, *, helpful: bool, actor: str, comment: str | None
) -> None:
    """Insert or replace the vote on ``message`` (one per answer; the latest wins)."""
    values = {"helpful": helpful, "comment": comment, "actor": actor, "created_at": utcnow()}
    for _ in range(2):  # a concurrent first vote may win the insert: then update theirs
        try:
            async with store.sessions.begin() as session:
                row = await session.scalar(
                    select(Feedback).where(Feedback.message_id == message.id)
                )
                if row is None:
                    session.add(Feedback(message_id=message.id,
                                         conversation_id=message.conversation_id, **values))
                else:
                    for key, value in values.items():
                        setattr(row, key, value)
            return
        except IntegrityError:
            continue


async def feedback_for(store: Store, message_id: int) -> Feedback | None:
    async with store.sessions() as session:
        return await session.scalar(select(Feedback).where(Feedback.message_id == message_id))


async def last_answer_id(store: Store, conversation_id: int) -> int | None:
    """The newest bot answer in a conversation that a customer could rate."""
    async with store.sessions() as session:
        return await session.scalar(
            select(Message.id)
            .where(
                Message.conversation_id == conversation_id,
                Message.role == "assistant",
                Message.state == "sent",
                Message.outcome.in_(ANSWER_OUTCOMES),
            )
            .order_by(Message.id.desc())
            .limit(1)
        )


# --- abuse limits ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    """One customer's recent activity, as the limits need it."""

    recent_messages: int  # customer messages since ``minute_ago`` (including the current one)
    tokens_today: int  # LLM tokens spent on their answers since ``day_start``
    rate_notices: int  # rate-limit notices sent since ``minute_ago``
    budget_notices: int  # budget notices sent since ``day_start``


@functools.cache
def usage_query() -> Select[Any]:
    """Everything the limits need in one query, indexed by customer then conversation/time.

    Built once with bound parameters: it runs for every customer message."""
    minute_ago = bindparam("minute_ago", type_=Message.created_at.type)
    day_start = bindparam("day_start", type_=Message.created_at.type)
    recent = Message.created_at >= minute_ago
    today = Message.created_at >= day_start
    tokens = func.coalesce(Message.prompt_tokens, 0) + func.coalesce(Message.completion_tokens, 0)
    return (
        select(
            func.count(case((and_(Message.role == "user", recent), 1))),
            func.coalesce(func.sum(case((and_(Message.role == "assistant", today), tokens),
                                        else_=0)), 0),
            func.count(case((and_(Message.author == RATE_NOTICE, recent), 1))),
            func.count(case((and_(Message.author == BUDGET_NOTICE, today), 1))),
        )
        .select_from(Conversation)
        .join(Message, Message.conversation_id == Conversation.id)
        .where(
            Conversation.platform == bindparam("platform"),
            Conversation.customer_id == bindparam("customer_id"),
            Message.created_at >= bindparam("since", type_=Message.created_at.type),
        )
    )


async def customer_usage(
    store: Store, platform: str, customer_id: str, *, minute_ago: datetime, day_start: datetime
) -> Usage:
    params = {"platform": platform, "customer_id": customer_id, "minute_ago": minute_ago,
              "day_start": day_start, "since": min(minute_ago, day_start)}
    async with store.read() as conn:
        row = (await conn.execute(usage_query(), params)).one()
    return Usage(int(row[0] or 0), int(row[1] or 0), int(row[2] or 0), int(row[3] or 0))


# --- the report --------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(text.split())


async def build_report(
    store: Store,
    since: datetime,
    *,
    price_prompt_per_1k: float = 0.0,
    price_completion_per_1k: float = 0.0,
    top: int = 10,
) -> dict[str, Any]:
    """Figures for conversations started since ``since`` (and activity since then)."""
    async with store.sessions() as session:
        convs = (
            await session.scalars(select(Conversation).where(Conversation.created_at >= since))
        ).all()
        msgs = (
            await session.scalars(
                select(Message)
                .where(Message.created_at >= since)
                .order_by(Message.conversation_id, Message.id)
            )
        ).all()
        handoffs = (
            await session.scalars(
                select(Transition)
                .where(Transition.created_at >= since, Transition.to_status == "waiting")
                .order_by(Transition.id)
            )
        ).all()
        votes = (
            await session.scalars(select(Feedback).where(Feedback.created_at >= since))
        ).all()
        staff_rows = []
        if handoffs:
            staff_rows = (
                await session.execute(
                    select(Message.conversation_id, Message.created_at)
                    .where(
                        Message.role == "staff",
                        Message.conversation_id.in_({t.conversation_id for t in handoffs}),
                    )
                    .order_by(Message.id)
                )
            ).all()

    roles = Counter(m.role for m in msgs)
    outcomes = Counter(m.outcome for m in msgs if m.role == "assistant" and m.outcome)

    handed = {t.conversation_id for t in handoffs}
    by_trigger = Counter(handoff_trigger(t.reason) for t in handoffs)
    conv_ids = {c.id for c in convs}
    unhelpful_convs = {v.conversation_id for v in votes if not v.helpful}
    resolved = [c for c in convs if c.id not in handed and c.id not in unhelpful_convs]

    staff_by_conv: dict[int, list[datetime]] = {}
    for conversation_id, created_at in staff_rows:
        staff_by_conv.setdefault(conversation_id, []).append(created_at)
    waits = []
    for t in handoffs:
        later = [at for at in staff_by_conv.get(t.conversation_id, []) if at >= t.created_at]
        if later:
            waits.append((min(later) - t.created_at).total_seconds())

    prompt = sum(m.prompt_tokens or 0 for m in msgs if m.role == "assistant")
    completion = sum(m.completion_tokens or 0 for m in msgs if m.role == "assistant")
    estimated = sum(1 for m in msgs if m.role == "assistant" and m.usage_estimated)
    cost = prompt / 1000 * price_prompt_per_1k + completion / 1000 * price_completion_per_1k

    faq_used: Counter[str] = Counter()
    for m in msgs:
        if m.role == "assistant" and m.outcome in ("faq", "llm") and isinstance(m.sources, dict):
            faq_used.update(str(i) for i in m.sources.get("ids") or [])

    unanswered: Counter[str] = Counter()
    shown: dict[str, str] = {}
    last_user: Message | None = None
    for m in msgs:  # ordered by conversation, then id: a reply follows its question
        if m.role == "user":
            last_user = m
        elif m.role == "assistant" and m.outcome == "dont_know" and last_user is not None:
            if last_user.conversation_id == m.conversation_id:
                key = _norm(last_user.text).lower()
                unanswered[key] += 1
                shown.setdefault(key, _norm(last_user.text))
            last_user = None

    total = len(convs)
    return {
        "since": since.isoformat(),
        "conversations": total,
        "messages": {
            "total": len(msgs),
            "customer": roles.get("user", 0),
            "bot": roles.get("assistant", 0),
            "staff": roles.get("staff", 0),
        },
        "outcomes": dict(sorted(outcomes.items())),
        "answered": {
            "faq": outcomes.get("faq", 0),
            "llm": outcomes.get("llm", 0),
            "dont_know": outcomes.get("dont_know", 0),
            "llm_failed": outcomes.get("llm_failed", 0),
            "limited": outcomes.get("limited", 0),
        },
        "handed_off": len(handed),
        "handoff_rate": _ratio(len(handed & conv_ids), total),
        "handoffs_by_trigger": dict(by_trigger.most_common()),
        "resolution_rate": _ratio(len(resolved), total),
        "median_first_human_response_seconds": (
            round(statistics.median(waits), 1) if waits else None
        ),
        "feedback": {
            "helpful": sum(1 for v in votes if v.helpful),
            "unhelpful": sum(1 for v in votes if not v.helpful),
        },
        "tokens": {
            "prompt": prompt,
            "completion": completion,
            "total": prompt + completion,
            "estimated_replies": estimated,
        },
        "cost": round(cost, 6),
        "top_faq": [{"id": k, "uses": n} for k, n in faq_used.most_common(top)],
        "unanswered_questions": [
            {"question": shown[k], "count": n} for k, n in unanswered.most_common(top)
        ],
    }


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
