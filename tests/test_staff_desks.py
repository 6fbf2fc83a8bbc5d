"""Every handed-off customer is reachable, and staff notes stay internal.

Slack: a customer who wrote in a DM is handed off; a staff reply in the notification's thread
in the staff channel reaches them in the DM and takes the thread over; their later messages
keep appearing in that thread; a ``note:`` there never reaches them. Telegram: a ``note:`` in
the customer's topic is stored for the audit trail and not sent.
"""

from __future__ import annotations

from test_slack_adapter import HUMAN_PLEASE, STAFF, STAFF_CHANNEL, Env, texts
from test_slack_adapter import env as env
from test_telegram_adapter import ALICE, STAFFER, start_handoff
from test_telegram_adapter import STAFF as TG_STAFF
from test_telegram_adapter import bot as bot
from test_telegram_adapter import fake as fake
from test_telegram_adapter import llm as llm

from supportbot.engine import Status
from supportbot.testing.fake_telegram import FakeTelegram


async def test_slack_dm_customer_is_reached_from_the_staff_thread(env: Env) -> None:
    await env.post_event(env.slack.message_event(HUMAN_PLEASE, channel="D8"))
    [note] = await env.wait(lambda: env.slack.messages(channel=STAFF_CHANNEL, top_level=True))
    await env.settle()
    conv = await env.engine.find_conversation("slack", "T0001:D8")
    assert conv is not None and conv.status is Status.WAITING
    assert "asked for a person: 'I want to talk to a real person'" in note.text
    assert note.text.count("Reason") == 1  # said once, in words

    reply = env.slack.message_event("Hi, Sam here. Let me look.", user=STAFF,
                                    channel=STAFF_CHANNEL, channel_type="channel",
                                    thread_ts=note.ts)
    await env.post_event(reply)
    await env.post_event(reply)  # a redelivery is not sent twice
    await env.wait(lambda: texts(env.slack, "D8")[-1] == "Hi, Sam here. Let me look.")
    await env.settle()
    view = await env.engine.get_conversation(conv.id)
    assert view is not None and view.status is Status.HUMAN
    assert view.assignee == f"slack:{STAFF}"
    assert texts(env.slack, "D8").count("Hi, Sam here. Let me look.") == 1

    internal = env.slack.message_event("note: refund already approved by billing", user=STAFF,
                                       channel=STAFF_CHANNEL, channel_type="channel",
                                       thread_ts=note.ts)
    await env.post_event(internal)
    await env.settle()
    assert not any("refund already approved" in t for t in texts(env.slack, "D8"))
    told = env.slack.messages(channel=STAFF_CHANNEL, ephemeral=True)
    assert any("note" in m.text.lower() for m in told)
    stored = await env.engine.store.messages(conv.id)
    assert any(m.state == "note" and "refund already approved" in m.text for m in stored)

    await env.post_event(env.slack.message_event("thanks, waiting", channel="D8"))
    await env.wait(lambda: any("thanks, waiting" in t
                               for t in texts(env.slack, STAFF_CHANNEL, thread_ts=note.ts)))
    await env.settle()
    assert texts(env.slack, "D8")[-1] == "Hi, Sam here. Let me look."  # the bot stays quiet


async def test_telegram_note_in_the_topic_stays_internal(fake: FakeTelegram, bot) -> None:
    engine, _ = bot
    conv_id, topic = await start_handoff(fake, engine)
    before = fake.texts(ALICE)
    fake.push(fake.staff_message("note: customer is on the legacy plan", chat_id=TG_STAFF,
                                 thread_id=topic, user_id=STAFFER))
    await fake.wait_for(lambda: any("Internal note" in t
                                    for t in fake.texts(TG_STAFF, thread_id=topic)))
    summary = fake.sent(TG_STAFF, topic)[0]
    view = await engine.get_conversation(conv_id)
    stored = await engine.store.messages(conv_id)
    assert fake.texts(ALICE) == before  # the customer saw nothing
    assert view is not None and view.status is Status.WAITING  # a note takes nothing over
    assert any(m.state == "note" and "legacy plan" in m.text for m in stored)
    # the topic's summary: bold rendered as bold, the customer's name, the reason in words
    assert "<b>" in summary["raw_text"] and "Alice" in summary["text"]
    assert "telegram:" not in summary["text"]
    assert "asked for a person" in summary["text"]
