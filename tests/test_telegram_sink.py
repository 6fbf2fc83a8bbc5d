"""The Telegram sink against the loopback fake, through python-telegram-bot's real Bot."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from telegram import Bot
from telegram.error import BadRequest

from supportbot import metrics
from supportbot.adapters.telegram.bot_api import ThreadNotFound
from supportbot.adapters.telegram.sink import EditThrottle, TelegramSink, edit_part, send_text
from supportbot.adapters.telegram.text import markdown_to_html, split_text, utf16_len
from supportbot.testing.fake_telegram import FakeTelegram, check_html

CHAT = 111


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram() as f:
        f.add_chat(CHAT, "private")
        yield f


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    async with Bot(fake.token, base_url=fake.url, base_file_url=fake.file_url) as b:
        yield b


def long_answer(n: int = 10_000) -> str:
    words, size, i = [], 0, 0
    while size < n:
        w = f"word{i}" + ("\n\n" if i % 50 == 49 else " ")
        words.append(w)
        size += len(w)
        i += 1
    return "".join(words)[:n]


def test_split_respects_utf16_limit_and_keeps_every_word() -> None:
    text = long_answer() + " " + "😀" * 3000  # emoji count twice in UTF-16
    parts = split_text(text)
    assert len(parts) >= 4
    assert all(utf16_len(p) <= 4096 for p in parts)
    assert "".join("".join(parts).split()) == "".join(text.split())  # the emoji run is cut hard
    assert " ".join(parts[:2]).split() == text.split()[: len(" ".join(parts[:2]).split())]


def test_split_reopens_a_code_fence_cut_in_two() -> None:
    code = "\n".join(f"line {i} = value_{i}" for i in range(600))
    parts = split_text(f"Intro\n```python\n{code}\n```\nDone")
    assert len(parts) >= 2
    assert all(p.count("```") % 2 == 0 for p in parts)
    assert all(utf16_len(p) <= 4096 for p in parts)


def test_markdown_renders_to_valid_telegram_html() -> None:
    out = markdown_to_html("**Bold** and `x < y` & [docs](https://ex.com/a?b=1&c=2) *it* <b>")
    assert "<b>Bold</b>" in out and "<code>x &lt; y</code>" in out
    assert '<a href="https://ex.com/a?b=1&amp;c=2">docs</a>' in out and "<i>it</i>" in out
    assert out.endswith("&lt;b&gt;")
    check_html(out)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab *_`[]()#\n<>&\"'`:/h")), max_size=80))
def test_any_markdown_renders_to_html_telegram_accepts(text: str) -> None:
    visible = check_html(markdown_to_html(text))
    assert utf16_len(visible) <= utf16_len(text)


async def test_ten_thousand_char_answer_arrives_in_parts(fake: FakeTelegram, bot: Bot) -> None:
    text = long_answer()
    sink = TelegramSink(bot, CHAT)
    first = await sink.send(text)
    texts = fake.texts(CHAT)
    assert len(texts) == 3 and first == str(fake.sent(CHAT)[0]["message_id"])
    assert all(utf16_len(t) <= 4096 for t in texts)
    assert " ".join(texts).split() == text.split()


async def test_rejected_markup_falls_back_to_plain_text(fake: FakeTelegram, bot: Bot) -> None:
    fake.fail("sendMessage", description="Bad Request: can't parse entities: boom")
    await TelegramSink(bot, CHAT).send("See **this** <now>")
    calls = fake.calls("sendMessage")
    assert [c.error is not None for c in calls] == [True, False]
    assert calls[0].params["parse_mode"] == "HTML" and "parse_mode" not in calls[1].params
    assert fake.texts(CHAT) == ["See **this** <now>"]


async def test_flood_control_waits_and_still_delivers(fake: FakeTelegram, bot: Bot) -> None:
    fake.fail("sendMessage", retry_after=1)
    await TelegramSink(bot, CHAT).send("hello")
    calls = fake.calls("sendMessage")
    assert len(calls) == 2 and calls[0].error and calls[0].error.startswith("Too Many Requests")
    assert calls[1].at - calls[0].at >= 1.0  # Telegram's retry_after was honoured
    assert fake.texts(CHAT) == ["hello"]


def telegram_metric(name: str, **labels: str) -> float:
    return metrics.value(name, {"platform": "telegram", **labels})


async def test_flood_waits_and_failed_calls_are_counted(fake: FakeTelegram, bot: Bot) -> None:
    waits = telegram_metric("supportbot_platform_rate_limit_waits_total")
    seconds = telegram_metric("supportbot_platform_rate_limit_wait_seconds_total")
    send_errors = telegram_metric("supportbot_platform_api_errors_total", method="sendMessage")
    edit_errors = telegram_metric("supportbot_platform_api_errors_total", method="editMessageText")

    fake.fail("sendMessage", retry_after=1)
    await TelegramSink(bot, CHAT).send("hello")
    assert telegram_metric("supportbot_platform_rate_limit_waits_total") == waits + 1
    assert telegram_metric("supportbot_platform_rate_limit_wait_seconds_total") == seconds + 1
    # the 429 was waited out, not a failure
    assert telegram_metric("supportbot_platform_api_errors_total", method="sendMessage") == (
        send_errors
    )

    fake.fail("sendMessage", description="Bad Request: chat not found", times=2)
    with pytest.raises(BadRequest):
        await TelegramSink(bot, CHAT).send("again")
    assert telegram_metric("supportbot_platform_api_errors_total", method="sendMessage") == (
        send_errors + 1
    )
    with pytest.raises(BadRequest):
        await edit_part(bot, CHAT, 999_999, "gone", final=True)
    assert telegram_metric("supportbot_platform_api_errors_total", method="editMessageText") == (
        edit_errors + 1
    )


async def test_deleted_topic_is_reported(fake: FakeTelegram, bot: Bot) -> None:
    fake.add_chat(-100500, forum=True)
    with pytest.raises(ThreadNotFound):
        await send_text(bot, -100500, "hi", thread_id=4242)


async def chunks_of(text: str, size: int) -> AsyncIterator[str]:
    for i in range(0, len(text), size):
        yield text[i : i + size]


async def test_streaming_edits_one_message_then_renders_markdown(
    fake: FakeTelegram, bot: Bot
) -> None:
    sink = TelegramSink(bot, CHAT, throttle=EditThrottle(interval=60))
    msg_id = await sink.send_stream(chunks_of("Use **the app** to reset it.", 4))
    sent = fake.sent(CHAT)
    assert len(sent) == 1 and msg_id == str(sent[0]["message_id"])
    assert sent[0]["text"] == "Use the app to reset it."  # final edit rendered as HTML
    assert len(fake.calls("sendMessage")) == 1
    assert len(fake.calls("editMessageText")) == 1  # throttled: only the final edit


async def test_streaming_a_long_answer_continues_in_new_messages(
    fake: FakeTelegram, bot: Bot
) -> None:
    text = long_answer()
    sink = TelegramSink(bot, CHAT, throttle=EditThrottle(interval=0))
    await sink.send_stream(chunks_of(text, 700))
    texts = fake.texts(CHAT)
    assert len(texts) == 3 and all(utf16_len(t) <= 4096 for t in texts)
    assert " ".join(texts).split() == text.split()


async def test_streaming_survives_flood_control_on_an_edit(fake: FakeTelegram, bot: Bot) -> None:
    fake.fail("editMessageText", retry_after=1)
    sink = TelegramSink(bot, CHAT, throttle=EditThrottle(interval=0))
    await sink.send_stream(chunks_of("one two three four five six", 5))
    assert fake.texts(CHAT) == ["one two three four five six"]


async def test_a_rated_answer_carries_its_buttons_in_the_send(
    fake: FakeTelegram, bot: Bot
) -> None:
    sink = TelegramSink(bot, CHAT)
    await sink.send("Refunds take **5 days**.", feedback_id=42)
    [msg] = fake.sent(CHAT)
    [[up, down]] = fake.keyboard(CHAT, msg["message_id"])
    assert (up["callback_data"], down["callback_data"]) == ("fb:1:42", "fb:0:42")
    assert sink.rated == 42
    assert len(fake.calls("sendMessage")) == 1


async def test_buttons_go_under_the_last_part_of_a_long_answer(
    fake: FakeTelegram, bot: Bot
) -> None:
    await TelegramSink(bot, CHAT).send(long_answer(), feedback_id=7)
    sent = fake.sent(CHAT)
    assert len(sent) == 3
    assert [bool(fake.keyboard(CHAT, m["message_id"])) for m in sent] == [False, False, True]


async def test_buttons_survive_the_plain_text_fallback(fake: FakeTelegram, bot: Bot) -> None:
    fake.fail("sendMessage", description="Bad Request: can't parse entities: nope")
    sink = TelegramSink(bot, CHAT)
    await sink.send("**bold** answer", feedback_id=5)
    [msg] = fake.sent(CHAT)
    assert msg["parse_mode"] is None and fake.keyboard(CHAT, msg["message_id"])
    assert sink.rated == 5


async def test_unrated_replies_have_no_buttons(fake: FakeTelegram, bot: Bot) -> None:
    sink = TelegramSink(bot, CHAT)
    await sink.send("I don't know that one.")
    await sink.send("Still no idea.", feedback_id=None)
    assert [fake.keyboard(CHAT, m["message_id"]) for m in fake.sent(CHAT)] == [[], []]
    assert sink.rated is None
