"""Telegram draft streaming (``sendMessageDraft``, Bot API 9.3+) and "typing…" before the first
token: the sink through python-telegram-bot's real Bot against the loopback FakeTelegram, and
the adapter end to end with the real engine and FakeLLM."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from telegram import Bot
from test_telegram_adapter import ALICE, GROUP, STAFFER, make_settings, running, start_handoff
from test_telegram_adapter import STAFF as TG_STAFF
from test_telegram_adapter import fake as fake
from test_telegram_adapter import llm as llm

from supportbot.adapters.telegram.sink import DraftSupport, EditThrottle, TelegramSink
from supportbot.engine import Outcome, Status
from supportbot.testing.fake_llm import FakeLLM
from supportbot.testing.fake_telegram import FakeTelegram

CHAT = ALICE
TEXT = "Open **Settings**, then Security, then tap Reset password and follow the link we email."


@pytest.fixture
async def bot(tmp_path, fake, llm) -> AsyncIterator[tuple[Any, Any]]:
    """The whole bot with drafts turned on (``SUPPORTBOT_TELEGRAM_DRAFTS``, off by default)."""
    async with running(make_settings(tmp_path, fake, llm, telegram_drafts=True)) as pair:
        yield pair


@pytest.fixture
async def tg(fake: FakeTelegram) -> AsyncIterator[Bot]:
    fake.add_chat(CHAT, "private")
    fake.add_chat(GROUP, "supergroup")
    async with Bot(fake.token, base_url=fake.url, base_file_url=fake.file_url) as b:
        yield b


async def chunks_of(text: str, size: int) -> AsyncIterator[str]:
    for i in range(0, len(text), size):
        yield text[i : i + size]


def methods(fake: FakeTelegram, chat_id: int) -> list[str]:
    return [c.method for c in fake.calls() if c.params.get("chat_id") == chat_id]


async def test_a_private_stream_is_drafts_then_one_message(fake: FakeTelegram, tg: Bot) -> None:
    sink = TelegramSink(tg, CHAT, throttle=EditThrottle(interval=0), drafts=DraftSupport())
    first = await sink.send_stream(chunks_of(TEXT, 9))
    [(draft_id, shown)] = fake.drafts(CHAT).items()  # one draft, animated as it grew
    assert draft_id != 0 and len(shown) >= 5
    assert all(b.startswith(a) for a, b in itertools.pairwise(shown))
    assert TEXT.startswith(shown[0]) and shown[-1] in TEXT  # plain text while it grows
    [msg] = fake.sent(CHAT)
    assert msg["text"] == TEXT.replace("**", "") and msg["parse_mode"] == "HTML"  # rendered
    assert first == str(msg["message_id"]) and sink.sent == [msg["message_id"]]
    assert "editMessageText" not in methods(fake, CHAT)
    assert methods(fake, CHAT)[-1] == "sendMessage"  # no draft after the message


def long_answer(n: int = 9_000) -> str:
    return " ".join(f"w{i:04d}" for i in range(n // 6))


async def test_a_long_drafted_answer_is_split_at_4096(fake: FakeTelegram, tg: Bot) -> None:
    text = long_answer()
    sink = TelegramSink(tg, CHAT, throttle=EditThrottle(interval=0), drafts=DraftSupport())
    await sink.send_stream(chunks_of(text, 500))
    texts = fake.texts(CHAT)
    assert len(texts) == 3 and " ".join(texts).split() == text.split()
    assert len(fake.calls("sendMessage")) == 3  # one per piece, none twice
    assert len(fake.drafts(CHAT)) == 3  # each piece drafted under its own id
    assert all(len(t) <= 4096 for shown in fake.drafts(CHAT).values() for t in shown)


async def test_groups_and_refusing_servers_stream_by_edits(fake: FakeTelegram, tg: Bot) -> None:
    drafts = DraftSupport()
    group = TelegramSink(tg, GROUP, throttle=EditThrottle(interval=0), drafts=drafts)
    await group.send_stream(chunks_of(TEXT, 9))
    assert "sendMessageDraft" not in methods(fake, GROUP)  # Telegram drafts in private only
    assert fake.texts(GROUP) == [TEXT.replace("**", "")]
    assert "editMessageText" in methods(fake, GROUP)

    # a Bot API server before 9.3: asked once, then this process streams by edits
    fake.fail("sendMessageDraft", code=404, description="Not Found: method not found")
    for _ in range(2):
        sink = TelegramSink(tg, CHAT, throttle=EditThrottle(interval=0), drafts=drafts)
        await sink.send_stream(chunks_of(TEXT, 9))
    assert [c.error for c in fake.calls("sendMessageDraft")] == ["Not Found: method not found"]
    assert "private" in drafts.refused
    assert fake.texts(CHAT) == [TEXT.replace("**", "")] * 2
    assert len(fake.calls("sendMessage")) == 3  # group + two private answers, each once


async def test_a_flood_wait_mid_draft_still_gives_one_whole_message(
    fake: FakeTelegram, tg: Bot
) -> None:
    fake.flood_drafts(at=3, retry_after=1)
    sink = TelegramSink(tg, CHAT, throttle=EditThrottle(interval=0), drafts=DraftSupport())
    await sink.send_stream(chunks_of(TEXT, 5))
    calls = fake.calls("sendMessageDraft")
    flooded = next(c for c in calls if c.error)
    assert flooded.error.startswith("Too Many Requests") and calls.index(flooded) == 2
    assert not calls[3:]  # the rest of the drafts were skipped, not queued up
    [final] = fake.calls("sendMessage")
    assert final.error is None and final.at - flooded.at >= 1.0  # Telegram's wait honoured
    assert fake.texts(CHAT) == [TEXT.replace("**", "")]  # complete, and only once


async def test_typing_repeats_until_the_first_draft_then_stops(
    fake: FakeTelegram, tg: Bot
) -> None:
    fake.slow("sendMessageDraft", 0.1)  # every draft takes a while: time for typing to repeat
    sink = TelegramSink(tg, CHAT, throttle=EditThrottle(interval=0), drafts=DraftSupport())
    sink.typing_every = 0.02
    async with sink.preparing():
        await fake.wait_for(lambda: len(fake.chat_actions(CHAT)) >= 3)  # before any token
        await sink.send_stream(chunks_of(TEXT, 20))
    first_draft = fake.calls("sendMessageDraft")[0]
    typing = fake.calls("sendChatAction")
    assert all(c.params["action"] == "typing" for c in typing)
    assert len(fake.calls("sendMessageDraft")) >= 4  # 0.4 s of drafting, 20 typing periods
    assert all(c.at < first_draft.at for c in typing)  # none once words showed


# -- end to end: the adapter, the engine and the model ------------------------------------


async def test_a_private_answer_is_drafted_then_sent_once_with_buttons(
    fake: FakeTelegram, bot
) -> None:
    fake.push(fake.private_message("How do I reset my password?"))
    [msg] = await fake.wait_for(lambda: fake.sent(ALICE))
    assert msg["text"] == "Answer: How do I reset my password?"
    await fake.wait_for(lambda: fake.keyboard(ALICE, msg["message_id"]))  # 👍/👎 added after
    assert fake.drafts(ALICE)  # it was shown as a draft first
    assert len(fake.calls("sendMessage")) == 1 and not fake.calls("editMessageText")
    typing = fake.calls("sendChatAction")
    assert typing and typing[0].at < fake.calls("sendMessageDraft")[0].at
    assert fake.chat_actions(ALICE)[0] == ("typing", None)


async def test_typing_comes_first_in_the_customers_topic(fake: FakeTelegram, bot) -> None:
    fake.push(fake.group_message("how does billing work?", mention=True, thread_id=77))
    await fake.wait_for(lambda: fake.texts(GROUP, thread_id=77))
    assert fake.chat_actions(GROUP)[0] == ("typing", 77)
    typing = [c for c in fake.calls("sendChatAction") if c.params["chat_id"] == GROUP]
    first = next(c for c in fake.calls("sendMessage") if c.params["chat_id"] == GROUP)
    assert typing[0].at < first.at
    assert not fake.drafts(GROUP)  # a group: the answer streamed by edits


SLOW_WORDS = " ".join(f"word{i}" for i in range(60))


async def test_a_takeover_mid_draft_stops_drafting(
    fake: FakeTelegram, bot, llm: FakeLLM
) -> None:
    engine, _ = bot
    conv_id, topic = await start_handoff(fake, engine)
    fake.push(fake.staff_message("/bot", chat_id=TG_STAFF, thread_id=topic, user_id=STAFFER))
    await fake.wait_for(lambda: "again" in fake.texts(ALICE)[-1])  # handed back
    llm.responder = lambda messages: SLOW_WORDS
    llm.delta_delay = 0.1  # six seconds of streaming
    before = len(fake.sent(ALICE))

    fake.push(fake.private_message("tell me everything"))
    await fake.wait_for(lambda: any("word3 " in t for d in fake.drafts(ALICE).values()
                                    for t in d))
    assert len(fake.sent(ALICE)) == before  # only a draft so far: nothing in the chat
    fake.push(fake.staff_message("Sam here, I'll take it from here.", chat_id=TG_STAFF,
                                 thread_id=topic, user_id=STAFFER))
    await fake.wait_for(lambda: "Sam here" in fake.texts(ALICE)[-1])
    sent = fake.sent(ALICE)[before:]
    assert len(sent) == 2  # what the customer read, kept as one message; then the staff reply
    cut, staff = sent
    assert staff["text"].startswith("Sam here")
    assert cut["text"].startswith("word0 word1 word2 word3")
    assert "word59" not in cut["text"] and not cut["text"].endswith("…")
    assert "reply_markup" not in cut  # no 👍/👎 under an interrupted answer
    kept = next(c for c in fake.calls("sendMessage") if c.params.get("chat_id") == ALICE
                and c.params.get("text", "").startswith("word0"))
    assert all(c.at < kept.at for c in fake.calls("sendMessageDraft"))  # drafting stopped
    view = await engine.get_conversation(conv_id)
    stored = [m for m in await engine.store.messages(conv_id) if m.role == "assistant"]
    assert view is not None and view.status is Status.HUMAN
    assert stored[-1].outcome == Outcome.INTERRUPTED
    assert stored[-1].platform_message_id == str(cut["message_id"])
    assert stored[-1].text == cut["text"]


async def test_answers_recovery_streams_are_drafted_too(fake: FakeTelegram, bot) -> None:
    """The engine's own sinks (answering after a crash) share the process's drafts."""
    _, adapter = bot
    fake.add_chat(ALICE, "private")
    conv = SimpleNamespace(thread_key=str(ALICE))  # all sink_for reads of a conversation
    await adapter.sink_for(conv).send_stream(chunks_of(TEXT, 9))
    assert fake.calls("sendMessageDraft")
    assert fake.texts(ALICE) == [TEXT.replace("**", "")]
    assert not fake.calls("editMessageText")
