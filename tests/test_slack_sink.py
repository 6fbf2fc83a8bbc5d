"""Posting through the real slack_sdk client to FakeSlack: pacing, 429s, splitting, streaming."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from supportbot.adapters.slack.sink import PLACEHOLDER, SlackPoster, SlackSink
from supportbot.prompts import PromptLibrary
from supportbot.testing.fake_slack import FakeSlack


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def poster_for(fake: FakeSlack, **kw: object) -> SlackPoster:
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    return SlackPoster(client, **{"min_interval": 0.0, **kw})  # type: ignore[arg-type]


async def test_send_converts_markdown_into_thread(fake: FakeSlack) -> None:
    sink = SlackSink(poster_for(fake), "C1", "100.1")
    ts = await sink.send("**Hi** see [docs](https://d.io)")
    [msg] = fake.messages(channel="C1")
    assert msg.ts == ts
    assert msg.thread_ts == "100.1"
    assert msg.text == "*Hi* see <https://d.io|docs>"


async def test_dm_reply_without_thread(fake: FakeSlack) -> None:
    await SlackSink(poster_for(fake), "D1", None).send("hello")
    [call] = fake.calls("chat.postMessage")
    assert "thread_ts" not in call.params


async def test_long_reply_is_split(fake: FakeSlack) -> None:
    sink = SlackSink(poster_for(fake, limit=500), "C1", "1.1")
    text = "\n\n".join(f"Paragraph {i}: " + "word " * 30 for i in range(20))
    await sink.send(text)
    msgs = fake.messages(channel="C1")
    assert len(msgs) > 1
    assert all(len(m.text) <= 500 for m in msgs)
    assert " ".join(m.text for m in msgs).split() == text.split()
    assert len(sink.sent) == len(msgs)


async def test_msg_too_long_from_slack_is_split_not_dropped(fake: FakeSlack) -> None:
    fake.max_text_chars = 1000  # Slack's own limit is lower than we assumed
    sink = SlackSink(poster_for(fake, limit=3000), "C1", "1.1")
    text = " ".join(f"w{i}" for i in range(700))  # ~3.4k chars
    await sink.send(text)
    assert any(c.error == "msg_too_long" for c in fake.calls("chat.postMessage"))
    msgs = fake.messages(channel="C1")
    assert len(msgs) >= 4
    assert " ".join(m.text for m in msgs).split() == text.split()


async def test_429_waits_for_retry_after_and_delivers(fake: FakeSlack) -> None:
    fake.rate_limit("chat.postMessage", retry_after=1, times=1)
    sink = SlackSink(poster_for(fake), "C1", "1.1")
    started = time.monotonic()
    await sink.send("still delivered")
    calls = fake.calls("chat.postMessage")
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].at - calls[0].at >= 0.9  # honoured Retry-After
    assert time.monotonic() - started >= 0.9
    assert [m.text for m in fake.messages(channel="C1")] == ["still delivered"]


async def test_persistent_429_gives_up_with_error(fake: FakeSlack) -> None:
    fake.rate_limit("chat.postMessage", retry_after=0, times=10)
    sink = SlackSink(poster_for(fake, max_attempts=3), "C1", "1.1")
    with pytest.raises(SlackApiError):
        await sink.send("x")
    assert len(fake.calls("chat.postMessage")) == 3


async def test_other_errors_raise(fake: FakeSlack) -> None:
    fake.fail("chat.postMessage", "channel_not_found")
    with pytest.raises(SlackApiError) as info:
        await SlackSink(poster_for(fake), "C1", None).send("x")
    assert info.value.response["error"] == "channel_not_found"


async def test_one_post_per_interval_per_channel(fake: FakeSlack) -> None:
    poster = poster_for(fake, min_interval=0.2)
    await asyncio.gather(
        *(poster.post("C1", f"m{i}") for i in range(3)), poster.post("C2", "other")
    )
    c1 = [c.at for c in fake.calls("chat.postMessage") if c.params["channel"] == "C1"]
    assert len(c1) == 3
    gaps = [b - a for a, b in itertools.pairwise(c1)]
    assert all(g >= 0.17 for g in gaps), gaps


async def test_paced_writes_go_out_in_the_order_they_came(fake: FakeSlack) -> None:
    poster = poster_for(fake, min_interval=0.05)
    await poster.post("C1", "first")  # takes the channel's turn without waiting
    await asyncio.gather(*(poster.post("C1", f"m{i}") for i in range(5)))
    await asyncio.sleep(0.06)
    await poster.post("C1", "later")  # the channel is quiet again
    assert [m.text for m in fake.messages(channel="C1")] == [
        "first", "m0", "m1", "m2", "m3", "m4", "later"
    ]


async def chunks(parts: list[str], pause: float = 0.0) -> AsyncIterator[str]:
    for part in parts:
        if pause:
            await asyncio.sleep(pause)
        yield part


async def test_stream_posts_placeholder_then_updates(fake: FakeSlack) -> None:
    sink = SlackSink(poster_for(fake), "C1", "1.1", stream_interval=0.05)
    parts = ["**Step", " one**", " and", " more", " text", " done"]
    ts = await sink.send_stream(chunks(parts, pause=0.03))
    [msg] = fake.messages(channel="C1")
    assert msg.ts == ts
    assert msg.edits[0] == PLACEHOLDER
    assert msg.text == "*Step one* and more text done"
    assert len(msg.edits) >= 3  # placeholder, at least one partial, final
    assert all(e.endswith(PLACEHOLDER) for e in msg.edits[:-1])


async def test_stream_updates_are_throttled(fake: FakeSlack) -> None:
    sink = SlackSink(poster_for(fake), "C1", "1.1", stream_interval=10)
    await sink.send_stream(chunks([f"w{i} " for i in range(50)]))
    # a placeholder and one final edit, however many chunks arrived
    assert len(fake.calls("chat.postMessage")) == 1
    assert len(fake.calls("chat.update")) == 1


async def test_stream_past_the_limit_continues_in_new_messages(fake: FakeSlack) -> None:
    sink = SlackSink(poster_for(fake, limit=300), "C1", "1.1", stream_interval=0)
    words = [f"word{i} " for i in range(200)]
    await sink.send_stream(chunks(words))
    msgs = fake.messages(channel="C1")
    assert len(msgs) >= 4
    assert all(len(m.text) <= 300 for m in msgs)
    assert " ".join(m.text for m in msgs).split() == "".join(words).split()


async def test_stream_with_429_on_update_still_finishes(fake: FakeSlack) -> None:
    fake.rate_limit("chat.update", retry_after=1, times=1)
    sink = SlackSink(poster_for(fake), "C1", "1.1", stream_interval=0)
    await sink.send_stream(chunks(["a", "b", "c"]))
    [msg] = fake.messages(channel="C1")
    assert msg.text == "abc"


async def test_empty_stream_posts_nothing(fake: FakeSlack) -> None:
    sink = SlackSink(poster_for(fake), "C1", "1.1")
    assert await sink.send_stream(chunks([])) is None
    assert fake.messages() == []


async def test_stream_falls_back_to_new_message_when_edit_fails(fake: FakeSlack) -> None:
    fake.fail("chat.update", "cant_update_message", times=100)
    sink = SlackSink(poster_for(fake), "C1", "1.1", stream_interval=0)
    ts = await sink.send_stream(chunks(["final ", "answer", " is", " here"]))
    msgs = fake.messages(channel="C1")
    assert [m.text for m in msgs] == [PLACEHOLDER, "final answer is here"]  # no partial spam
    assert ts == msgs[-1].ts


async def test_stream_error_propagates_and_keeps_partial_text(fake: FakeSlack) -> None:
    async def broken() -> AsyncIterator[str]:
        yield "partial"
        yield " answer"
        raise RuntimeError("llm went away")

    sink = SlackSink(poster_for(fake), "C1", "1.1", stream_interval=0)
    with pytest.raises(RuntimeError):
        await sink.send_stream(broken())
    [msg] = fake.messages(channel="C1")
    assert msg.text.startswith("partial answer")


def buttons(msg) -> list[str]:
    return [e["value"] for b in msg.blocks or [] if b["type"] == "actions" for e in b["elements"]]


async def test_a_rated_answer_is_posted_with_its_buttons(fake: FakeSlack) -> None:
    sink = SlackSink(poster_for(fake), "C1", "1.1")
    ts = await sink.send("**Refunds** take 5 days.", feedback_id=42)
    [msg] = fake.messages(channel="C1")
    assert msg.ts == ts and msg.text == "*Refunds* take 5 days."
    assert msg.blocks[0]["text"]["text"] == msg.text  # blocks replace the text on screen
    assert buttons(msg) == ["42", "42"] and sink.rated == 42
    assert [c.method for c in fake.calls()] == ["chat.postMessage"]


async def test_buttons_go_under_the_last_message_of_a_long_answer(fake: FakeSlack) -> None:
    sink = SlackSink(poster_for(fake), "C1", "1.1")
    text = "\n\n".join(f"Paragraph {i}: " + "word " * 60 for i in range(22))  # ~7k chars
    await sink.send(text, feedback_id=7)
    msgs = fake.messages(channel="C1")
    assert len(msgs) == 2 and [bool(buttons(m)) for m in msgs] == [False, True]
    *sections, _ = msgs[-1].blocks
    assert len(sections) == 2  # 3,000 characters per section: the last message needs two
    assert "\n\n".join(b["text"]["text"] for b in sections).split() == msgs[-1].text.split()
    assert " ".join(m.text for m in msgs).split() == text.split()


async def test_refused_buttons_do_not_cost_the_answer(fake: FakeSlack) -> None:
    fake.fail("chat.postMessage", "invalid_blocks")
    sink = SlackSink(poster_for(fake), "C1", "1.1")
    await sink.send("Refunds take 5 days.", feedback_id=3)
    [msg] = fake.messages(channel="C1")
    assert msg.text == "Refunds take 5 days." and not msg.blocks
    assert sink.rated is None  # so the adapter still tries to add them by an edit


async def test_other_errors_with_buttons_are_not_retried_plainly(fake: FakeSlack) -> None:
    fake.fail("chat.postMessage", "channel_not_found")
    with pytest.raises(SlackApiError):
        await SlackSink(poster_for(fake), "C1", "1.1").send("Refunds take 5 days.", feedback_id=3)
    assert len(fake.calls("chat.postMessage")) == 1


async def test_an_answer_finished_in_place_gets_buttons_in_its_language(fake: FakeSlack) -> None:
    """``replace`` (recovery finishing a half-streamed reply) labels the buttons like ``send``."""
    sink = SlackSink(poster_for(fake), "C1", "1.1", prompts=PromptLibrary())
    ts = await sink.send("退款")
    await sink.replace(ts, "退款需要五到七个工作日。", feedback_id=9)
    [msg] = fake.messages(channel="C1")
    labels = [e["text"]["text"] for b in msg.blocks if b["type"] == "actions"
              for e in b["elements"]]
    assert buttons(msg) == ["9", "9"] and labels == ["👍 有帮助", "👎 没帮助"]
