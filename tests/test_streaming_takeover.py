"""A takeover silences the bot mid-sentence, on both platforms: while a slow LLM is streaming an
answer, staff take the thread (Slack: the signed Take over button; Telegram: writing in the
customer's topic). The stream stops, the partial message is finished cleanly (no "…", no
rating buttons), it is stored as interrupted, and the bot says nothing more."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from test_slack_adapter import HUMAN_PLEASE, STAFF, STAFF_CHANNEL, Env, texts
from test_slack_adapter import env as env
from test_telegram_adapter import ALICE, STAFFER, start_handoff
from test_telegram_adapter import STAFF as TG_STAFF
from test_telegram_adapter import bot as bot
from test_telegram_adapter import fake as fake
from test_telegram_adapter import llm as llm

from supportbot.engine import Outcome, Status
from supportbot.testing import OfflineBot, waiting
from supportbot.testing.bot import RecordingSink
from supportbot.testing.fake_llm import FakeLLM
from supportbot.testing.fake_telegram import FakeTelegram

WORDS = 60
LONG_ANSWER = " ".join(f"word{i}" for i in range(WORDS))


async def _stored_replies(engine, conv_id: int) -> list:
    return [m for m in await engine.store.messages(conv_id) if m.role == "assistant"]


async def test_slack_take_over_button_stops_a_streaming_answer(env: Env) -> None:
    # a handoff gives staff the notification (and its buttons); handed back, the bot answers
    await env.post_event(env.slack.message_event(HUMAN_PLEASE, channel="D5"))
    [note] = await env.wait(lambda: env.slack.messages(channel=STAFF_CHANNEL))
    await env.settle()
    conv = await env.engine.find_conversation("slack", "T0001:D5")
    assert conv is not None
    await env.press("supportbot_hand_back", str(conv.id), user=STAFF, message_ts=note.ts)
    await env.wait(lambda: len(texts(env.slack, "D5")) == 2)  # the hand-back notice
    env.llm.responder = lambda messages: LONG_ANSWER
    env.llm.delta_delay = 0.1  # six seconds of streaming

    await env.post_event(env.slack.message_event("tell me everything", channel="D5"))
    streaming = await env.wait(
        lambda: [m for m in env.slack.messages(channel="D5") if "word3 " in m.text]
    )
    r = await env.press("supportbot_take_over", str(conv.id), user=STAFF, message_ts=note.ts)
    assert r.status_code == 200
    final = await env.wait(lambda: [
        m for m in env.slack.messages(channel="D5")
        if m.ts == streaming[0].ts and not m.text.endswith("…")
    ], within=5)
    await env.settle()
    view = await env.engine.get_conversation(conv.id)
    stored = await _stored_replies(env.engine, conv.id)
    await asyncio.sleep(0.3)  # the LLM would have gone on writing: nothing more arrives
    shown = env.slack.messages(channel="D5")
    assert view is not None and view.status is Status.HUMAN
    assert f"word{WORDS - 1}" not in final[0].text  # cut short
    assert final[0].blocks is None  # no rating buttons under an interrupted answer
    assert [m.text for m in shown][-1] == final[0].text  # nothing after it
    assert stored[-1].outcome == Outcome.INTERRUPTED and stored[-1].text in final[0].text
    assert stored[-1].platform_message_id == streaming[0].ts


async def test_telegram_staff_message_in_the_topic_stops_a_streaming_answer(
    fake: FakeTelegram, bot, llm
) -> None:
    engine, adapter = bot
    adapter.router.drafts.enabled = False  # the edited message; mid-draft: test_telegram_drafts
    conv_id, topic = await start_handoff(fake, engine)
    fake.push(fake.staff_message("/bot", chat_id=TG_STAFF, thread_id=topic, user_id=STAFFER))
    await fake.wait_for(lambda: "again" in fake.texts(ALICE)[-1])  # handed back
    llm.responder = lambda messages: LONG_ANSWER
    llm.delta_delay = 0.1
    before = len(fake.sent(ALICE))

    fake.push(fake.private_message("tell me everything"))
    streaming = await fake.wait_for(lambda: [
        m for m in fake.sent(ALICE)[before:] if "word3 " in (m.get("text") or "")
    ])
    fake.push(fake.staff_message("Sam here, I'll take it from here.", chat_id=TG_STAFF,
                                 thread_id=topic, user_id=STAFFER))
    await fake.wait_for(lambda: "Sam here" in fake.texts(ALICE)[-1])
    await asyncio.sleep(0.3)  # the LLM would have gone on writing: nothing more arrives
    sent = fake.sent(ALICE)
    cut = next(m for m in sent if m["message_id"] == streaming[0]["message_id"])
    view = await engine.get_conversation(conv_id)
    stored = await _stored_replies(engine, conv_id)
    assert view is not None and view.status is Status.HUMAN
    assert f"word{WORDS - 1}" not in cut["text"] and not cut["text"].endswith("…")
    assert "reply_markup" not in cut  # no 👍/👎 under an interrupted answer
    assert sent[-1]["text"].startswith("Sam here")  # the staff reply is the last word
    assert stored[-1].outcome == Outcome.INTERRUPTED
    assert stored[-1].platform_message_id == str(streaming[0]["message_id"])


class _Watching(RecordingSink):
    """Records a stream chunk by chunk, so the test sees it is under way."""

    def __init__(self) -> None:
        super().__init__()
        self.live: list[str] = []

    async def send_stream(self, chunks: Any) -> str | None:
        async for chunk in chunks:
            self.live.append(chunk)
        self.sent.append("".join(self.live))
        return "streamed-1"


@pytest.mark.postgres_only
async def test_a_takeover_in_another_process_stops_the_stream(postgres_url: str,
                                                              tmp_path: Path) -> None:
    """Two processes on one PostgreSQL database: B takes the thread over while A streams;
    A's stream notices within its status poll (0.5 s) and stops."""
    with FakeLLM(responder=lambda messages: LONG_ANSWER) as slow:
        slow.delta_delay = 0.1
        model = {"llm_base_url": slow.url, "llm_api_key": "sk-test"}
        async with (OfflineBot(tmp_path / "a", **model) as a,
                    OfflineBot(tmp_path / "b", **model) as b):
            sink = _Watching()
            asking = asyncio.create_task(a.ask("tell me everything", sink=sink))
            await waiting.eventually(lambda: len(sink.live) >= 3, within=10,
                                     what="the stream to start")
            conv = await b.engine.find_conversation("test", "thread-1")
            assert conv is not None and await b.engine.take_over(conv.id, "slack:U1")
            reply = await asyncio.wait_for(asking, 5)
    assert reply.outcome is Outcome.INTERRUPTED
    assert len(sink.live) < WORDS and f"word{WORDS - 1}" not in sink.sent[-1]
