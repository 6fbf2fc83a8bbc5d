"""Slack native streaming (chat.startStream / appendStream / stopStream), its fallback to
chat.update edits, a takeover in the middle of a native stream, and which writes are paced.

The sink talks to FakeSlack through the real slack_sdk client; the end-to-end cases go through
signed HTTP requests into ``supportbot serve``'s app (uvicorn on loopback), the real Bolt app and
engine, with FakeLLM streaming the answers.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from slack_sdk.web.async_client import AsyncWebClient
from test_slack_adapter import HUMAN_PLEASE, STAFF, STAFF_CHANNEL, Env
from test_slack_adapter import running as serving

from supportbot.adapters.slack.buttons import BLOCK_ID
from supportbot.adapters.slack.sink import SlackPoster, SlackSink
from supportbot.engine import Outcome, Status
from supportbot.testing.fake_slack import FakeSlack
from supportbot.textflow import reflow

CUSTOMER, TEAM = "UCUSTOMER", "T0001"
WORDS = 60
LONG_ANSWER = " ".join(f"word{i}" for i in range(WORDS))
EDITS = ("chat.update", "chat.appendStream", "chat.stopStream")


# -- the sink against FakeSlack ------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def poster_for(fake: FakeSlack, **kw: object) -> SlackPoster:
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    return SlackPoster(client, **{"min_interval": 0.0, **kw})  # type: ignore[arg-type]


def thread_sink(poster: SlackPoster, channel: str = "C1") -> SlackSink:
    return SlackSink(poster, channel, "100.1", stream_interval=0.0,
                     recipient=(TEAM, CUSTOMER))


async def chunks(text: str, size: int = 7) -> AsyncIterator[str]:
    for start in range(0, len(text), size):
        await asyncio.sleep(0)
        yield text[start:start + size]


HARD_WRAPPED = (
    "Refunds take five to seven\nbusiness days after we receive\nthe returned item.\n\n"
    "What to do:\n1. Open your orders page\n2. Choose the order\n   and press Refund\n\n"
    "```\ncode  keeps\n  its lines\n```\n退款需要\n五到七天。"
)


async def test_native_stream_grows_one_message_reflowed(fake: FakeSlack) -> None:
    sink = thread_sink(poster_for(fake))
    starts: list[str] = []

    async def started(ts: str) -> None:
        starts.append(ts)
        [msg] = fake.messages(channel="C1")
        assert msg.streaming and msg.text == ""  # told before any text goes in

    ts = await sink.send_stream(chunks(HARD_WRAPPED), started=started)
    [msg] = fake.messages(channel="C1")
    assert starts == [ts] == [msg.ts] and sink.sent == [ts]
    assert msg.thread_ts == "100.1" and not msg.streaming
    assert msg.text == reflow(HARD_WRAPPED)  # appended only what later text could not change
    assert "five to seven business days after we receive the returned item." in msg.text
    assert "\n1. Open your orders page\n2. Choose the order and press Refund\n" in msg.text
    assert "退款需要五到七天。" in msg.text
    [start] = fake.calls("chat.startStream")
    assert start.params["recipient_team_id"] == TEAM
    assert start.params["recipient_user_id"] == CUSTOMER
    assert len(fake.calls("chat.appendStream")) > 1  # it did stream
    assert len(fake.calls("chat.stopStream")) == 1
    assert not fake.calls("chat.postMessage") and not fake.calls("chat.update")


async def test_native_stream_past_the_size_limit_goes_on_in_a_new_stream(fake: FakeSlack) -> None:
    sink = thread_sink(poster_for(fake, limit=300))
    text = " ".join(f"w{i}" for i in range(250))  # ~1,100 characters
    await sink.send_stream(chunks(text, size=40))
    msgs = fake.messages(channel="C1")
    assert len(msgs) >= 4 and sink.sent == [m.ts for m in msgs]
    assert all(len(m.text) <= 300 and not m.streaming for m in msgs)
    assert " ".join(m.text for m in msgs).split() == text.split()
    assert len(fake.calls("chat.stopStream")) == len(msgs)
    assert sink.last_text == msgs[-1].text  # what the buttons' edit repeats


async def test_refused_native_streaming_falls_back_to_edits_once_per_workspace(
    fake: FakeSlack,
) -> None:
    fake.refuse_streaming("unknown_method")
    poster = poster_for(fake)
    for thread in ("100.1", "200.1"):
        sink = SlackSink(poster, "C1", thread, stream_interval=0.0, recipient=(TEAM, CUSTOMER))
        await sink.send_stream(chunks("The answer, streamed by edits instead."))
    assert len(fake.calls("chat.startStream")) == 1  # not asked again for the second answer
    assert poster.stream_refused == {TEAM: "unknown_method"}
    msgs = fake.messages(channel="C1")
    assert [m.text for m in msgs] == ["The answer, streamed by edits instead."] * 2
    assert all(m.edits[0] == "…" for m in msgs)  # the placeholder, then chat.update edits
    assert fake.calls("chat.update")


async def test_a_refused_start_does_not_cost_the_channel_its_turn(fake: FakeSlack) -> None:
    fake.refuse_streaming("not_allowed")
    poster = poster_for(fake, min_interval=5.0)  # a wait would be counted (and felt)
    await thread_sink(poster).send_stream(chunks("The answer, by edits."))
    assert dict(poster.paced) == {"chat.startStream": 1, "chat.postMessage": 1}
    assert not poster.pace_waits
    assert [m.text for m in fake.messages(channel="C1")] == ["The answer, by edits."]


async def test_where_slack_cannot_stream_natively_it_streams_by_edits(fake: FakeSlack) -> None:
    poster = poster_for(fake)
    await SlackSink(poster, "D1", None).send_stream(chunks("a flat DM has no thread"))
    await SlackSink(poster, "C1", "1.1").send_stream(chunks("a channel needs the recipient"))
    await thread_sink(poster_for(fake, native_streaming=False), "C2").send_stream(
        chunks("turned off by SUPPORTBOT_SLACK_NATIVE_STREAMING"))
    assert not fake.calls("chat.startStream")
    assert len(fake.calls("chat.postMessage")) == 3
    assert not poster.stream_refused  # nothing was refused: native stays on elsewhere


async def test_a_failing_producer_leaves_no_stream_open(fake: FakeSlack) -> None:
    sink = thread_sink(poster_for(fake))

    async def failing() -> AsyncIterator[str]:
        yield "A first sentence that is long enough. "
        await asyncio.sleep(0)
        yield "And a second one. "
        raise RuntimeError("the model went away")

    with pytest.raises(RuntimeError):
        await sink.send_stream(failing())
    [msg] = fake.messages(channel="C1")
    assert not msg.streaming and msg.text.startswith("A first sentence that is long enough.")


async def test_edits_are_not_paced_only_new_messages_are(fake: FakeSlack) -> None:
    """A one-minute pacing interval: any paced edit would be counted (and would hang)."""
    native = poster_for(fake, min_interval=60.0)
    sink = thread_sink(native)
    await sink.send_stream(chunks("Streamed natively, with many appends along the way."))
    await sink.replace(sink.sent[0], "The finished answer.", feedback_id=7)  # an edit
    assert dict(native.paced) == {"chat.startStream": 1}
    assert not native.pace_waits

    edits = poster_for(fake, min_interval=60.0, native_streaming=False)
    await thread_sink(edits, "C2").send_stream(chunks("Streamed by edits of a placeholder."))
    assert dict(edits.paced) == {"chat.postMessage": 1}  # the placeholder; its edits are not
    assert not edits.pace_waits
    assert len([c for c in fake.calls("chat.update") if c.params["channel"] == "C2"]) > 1


async def test_new_messages_in_one_channel_are_still_paced(fake: FakeSlack) -> None:
    poster = poster_for(fake, min_interval=0.05)
    await asyncio.gather(*(thread_sink(poster).send_stream(chunks(f"answer number {i}"))
                           for i in range(3)))
    assert poster.paced["chat.startStream"] == 3 and poster.pace_waits["chat.startStream"] >= 1
    assert not any(poster.paced[m] for m in EDITS)


# -- end to end: the Slack adapter, the engine, FakeLLM -------------------------------------


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with serving(tmp_path) as env:
        yield env


def labels_of(message) -> list[str]:
    [actions] = [b for b in message.blocks or [] if b.get("block_id") == BLOCK_ID]
    return [element["text"]["text"] for element in actions["elements"]]


async def ask_in_thread(env: Env, text: str, channel: str = "C1"):
    root = env.slack.mention_event(text, channel=channel)
    assert (await env.post_event(root)).status_code == 200
    await env.wait(lambda: any(m.blocks for m in env.slack.messages(channel=channel)))
    await env.settle()
    [answer] = env.slack.messages(channel=channel)
    assert answer.thread_ts == root["ts"]
    return answer


async def test_a_streamed_answer_is_one_native_message_with_rating_buttons(env: Env) -> None:
    answer = await ask_in_thread(env, "How long do refunds take?")
    assert "How long do refunds take?" in answer.text and not answer.streaming
    [start] = env.slack.calls("chat.startStream")
    assert (start.params["recipient_team_id"], start.params["recipient_user_id"]) == (
        TEAM, CUSTOMER)
    assert len(env.slack.calls("chat.stopStream")) == 1  # a fast model: the text goes with it
    assert not [c for c in env.slack.calls("chat.postMessage") if c.params["channel"] == "C1"]
    # the buttons: an edit after the stream (the stored id exists only once it is done)
    assert labels_of(answer) == ["👍 Helpful", "👎 Not helpful"]
    [section] = [b for b in answer.blocks if b["type"] == "section"]
    assert "How long do refunds take?" in section["text"]["text"]
    assert not any(env.adapter.poster.paced[m] for m in EDITS)


async def test_a_chinese_conversation_gets_chinese_rating_buttons(env: Env) -> None:
    answer = await ask_in_thread(env, "退款需要多长时间？")
    assert env.slack.calls("chat.startStream")
    assert labels_of(answer) == ["👍 有帮助", "👎 没帮助"]


async def test_refused_native_streaming_falls_back_to_chat_update(env: Env) -> None:
    env.slack.refuse_streaming("unknown_method")
    first = await ask_in_thread(env, "How long do refunds take?", channel="C1")
    second = await ask_in_thread(env, "And how do I return an item?", channel="C2")
    assert len(env.slack.calls("chat.startStream")) == 1  # remembered for the workspace
    for answer in (first, second):
        assert answer.edits[0] == "…" and labels_of(answer)
    assert "How long do refunds take?" in first.text
    assert env.slack.calls("chat.update")


async def test_native_streaming_can_be_turned_off(tmp_path: Path) -> None:
    async with serving(tmp_path, slack_native_streaming=False) as env:
        answer = await ask_in_thread(env, "How long do refunds take?")
        assert not env.slack.calls("chat.startStream")
        assert answer.edits[0] == "…" and labels_of(answer)


async def test_a_takeover_mid_native_stream_stops_it_at_once(env: Env) -> None:
    root = env.slack.mention_event(HUMAN_PLEASE, channel="C7")
    await env.post_event(root)
    [note] = await env.wait(lambda: env.slack.messages(channel=STAFF_CHANNEL))
    await env.settle()
    conv = await env.engine.find_conversation("slack", f"{TEAM}:C7:{root['ts']}")
    assert conv is not None
    await env.press("supportbot_hand_back", str(conv.id), user=STAFF, message_ts=note.ts)
    await env.wait(lambda: len(env.slack.messages(channel="C7")) == 2)  # the hand-back notice
    await env.settle()
    env.llm.responder = lambda messages: LONG_ANSWER
    env.llm.delta_delay = 0.1  # six seconds of streaming

    await env.post_event(env.slack.message_event(
        "tell me everything", channel="C7", channel_type="channel", thread_ts=root["ts"]))
    [streaming] = await env.wait(lambda: [
        m for m in env.slack.messages(channel="C7") if m.streaming and "word3 " in m.text])
    r = await env.press("supportbot_take_over", str(conv.id), user=STAFF, message_ts=note.ts)
    assert r.status_code == 200
    [final] = await env.wait(lambda: [
        m for m in env.slack.messages(channel="C7") if m.ts == streaming.ts and not m.streaming])
    await env.settle()
    stops = [c for c in env.slack.calls("chat.stopStream") if c.params["ts"] == streaming.ts]
    view = await env.engine.get_conversation(conv.id)
    replies = [m for m in await env.engine.store.messages(conv.id) if m.role == "assistant"]
    await asyncio.sleep(0.3)  # the LLM would have gone on writing: nothing more arrives
    after = env.slack.calls()[env.slack.calls().index(stops[0]) + 1:]
    assert len(stops) == 1 and not [c for c in after if c.params.get("ts") == streaming.ts]
    assert view is not None and view.status is Status.HUMAN
    assert f"word{WORDS - 1}" not in final.text and not final.text.endswith("…")
    assert final.blocks is None  # no rating buttons under an interrupted answer
    assert env.slack.messages(channel="C7")[-1].ts == final.ts  # nothing after it
    assert replies[-1].outcome == Outcome.INTERRUPTED and replies[-1].text in final.text
    assert replies[-1].platform_message_id == streaming.ts


async def test_recovery_finishes_a_native_stream_a_crash_left_open(fake: FakeSlack) -> None:
    poster = poster_for(fake)
    opened = await poster.call("chat.startStream", channel="C1", thread_ts="100.1",
                               recipient_team_id=TEAM, recipient_user_id=CUSTOMER)
    await poster.call("chat.appendStream", channel="C1", ts=opened["ts"],
                      markdown_text="Refunds take")  # then the process died
    sink = thread_sink(poster_for(fake))
    await sink.replace(opened["ts"], "Refunds take five days.", feedback_id=4)
    [msg] = fake.messages(channel="C1")
    assert not msg.streaming and msg.text == "Refunds take five days." and msg.blocks
    assert [c.method for c in fake.calls()][-2:] == ["chat.stopStream", "chat.update"]


async def test_a_native_stream_pings_nobody(fake: FakeSlack) -> None:
    """The mrkdwn path escapes ``<``; the Markdown of a native stream defuses Slack's mentions."""
    text = "Tell <!channel> and <!here> and <@U123ABC> in <#C42XYZ>; `a <b>` and <!-- x --> stay."
    await thread_sink(poster_for(fake)).send_stream(chunks(text, size=3))
    [msg] = fake.messages(channel="C1")
    for ping in ("<!channel>", "<!here>", "<@U123ABC>", "<#C42XYZ>"):
        assert ping not in msg.text and ping in msg.text.replace("\u2060", "")
    assert "`a <b>` and <!-- x --> stay." in msg.text


async def test_whatever_the_chunking_nothing_appended_needs_taking_back(fake: FakeSlack) -> None:
    """Slack only appends: a re-flow that changed its mind would need an edit afterwards."""
    text = HARD_WRAPPED + "\n\nSee <https://x.io> or ask <!here>\\\nthen  \n- a\n- b <@U1AB>"
    rng = random.Random(20)
    for run in range(12):
        async def random_chunks() -> AsyncIterator[str]:
            at = 0
            while at < len(text):
                step = rng.randint(1, 9)
                yield text[at:at + step]
                at += step

        await thread_sink(poster_for(fake), f"C{run}").send_stream(random_chunks())
        [msg] = fake.messages(channel=f"C{run}")
        assert msg.text.replace("\u2060", "") == reflow(text)
    assert not fake.calls("chat.update")


@pytest.mark.parametrize("failing", ["chat.appendStream", "chat.stopStream"])
async def test_a_stream_slack_stops_taking_is_finished_by_an_edit(fake: FakeSlack,
                                                                   failing: str) -> None:
    fake.fail(failing, "message_not_in_streaming_state")
    sink = thread_sink(poster_for(fake))
    text = "A first line that is long enough to go.\nAnd the rest of the answer, all of it."
    ts = await sink.send_stream(chunks(text))
    [msg] = fake.messages(channel="C1")
    assert msg.ts == ts and msg.text == reflow(text)  # complete, by one chat.update
    assert [c.params["ts"] for c in fake.calls("chat.update")] == [ts]
    assert sink.last_text == msg.text


async def test_a_channel_error_on_start_is_not_held_against_the_workspace(
    fake: FakeSlack,
) -> None:
    fake.fail("chat.startStream", "not_in_channel")
    poster = poster_for(fake)
    await thread_sink(poster, "C1").send_stream(chunks("By edits this once."))
    await thread_sink(poster, "C2").send_stream(chunks("Natively again."))
    assert not poster.stream_refused and len(fake.calls("chat.startStream")) == 2
    [second] = fake.messages(channel="C2")
    assert second.text == "Natively again." and second.edits[0] == ""  # a stream, no "…"
    [first] = fake.messages(channel="C1")
    assert first.text == "By edits this once." and first.edits[0] == "…"
