"""``supportbot report`` figures on a seeded database (real SQLite through the real store), in
process and as the command a person runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest

from supportbot.cli.report import parse_since, render_text
from supportbot.storage import Store
from supportbot.storage.models import Conversation, Feedback, Message, Transition
from supportbot.storage.reports import build_report

REPO = Path(__file__).resolve().parents[1]
NOW = datetime.now(UTC).replace(microsecond=0)


async def seed(store: Store) -> None:
    """Seven conversations with known outcomes, handoffs, staff replies, votes and tokens."""
    t = NOW - timedelta(hours=5)
    async with store.sessions.begin() as s:
        def conv(cid: int, platform: str = "slack", at: datetime = t) -> None:
            s.add(Conversation(id=cid, platform=platform, thread_key=f"k{cid}",
                               customer_id=f"u{cid}", customer_name="", language="en",
                               status="bot", failures=0, bot_failed=False, wait_notices=0,
                               created_at=at, updated_at=at))

        def msg(mid: int, cid: int, role: str, text: str, at: datetime, **kw) -> None:
            s.add(Message(id=mid, conversation_id=cid, role=role, text=text, state="sent",
                          usage_estimated=kw.pop("usage_estimated", False), created_at=at, **kw))

        def handoff(cid: int, reason: str, at: datetime) -> None:
            s.add(Transition(conversation_id=cid, from_status="bot", to_status="waiting",
                             actor="bot", reason=reason, created_at=at))

        for cid in (1, 2, 6, 7):
            conv(cid)
        conv(3, "telegram")
        conv(4, "telegram")
        conv(5, at=NOW - timedelta(days=30))  # before the report window
        await s.flush()
        # 1: answered from the FAQ, voted helpful -> resolved
        msg(10, 1, "user", "How long do refunds take?", t)
        msg(11, 1, "assistant", "5 business days", t, outcome="faq",
            sources={"ids": ["refunds"]})
        # 2: LLM answer voted unhelpful, then "don't know" -> not resolved
        msg(20, 2, "user", "Refund for annual plans?", t)
        msg(21, 2, "assistant", "...", t, outcome="llm", prompt_tokens=1000,
            completion_tokens=200, sources={"ids": ["refunds", "pricing"]})
        msg(22, 2, "user", "What about crypto?", t + timedelta(minutes=1))
        msg(23, 2, "assistant", "Sorry, I don't know", t + timedelta(minutes=1),
            outcome="dont_know", sources={"ids": []})
        # 3: don't know, then the customer asks for a human; staff answer 2 minutes later
        msg(30, 3, "user", "Can I pay with crypto?", t)
        msg(31, 3, "assistant", "Sorry", t, outcome="dont_know")
        msg(32, 3, "user", "human please", t + timedelta(minutes=1))
        msg(33, 3, "assistant", "Handing over", t + timedelta(minutes=1), outcome="handoff")
        handoff(3, 'phrase:en:"human"', t + timedelta(minutes=1))
        msg(34, 3, "staff", "Hi, Kim here", t + timedelta(minutes=3), author="slack:UKIM")
        # 4: the LLM hands off (estimated usage); staff answer after 10 minutes
        msg(40, 4, "user", "My server is on fire", t)
        msg(41, 4, "assistant", "Getting a human", t, outcome="handoff", prompt_tokens=500,
            completion_tokens=100, usage_estimated=True)
        handoff(4, "llm", t + timedelta(seconds=30))
        msg(42, 4, "staff", "On it", t + timedelta(seconds=630), author="slack:UKIM")
        msg(43, 4, "staff", "Fixed", t + timedelta(seconds=730), author="slack:UKIM")
        # 5: old, outside the window
        msg(50, 5, "user", "Old question", NOW - timedelta(days=30))
        msg(51, 5, "assistant", "Old answer", NOW - timedelta(days=30), outcome="faq",
            prompt_tokens=9999, sources={"ids": ["old"]})
        # 6: rate limited
        msg(60, 6, "user", "spam", t)
        msg(61, 6, "assistant", "slow down", t, outcome="limited", author="limit:rate")
        # 7: the same unanswered question, spelled differently
        msg(70, 7, "user", "can I pay with   CRYPTO?", t)
        msg(71, 7, "assistant", "Sorry", t, outcome="dont_know")
        await s.flush()
        s.add(Feedback(message_id=11, conversation_id=1, helpful=True, actor="slack:u1",
                       created_at=t))
        s.add(Feedback(message_id=21, conversation_id=2, helpful=False, actor="slack:u2",
                       comment="wrong", created_at=t))


@pytest.fixture
async def store(tmp_path: Path):
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'supportbot.db'}")
    await seed(store)
    try:
        yield store
    finally:
        await store.close()


async def test_report_figures(store: Store) -> None:
    data = await build_report(store, NOW - timedelta(days=7), price_prompt_per_1k=0.5,
                              price_completion_per_1k=1.5)
    assert data["conversations"] == 6
    assert data["messages"] == {"total": 19, "customer": 8, "bot": 8, "staff": 3}
    assert data["answered"] == {"faq": 1, "llm": 1, "dont_know": 3, "llm_failed": 0,
                                "limited": 1}
    assert data["outcomes"]["handoff"] == 2
    assert data["handed_off"] == 2
    assert data["handoff_rate"] == round(2 / 6, 4)
    assert data["handoffs_by_trigger"] == {"phrase": 1, "llm": 1}
    assert data["resolution_rate"] == 0.5  # 1, 6 and 7: no handoff, no thumbs-down
    assert data["median_first_human_response_seconds"] == 360.0  # median of 120 s and 600 s
    assert data["feedback"] == {"helpful": 1, "unhelpful": 1}
    assert data["tokens"] == {"prompt": 1500, "completion": 300, "total": 1800,
                              "estimated_replies": 1}
    assert data["cost"] == pytest.approx(1500 / 1000 * 0.5 + 300 / 1000 * 1.5)
    assert data["top_faq"] == [{"id": "refunds", "uses": 2}, {"id": "pricing", "uses": 1}]
    assert data["unanswered_questions"] == [
        {"question": "Can I pay with crypto?", "count": 2},
        {"question": "What about crypto?", "count": 1},
    ]
    text = render_text(data)
    assert "Resolution rate:      50.0%" in text
    assert "Median first human response: 6.0 min" in text
    assert "Can I pay with crypto?" in text


async def test_a_window_with_nothing_in_it(store: Store) -> None:
    data = await build_report(store, NOW + timedelta(hours=1))
    assert data["conversations"] == 0
    assert data["handoff_rate"] is None and data["resolution_rate"] is None
    assert data["median_first_human_response_seconds"] is None
    assert data["cost"] == 0
    assert "n/a" in render_text(data)


def test_since_parsing() -> None:
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("36h", now) == now - timedelta(hours=36)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2w", now) == now - timedelta(weeks=2)
    assert parse_since("2026-03-01", now) == datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(click.BadParameter):
        parse_since("last tuesday", now)


def test_report_command_json_and_text(store: Store, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTBOT_")} | {
        "SUPPORTBOT_DATA_DIR": str(tmp_path), "SUPPORTBOT_LOG_LEVEL": "WARNING",
        "SUPPORTBOT_PRICE_PROMPT_PER_1K": "0.5", "SUPPORTBOT_PRICE_COMPLETION_PER_1K": "1.5",
    }

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "supportbot", "report", *args],
                              capture_output=True, text=True, cwd=REPO, env=env, timeout=60)

    result = run("--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["conversations"] == 6 and data["cost"] == pytest.approx(1.2)
    result = run("--since", "90d", "--json")
    assert json.loads(result.stdout)["conversations"] == 7
    result = run("--since", "7d")
    assert result.returncode == 0 and "Cost:                 1.2000" in result.stdout
    assert run("--since", "whenever").returncode == 2
