"""Abuse limits through the real engine and SQLite: message rate, daily token budget, one notice,
shared across processes (two engines on one database), staff never limited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from supportbot.engine import Outcome, Status
from supportbot.storage.models import Message
from supportbot.storage.reports import usage_query
from supportbot.testing import OfflineBot, RecordingSink
from supportbot.testing.fake_llm import FakeLLM

Q = "How long do refunds take?"


async def age_messages(bot: OfflineBot, seconds: float) -> None:
    """Move every stored turn back in time, as if the customer had paused."""
    async with bot.engine.store.sessions.begin() as session:
        rows = (await session.execute(select(Message.id, Message.created_at))).all()
        for message_id, created_at in rows:
            await session.execute(
                update(Message).where(Message.id == message_id)
                .values(created_at=created_at - timedelta(seconds=seconds))
            )


async def test_rate_limit_one_notice_then_silence_and_no_llm(tmp_path, fake_llm: FakeLLM):
    sink = RecordingSink()
    async with OfflineBot(tmp_path, llm_base_url=fake_llm.url, rate_limit_per_minute=3) as bot:
        answered = [await bot.ask(Q, sink=sink) for _ in range(3)]
        notice = await bot.ask(Q, sink=sink)
        silent = [await bot.ask(Q, sink=sink) for _ in range(3)]
        other = await bot.ask(Q, customer="someone-else", thread="t-other")
        stored = await bot.engine.store.messages(notice.conversation_id)

        assert [r.outcome for r in answered] == [Outcome.LLM] * 3
        assert notice.outcome is Outcome.LIMITED
        assert notice.text == bot.engine.prompts.message("rate_limited", "en")
        assert notice.message_id is not None
        assert [(r.outcome, r.text) for r in silent] == [(Outcome.LIMITED, None)] * 3
        assert other.outcome is Outcome.LLM  # limits are per customer
        assert len(fake_llm.chat_requests()) == 4  # nothing sent while limited
        assert sink.sent[-1] == notice.text and len(sink.sent) == 4
        user_turns = [m for m in stored if m.role == "user"]
        assert len(user_turns) == 7  # every message is stored
        assert [m.state for m in user_turns[3:]] == ["limited"] * 4
        assert await bot.engine.store.unanswered() == []  # nothing for recovery to re-answer

        await age_messages(bot, 61)  # the window passes
        again = await bot.ask(Q, sink=sink)
    assert again.outcome is Outcome.LLM


async def test_rate_limit_notice_repeats_once_per_window(tmp_path):
    async with OfflineBot(tmp_path, rate_limit_per_minute=1) as bot:
        await bot.ask(Q)
        first = await bot.ask(Q)
        await age_messages(bot, 30)
        quiet = await bot.ask(Q)
        await age_messages(bot, 31)  # the notice is now over a minute old; still flooding
        await bot.ask(Q)
        await bot.ask(Q)
        second = await bot.ask(Q)
    assert first.outcome is Outcome.LIMITED and first.text
    assert quiet.outcome is Outcome.LIMITED and quiet.text is None
    assert second.outcome is Outcome.LIMITED and second.text is None
    # exactly one more notice was sent after the first one had aged out of the window
    async with OfflineBot(tmp_path) as bot:
        msgs = await bot.engine.store.messages(first.conversation_id)
    assert sum(1 for m in msgs if m.author == "limit:rate") == 2


async def test_daily_token_budget(tmp_path, fake_llm: FakeLLM):
    async with OfflineBot(tmp_path, llm_base_url=fake_llm.url, daily_token_budget=50,
                          rate_limit_per_minute=0) as bot:
        first = await bot.ask(Q)
        spent = (first.message_id, await bot.engine.store.messages(first.conversation_id))
        over = await bot.ask("And for annual plans?")
        quiet = await bot.ask("Hello??")
        zh = await bot.ask("你好", customer="c-zh", thread="t-zh", language="zh")
        assert first.outcome is Outcome.LLM
        tokens = [(m.prompt_tokens or 0) + (m.completion_tokens or 0) for m in spent[1]
                  if m.id == spent[0]]
        assert tokens[0] >= 50  # the first answer used the whole budget
        assert over.outcome is Outcome.LIMITED
        assert over.text == bot.engine.prompts.message("budget_exhausted", "en")
        assert quiet.outcome is Outcome.LIMITED and quiet.text is None
        assert zh.outcome is Outcome.LLM  # another customer has their own budget
        assert len(fake_llm.chat_requests()) == 2

        await age_messages(bot, 24 * 3600 + 60)  # tomorrow
        tomorrow = await bot.ask(Q)
    assert tomorrow.outcome is Outcome.LLM


async def test_budget_notice_in_chinese(tmp_path, fake_llm: FakeLLM):
    async with OfflineBot(tmp_path, llm_base_url=fake_llm.url, daily_token_budget=1) as bot:
        await bot.ask("退款需要多久？", language="zh")
        reply = await bot.ask("还有别的吗？", language="zh")
    assert reply.outcome is Outcome.LIMITED
    assert reply.text == "您今天的提问次数已达上限，请明天再来，或发送 /human 联系人工客服。"


async def test_limits_are_shared_by_processes_on_one_database(tmp_path):
    async with OfflineBot(tmp_path, rate_limit_per_minute=2) as a, \
            OfflineBot(tmp_path, rate_limit_per_minute=2) as b:
        r1 = await a.ask(Q, message_id="x1")
        r2 = await b.ask(Q, message_id="x2", thread="thread-2")
        r3 = await a.ask(Q, message_id="x3", thread="thread-3")
    assert [r1.outcome, r2.outcome, r3.outcome] == [Outcome.FAQ, Outcome.FAQ, Outcome.LIMITED]


async def test_zero_means_unlimited(tmp_path):
    async with OfflineBot(tmp_path, rate_limit_per_minute=0, daily_token_budget=0) as bot:
        replies = [await bot.ask(Q) for _ in range(15)]
    assert {r.outcome for r in replies} == {Outcome.FAQ}


async def test_default_limit_is_ten_per_minute(tmp_path):
    async with OfflineBot(tmp_path) as bot:
        replies = [await bot.ask(Q) for _ in range(11)]
    assert [r.outcome for r in replies] == [Outcome.FAQ] * 10 + [Outcome.LIMITED]


async def test_limited_customer_can_still_reach_a_human_and_staff_are_never_limited(tmp_path):
    async with OfflineBot(tmp_path, rate_limit_per_minute=1) as bot:
        await bot.ask(Q)
        assert (await bot.ask(Q)).outcome is Outcome.LIMITED
        handoff = await bot.ask("I want to talk to a human")
        assert handoff.outcome is Outcome.HANDOFF
        for i in range(20):
            await bot.engine.staff_message(handoff.conversation_id, "slack:USTAFF", f"hi {i}")
        view = await bot.engine.get_conversation(handoff.conversation_id)
        msgs = await bot.engine.store.messages(handoff.conversation_id)
    assert view.status is Status.HUMAN
    assert sum(1 for m in msgs if m.role == "staff") == 20


@pytest.mark.sqlite_only  # EXPLAIN QUERY PLAN is SQLite's
async def test_the_limit_check_is_one_indexed_query(tmp_path):
    now = datetime.now(UTC)
    minute_ago = now - timedelta(minutes=1)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    values = {"platform": "slack", "customer_id": "U1", "minute_ago": minute_ago,
              "day_start": day_start, "since": min(minute_ago, day_start)}
    async with OfflineBot(tmp_path) as bot:
        await bot.ask(Q)
        async with bot.engine.store.engine.connect() as conn:
            compiled = usage_query().compile(dialect=conn.dialect)
            merged = {**compiled.params, **values}
            params = tuple(str(merged[name]) for name in compiled.positiontup or ())
            result = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params)
            plan = result.all()
    details = " | ".join(str(row[-1]) for row in plan)
    assert "ix_conversations_customer" in details, details
    assert "ix_messages_conversation_created" in details, details
    assert "SCAN messages" not in details and "SCAN conversations" not in details, details
