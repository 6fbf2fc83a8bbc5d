"""Privacy between customers in shared spaces (issue 23, finding 5): in a Telegram group and in a
Slack channel thread, each customer's LLM request carries only what that customer and the bot
said to them, and the conversation's customer (id and name) never switches silently.

Driven through the real adapters (webhook and Events API) against FakeLLM, whose recorded
requests are exactly what the model would have seen.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_auth import Bot, running_bot

ALICE_PRIVATE = ("alice.private@example.com", "A-7731")
BOB_PRIVATE = ("bob.secret@example.org", "B-4242")


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[Bot]:
    # the FAQ never answers here, so every question reaches the (fake) model
    async with running_bot(tmp_path, faq_confidence=2.0) as b:
        b.llm.responder = lambda messages: "Thanks, I am looking into it."
        yield b


def request_text(bot: Bot) -> str:
    """Everything the model was sent in the latest chat request."""
    return json.dumps(bot.llm.chat_requests()[-1].json["messages"], ensure_ascii=False)


async def answered(bot: Bot, count: int) -> None:
    await bot.slack.async_wait_for(lambda: len(bot.llm.chat_requests()) >= count, within=15)
    await bot.settle()


async def test_telegram_group_customers_do_not_see_each_other(bot: Bot) -> None:
    group = -100777
    alice = bot.tg.group_message(f"Hi, my email is {ALICE_PRIVATE[0]}, order {ALICE_PRIVATE[1]}"
                                 " is late", chat_id=group, user_id=501, first_name="Alice",
                                 mention=True)
    assert (await bot.telegram(alice)).status_code == 200
    await answered(bot, 1)
    bob = bot.tg.group_message(f"Where is my order? I am {BOB_PRIVATE[0]}", chat_id=group,
                               user_id=502, first_name="Bob", mention=True)
    assert (await bot.telegram(bob)).status_code == 200
    await answered(bot, 2)
    seen_by_bob = request_text(bot)
    assert BOB_PRIVATE[0] in seen_by_bob
    assert not [s for s in ALICE_PRIVATE if s in seen_by_bob], seen_by_bob

    again = bot.tg.group_message("Any news on my order?", chat_id=group, user_id=501,
                                 first_name="Alice", mention=True)
    await bot.telegram(again)
    await answered(bot, 3)
    seen_by_alice = request_text(bot)
    assert ALICE_PRIVATE[1] in seen_by_alice  # her own history is still there
    assert BOB_PRIVATE[0] not in seen_by_alice

    conv = await bot.engine.find_conversation("telegram", str(group))
    assert conv is not None
    assert (conv.customer_id, conv.customer_name) == ("501", "Alice")  # no silent switch


async def test_slack_channel_thread_customers_do_not_see_each_other(bot: Bot) -> None:
    first = bot.slack.message_event(
        f"My email is {ALICE_PRIVATE[0]} and order {ALICE_PRIVATE[1]} never arrived",
        user="UALICE", channel="CSUPPORT", channel_type="channel")
    assert (await bot.slack_event(first)).status_code == 200
    await answered(bot, 1)
    reply = bot.slack.message_event(f"Same problem here, I am {BOB_PRIVATE[0]}", user="UBOB",
                                    channel="CSUPPORT", channel_type="channel",
                                    thread_ts=first["ts"])
    assert (await bot.slack_event(reply)).status_code == 200
    await answered(bot, 2)
    seen_by_bob = request_text(bot)
    assert BOB_PRIVATE[0] in seen_by_bob
    assert not [s for s in ALICE_PRIVATE if s in seen_by_bob], seen_by_bob

    conv = await bot.engine.find_conversation("slack", f"{bot.slack.team_id}:CSUPPORT:"
                                              f"{first['ts']}")
    assert conv is not None and conv.customer_id == "UALICE"
    names = {conv.customer_name}
    follow = bot.slack.message_event("and one more thing", user="UBOB", channel="CSUPPORT",
                                     channel_type="channel", thread_ts=first["ts"])
    await bot.slack_event(follow)
    await answered(bot, 3)
    conv = await bot.engine.find_conversation("slack", f"{bot.slack.team_id}:CSUPPORT:"
                                              f"{first['ts']}")
    assert conv is not None and conv.customer_id == "UALICE" and {conv.customer_name} == names
    assert BOB_PRIVATE[0] in request_text(bot)  # Bob keeps his own history
    assert ALICE_PRIVATE[1] not in request_text(bot)


async def test_a_thread_shared_on_purpose_gives_everyone_the_whole_history(
    tmp_path: Path,
) -> None:
    async with running_bot(tmp_path, faq_confidence=2.0, shared_thread_history=True) as bot:
        bot.llm.responder = lambda messages: "Thanks, I am looking into it."
        group = -100778
        await bot.telegram(bot.tg.group_message(f"Order {ALICE_PRIVATE[1]} is late",
                                                chat_id=group, user_id=501, mention=True))
        await answered(bot, 1)
        await bot.telegram(bot.tg.group_message("Mine too", chat_id=group, user_id=502,
                                                mention=True))
        await answered(bot, 2)
        assert ALICE_PRIVATE[1] in request_text(bot)  # the README says others see this
