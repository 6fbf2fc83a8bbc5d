"""The Slack adapter end to end: signed HTTP requests into ``supportbot serve``'s Starlette app
(uvicorn on loopback), the real Bolt app and engine, and FakeSlack + FakeLLM as the outside world.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from supportbot.adapters.slack import SlackAdapter
from supportbot.adapters.slack.desk import CLOSE, HAND_BACK, NOT_STAFF, TAKE_OVER
from supportbot.config import Settings
from supportbot.engine import Engine, Status
from supportbot.server import create_app
from supportbot.testing.fake_llm import FakeLLM
from supportbot.testing.fake_slack import FakeSlack

ROOT = Path(__file__).resolve().parents[1]
STAFF, CUSTOMER, STAFF_CHANNEL = "USTAFF", "UCUSTOMER", "CSTAFF"
HUMAN_PLEASE = "I want to talk to a real person"


@dataclass
class Env:
    slack: FakeSlack
    llm: FakeLLM
    engine: Engine
    adapter: SlackAdapter
    http: httpx.AsyncClient

    async def post_event(self, event: dict, **kw: object) -> httpx.Response:
        headers, body = self.slack.signed_event(event, **kw)  # type: ignore[arg-type]
        return await self.http.post("/slack/events", headers=headers, content=body)

    async def press(
        self, action_id: str, value: str, *, user: str, message_ts: str
    ) -> httpx.Response:
        payload = self.slack.block_action(
            action_id, value, user=user, channel=STAFF_CHANNEL, message_ts=message_ts
        )
        headers, body = self.slack.signed_interaction(payload)
        return await self.http.post("/slack/events", headers=headers, content=body)

    async def wait(self, predicate, within: float = 15.0):
        # a bound against hangs, not a timing check: a loaded CI machine once needed over 5 s
        return await self.slack.async_wait_for(predicate, within=within)

    async def settle(self) -> None:
        """Let the listener tasks Bolt started run, then wait for our own work."""
        for _ in range(3):
            await asyncio.sleep(0.05)
            await self.adapter.drain(within=5)


def make_settings(slack: FakeSlack, llm: FakeLLM | None, tmp_path: Path, **kw: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "prompts_dir": ROOT / "supportbot/defaults/prompts",
        "knowledge_dir": ROOT / "supportbot/defaults/knowledge",
        "slack_bot_token": slack.bot_token,
        "slack_signing_secret": slack.signing_secret,
        "slack_api_url": slack.api_url,
        "slack_staff_channel": STAFF_CHANNEL,
        "slack_staff_user_ids": [STAFF],
        "slack_support_channels": ["CSUPPORT"],
    }
    if llm is not None:
        values.update(llm_base_url=llm.url, llm_api_key="sk-test-key", llm_max_retries=0)
    values.update(kw)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def serving(slack: FakeSlack, llm: FakeLLM, settings: Settings) -> AsyncIterator[Env]:
    """The engine and the Slack adapter behind a real uvicorn server on a loopback port (the
    other Slack test modules start theirs through this too)."""
    engine = await Engine.open(settings)
    adapter = SlackAdapter(engine, settings, min_interval=0.0, stream_interval=0.05)
    server = uvicorn.Server(uvicorn.Config(create_app(engine, [adapter]), host="127.0.0.1",
                                           port=0, log_config=None, lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        await FakeSlack.async_wait_for(lambda: server.started, within=10)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            yield Env(slack, llm, engine, adapter, http)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        await engine.aclose()


@contextlib.asynccontextmanager
async def running(tmp_path: Path, **settings: object) -> AsyncIterator[Env]:
    """Fresh fakes and a served bot with ``make_settings`` plus ``settings``."""
    with FakeSlack() as slack, FakeLLM() as llm:
        async with serving(slack, llm, make_settings(slack, llm, tmp_path, **settings)) as e:
            yield e


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with running(tmp_path) as e:
        yield e


def texts(slack: FakeSlack, channel: str, thread_ts: str | None = None) -> list[str]:
    return [m.text for m in slack.messages(channel=channel, thread_ts=thread_ts)]


async def test_dm_is_answered_in_the_dm(env: Env) -> None:
    r = await env.post_event(env.slack.message_event("how do refunds work?", channel="D1"))
    assert r.status_code == 200
    [msg] = await env.wait(lambda: env.slack.messages(channel="D1"))
    await env.settle()
    assert msg.thread_ts is None  # a DM without threads stays flat
    assert "how do refunds work?" in msg.text
    conv = await env.engine.find_conversation("slack", "T0001:D1")
    assert conv is not None and conv.customer_name == "User UCUSTOMER"
    assert env.llm.chat_requests()[-1].messages[-1]["content"] == "how do refunds work?"


async def test_mention_answers_in_a_thread_and_follow_up_needs_no_mention(env: Env) -> None:
    root = env.slack.mention_event("what are your prices?", channel="C1")
    # Slack delivers the same message as app_mention and as message.channels.
    twin = env.slack.message_event(
        root["text"], channel="C1", channel_type="channel", ts=root["ts"]
    )
    await env.post_event(root)
    await env.post_event(twin)
    await env.wait(lambda: env.slack.messages(channel="C1"))
    await env.settle()
    [reply] = env.slack.messages(channel="C1")
    assert reply.thread_ts == root["ts"]
    assert "<@UBOT>" not in env.llm.chat_requests()[-1].messages[-1]["content"]

    follow = env.slack.message_event(
        "and for teams?", channel="C1", channel_type="channel", thread_ts=root["ts"]
    )
    await env.post_event(follow)
    await env.wait(lambda: len(env.slack.messages(channel="C1")) == 2)
    await env.settle()
    assert "and for teams?" in texts(env.slack, "C1", root["ts"])[1]
    assert len(env.llm.chat_requests()) == 2  # the twin delivery was not answered again


async def test_channel_chatter_and_unknown_threads_are_ignored(env: Env) -> None:
    await env.post_event(env.slack.message_event("lunch?", channel="C2", channel_type="channel"))
    await env.post_event(
        env.slack.message_event(
            "re: lunch", channel="C2", channel_type="channel", thread_ts="5.000001"
        )
    )
    await env.settle()
    assert env.slack.messages() == []
    assert env.llm.chat_requests() == []


async def test_support_channel_answers_every_new_message(env: Env) -> None:
    ev = env.slack.message_event("my invoice is wrong", channel="CSUPPORT", channel_type="channel")
    await env.post_event(ev)
    [msg] = await env.wait(lambda: env.slack.messages(channel="CSUPPORT"))
    assert msg.thread_ts == ev["ts"]


async def test_retry_of_the_same_event_gets_one_reply(env: Env) -> None:
    ev = env.slack.message_event("hello?", channel="D2")
    headers, body = env.slack.signed_event(ev, event_id="EvSAME")
    r1 = await env.http.post("/slack/events", headers=headers, content=body)
    headers, body = env.slack.signed_event(ev, event_id="EvSAME", retry_num=1)
    r2 = await env.http.post("/slack/events", headers=headers, content=body)
    headers, body = env.slack.signed_event(ev, event_id="EvSAME", retry_num=2)
    r3 = await env.http.post("/slack/events", headers=headers, content=body)
    assert [r1.status_code, r2.status_code, r3.status_code] == [200, 200, 200]
    await env.wait(lambda: env.slack.messages(channel="D2"))
    await env.settle()
    assert len(env.slack.messages(channel="D2")) == 1
    assert len(env.llm.chat_requests()) == 1


async def test_own_and_other_bot_messages_edits_and_deletions_are_ignored(env: Env) -> None:
    s = env.slack
    events = [
        s.message_event("I am the bot", channel="D3", user="UBOT"),
        s.message_event("beep", channel="D3", user=None, bot_id="BOTHER", subtype="bot_message"),
        s.message_event("also me", channel="D3", user="UBOT", bot_id="BBOT"),
        s.message_event(
            "",
            channel="D3",
            subtype="message_changed",
            message={"text": "edited", "user": CUSTOMER},
        ),
        s.message_event("", channel="D3", subtype="message_deleted", deleted_ts="1.0"),
        s.message_event("joined", channel="D3", subtype="channel_join"),
    ]
    for ev in events:
        r = await env.post_event(ev)
        assert r.status_code == 200
    await env.settle()
    assert s.messages() == []
    assert env.llm.chat_requests() == []


async def test_bad_signature_is_rejected(env: Env) -> None:
    ev = env.slack.message_event("hi", channel="D4")
    headers, body = env.slack.signed_event(ev, secret="not-the-secret")
    r = await env.http.post("/slack/events", headers=headers, content=body)
    assert r.status_code == 401
    # tampering with a correctly signed body fails too
    headers, body = env.slack.signed_event(ev)
    r = await env.http.post("/slack/events", headers=headers, content=body.replace(b"hi", b"ho"))
    assert r.status_code == 401
    r = await env.http.post("/slack/events", content=body)  # unsigned
    assert r.status_code == 401
    await env.settle()
    assert env.slack.messages() == []


async def test_stale_timestamp_is_rejected(env: Env) -> None:
    ev = env.slack.message_event("hi", channel="D4")
    headers, body = env.slack.signed_event(ev, timestamp=int(time.time()) - 600)
    r = await env.http.post("/slack/events", headers=headers, content=body)
    assert r.status_code == 401
    await env.settle()
    assert env.slack.messages() == []


async def test_url_verification_challenge(env: Env) -> None:
    body = json.dumps({"type": "url_verification", "challenge": "abc123", "token": "x"}).encode()
    headers = {"Content-Type": "application/json", **env.slack.sign(body)}
    r = await env.http.post("/slack/events", headers=headers, content=body)
    assert r.status_code == 200 and "abc123" in r.text


async def _hand_off(env: Env, channel: str = "C7") -> tuple[dict, int, str]:
    """Customer asks for a human in a channel thread; returns root event, conv id, staff ts."""
    root = env.slack.mention_event(HUMAN_PLEASE, channel=channel)
    await env.post_event(root)
    [note] = await env.wait(lambda: env.slack.messages(channel=STAFF_CHANNEL))
    await env.settle()
    conv = await env.engine.find_conversation("slack", f"T0001:{channel}:{root['ts']}")
    assert conv is not None and conv.status == Status.WAITING
    assert conv.staff_ref == f"{STAFF_CHANNEL}:{note.ts}"
    return root, conv.id, note.ts


async def test_handoff_notifies_staff_channel_with_buttons(env: Env) -> None:
    root, conv_id, staff_ts = await _hand_off(env)
    [note] = env.slack.messages(channel=STAFF_CHANNEL)
    assert f"<@{CUSTOMER}>" in note.text and "waiting" in note.text
    assert note.blocks is not None
    actions = next(b for b in note.blocks if b["type"] == "actions")["elements"]
    # the staff actions the handoff table allows while waiting
    assert [a["action_id"] for a in actions] == [TAKE_OVER, HAND_BACK, CLOSE]
    assert all(a["value"] == str(conv_id) for a in actions)
    # the customer was told in their thread
    assert env.slack.messages(channel="C7", thread_ts=root["ts"])
    # while waiting, the customer's messages are relayed to the staff thread, not answered
    await env.post_event(
        env.slack.message_event(
            "hello? anyone?", channel="C7", channel_type="channel", thread_ts=root["ts"]
        )
    )
    await env.wait(lambda: env.slack.messages(channel=STAFF_CHANNEL, thread_ts=staff_ts))
    relayed = env.slack.messages(channel=STAFF_CHANNEL, thread_ts=staff_ts)[0]
    assert "hello? anyone?" in relayed.text
    assert env.llm.chat_requests() == []


async def test_take_over_button_silences_bot_until_hand_back(env: Env) -> None:
    root, conv_id, staff_ts = await _hand_off(env)
    customer_thread = ("C7", root["ts"])
    before = len(env.slack.messages(channel="C7"))

    r = await env.press(TAKE_OVER, str(conv_id), user=STAFF, message_ts=staff_ts)
    assert r.status_code == 200
    await env.wait(lambda: env.slack.messages(channel=STAFF_CHANNEL, thread_ts=staff_ts))
    await env.settle()
    conv = await env.engine.get_conversation(conv_id)
    assert conv is not None and conv.status == Status.HUMAN and conv.assignee == f"slack:{STAFF}"
    [note] = env.slack.messages(channel=STAFF_CHANNEL, top_level=True)
    assert [a["action_id"] for a in note.blocks[-1]["elements"]] == [HAND_BACK, CLOSE]
    assert "took over" in texts(env.slack, STAFF_CHANNEL, staff_ts)[-1]

    # the bot stays silent in the thread while a human owns it
    await env.post_event(
        env.slack.message_event(
            "still there?", channel="C7", channel_type="channel", thread_ts=root["ts"]
        )
    )
    await env.wait(
        lambda: any("still there?" in t for t in texts(env.slack, STAFF_CHANNEL, staff_ts))
    )
    await env.settle()
    assert len(env.slack.messages(channel=customer_thread[0])) == before
    assert env.llm.chat_requests() == []

    r = await env.press(HAND_BACK, str(conv_id), user=STAFF, message_ts=staff_ts)
    assert r.status_code == 200
    await env.wait(lambda: len(env.slack.messages(channel="C7")) == before + 1)  # "here again"
    await env.settle()
    conv = await env.engine.get_conversation(conv_id)
    assert conv is not None and conv.status == Status.BOT

    await env.post_event(
        env.slack.message_event(
            "what about refunds?", channel="C7", channel_type="channel", thread_ts=root["ts"]
        )
    )
    await env.wait(lambda: any("what about refunds?" in t for t in texts(env.slack, "C7")))
    assert len(env.llm.chat_requests()) == 1


async def test_staff_reply_in_customer_thread_takes_it_over(env: Env) -> None:
    root = env.slack.mention_event("where is my order?", channel="C8")
    await env.post_event(root)
    await env.wait(lambda: env.slack.messages(channel="C8"))
    await env.settle()
    key = f"T0001:C8:{root['ts']}"

    staff = env.slack.message_event(
        "Hi, I'm looking into it",
        channel="C8",
        channel_type="channel",
        user=STAFF,
        thread_ts=root["ts"],
    )
    await env.post_event(staff)
    await env.post_event(staff, retry_num=1)  # a retry must not store it twice
    await env.settle()
    conv = await env.engine.find_conversation("slack", key)
    assert conv is not None and conv.status == Status.HUMAN
    assert [t.role for t in conv.recent].count("staff") == 1

    await env.post_event(
        env.slack.message_event(
            "thanks!", channel="C8", channel_type="channel", thread_ts=root["ts"]
        )
    )
    await env.settle()
    assert len(env.slack.messages(channel="C8")) == 1  # only the first bot answer
    assert len(env.llm.chat_requests()) == 1


async def test_non_staff_cannot_press_staff_buttons(env: Env, caplog) -> None:
    _, conv_id, staff_ts = await _hand_off(env)
    for action in (TAKE_OVER, CLOSE):
        r = await env.press(action, str(conv_id), user="UINTRUDER", message_ts=staff_ts)
        assert r.status_code == 200
    await env.wait(lambda: len(env.slack.messages(channel=STAFF_CHANNEL, ephemeral=True)) == 2)
    await env.settle()
    notices = env.slack.messages(channel=STAFF_CHANNEL, ephemeral=True)
    assert {n.ephemeral_to for n in notices} == {"UINTRUDER"}
    assert all(n.text == NOT_STAFF for n in notices)
    conv = await env.engine.get_conversation(conv_id)
    assert conv is not None and conv.status == Status.WAITING
    assert any("non-staff" in r.getMessage() for r in caplog.records)


async def test_close_button_and_losing_race(env: Env) -> None:
    _, conv_id, staff_ts = await _hand_off(env)
    await env.press(CLOSE, str(conv_id), user=STAFF, message_ts=staff_ts)
    await env.wait(lambda: any("closed" in t for t in texts(env.slack, STAFF_CHANNEL, staff_ts)))
    await env.settle()
    conv = await env.engine.get_conversation(conv_id)
    assert conv is not None and conv.status == Status.CLOSED
    [note] = env.slack.messages(channel=STAFF_CHANNEL, top_level=True)
    assert not any(b["type"] == "actions" for b in note.blocks)
    # a stale Take over button on a closed conversation changes nothing and says so
    await env.press(TAKE_OVER, str(conv_id), user=STAFF, message_ts=staff_ts)
    [notice] = await env.wait(lambda: env.slack.messages(channel=STAFF_CHANNEL, ephemeral=True))
    assert notice.ephemeral_to == STAFF and "closed" in notice.text


async def test_429_during_a_reply_is_retried_after_retry_after(env: Env) -> None:
    env.slack.rate_limit("chat.postMessage", retry_after=1)
    env.slack.rate_limit("chat.update", retry_after=1)
    await env.post_event(env.slack.message_event("rate limited?", channel="D5"))
    await env.wait(
        lambda: any("rate limited?" in t and "…" not in t for t in texts(env.slack, "D5")),
        within=10,
    )
    statuses = [c.status for c in env.slack.calls("chat.postMessage")]
    assert statuses[0] == 429 and 200 in statuses


async def test_over_long_reply_is_split(env: Env) -> None:
    env.llm.responder = lambda messages: "\n\n".join(
        f"**Part {i}.** " + "lorem ipsum dolor sit amet " * 20 for i in range(40)
    )
    env.slack.max_text_chars = 3000  # lower than our own 3,900 split size: msg_too_long
    await env.post_event(env.slack.message_event("tell me everything", channel="D6"))
    await env.wait(
        lambda: any("Part 39" in t and "…" not in t[-2:] for t in texts(env.slack, "D6")), within=10
    )
    msgs = env.slack.messages(channel="D6")
    assert len(msgs) >= 8
    assert all(len(m.text) <= 3000 for m in msgs)
    assert "*Part 0.*" in msgs[0].text
    joined = " ".join(m.text for m in msgs)
    assert all(f"*Part {i}.*" in joined for i in range(40))


async def test_streaming_updates_the_placeholder(env: Env) -> None:
    env.llm.responder = lambda messages: " ".join(f"word{i}" for i in range(30))
    env.llm.delay = 0.0
    await env.post_event(env.slack.message_event("stream please", channel="D7"))
    await env.wait(lambda: any(t.endswith("word29") for t in texts(env.slack, "D7")))
    [msg] = env.slack.messages(channel="D7")
    assert msg.edits[0] == "…"
    assert len(env.slack.calls("chat.update")) >= 1
    assert msg.text == " ".join(f"word{i}" for i in range(30))


async def test_offline_faq_answer_without_llm(tmp_path: Path) -> None:
    kdir = tmp_path / "knowledge"
    kdir.mkdir()
    (kdir / "reset.md").write_text(
        "---\nquestion: How do I reset my password?\n---\n"
        "Open **Settings** and follow [the guide](https://help.example.com/reset).\n"
    )
    with FakeSlack() as slack:
        settings = make_settings(slack, None, tmp_path, knowledge_dir=kdir)
        engine = await Engine.open(settings)
        adapter = SlackAdapter(engine, settings, min_interval=0.0)
        app = create_app(engine, [adapter])
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                headers, body = slack.signed_event(
                    slack.message_event("how do I reset my password", channel="D9")
                )
                r = await http.post("/slack/events", headers=headers, content=body)
                assert r.status_code == 200
                [msg] = await slack.async_wait_for(lambda: slack.messages(channel="D9"))
                assert msg.text == (
                    "Open *Settings* and follow <https://help.example.com/reset|the guide>."
                )
                await adapter.drain()
        finally:
            await adapter.stop()
            await engine.aclose()


async def test_staff_top_level_post_in_support_channel_is_not_answered(env: Env) -> None:
    await env.post_event(
        env.slack.message_event(
            "Maintenance tonight", channel="CSUPPORT", channel_type="channel", user=STAFF
        )
    )
    await env.settle()
    assert env.slack.messages() == []


async def test_no_secret_reaches_the_logs(env: Env, caplog) -> None:
    caplog.set_level("DEBUG")
    env.slack.rate_limit("chat.postMessage", retry_after=0)
    env.slack.fail("chat.update", "internal_error", times=5)
    await env.post_event(env.slack.message_event("log me", channel="D8"))
    headers, body = env.slack.signed_event(
        env.slack.message_event("x", channel="D8"), secret="wrong"
    )
    await env.http.post("/slack/events", headers=headers, content=body)
    await env.wait(lambda: env.slack.calls("chat.update"))
    await env.settle()
    logged = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert "rate limited" in logged  # the logs did capture the interesting part
    for secret in (env.slack.bot_token, env.slack.signing_secret, "sk-test-key"):
        assert secret not in logged


async def test_llm_cut_mid_stream_still_tells_the_customer(env: Env) -> None:
    env.llm.responder = lambda messages: " ".join(f"w{i}" for i in range(20))
    env.llm.fail_next("cut", after=3)
    await env.post_event(env.slack.message_event("break please", channel="D10"))
    await env.wait(lambda: len(env.slack.messages(channel="D10")) >= 2)
    await env.settle()
    msgs = texts(env.slack, "D10")
    assert msgs[0].startswith("w0")  # what streamed before the cut stays visible
    assert "technical problem" in msgs[-1]  # then the honest apology


def _labels(note) -> list[str]:
    actions = next(b for b in note.blocks if b["type"] == "actions")["elements"]
    return [a["text"]["text"] for a in actions]


async def test_staff_buttons_speak_the_staff_language(tmp_path: Path) -> None:
    """The buttons' labels come from prompts/messages/<SUPPORTBOT_STAFF_LANGUAGE>.yaml."""
    from supportbot.prompts import PromptLibrary

    words = PromptLibrary()
    keys = ("staff_take_over", "staff_hand_back", "staff_close")
    for language in ("en", "de"):
        with FakeSlack() as slack, FakeLLM() as llm:
            settings = make_settings(slack, llm, tmp_path / language, staff_language=language)
            engine = await Engine.open(settings)
            adapter = SlackAdapter(engine, settings, min_interval=0.0)
            server = uvicorn.Server(uvicorn.Config(create_app(engine, [adapter]),
                                                   host="127.0.0.1", port=0, log_config=None,
                                                   lifespan="on"))
            task = asyncio.create_task(server.serve())
            try:
                await FakeSlack.async_wait_for(lambda s=server: s.started, within=10)
                port = server.servers[0].sockets[0].getsockname()[1]
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                    # one channel per language: on the PostgreSQL pass both rounds share this
                    # test's database, and two fakes started in the same second give the
                    # customer's message the same ts, i.e. the same message (a duplicate)
                    channel = {"en": "C7", "de": "C8"}[language]
                    await _hand_off(Env(slack, llm, engine, adapter, http), channel=channel)
            finally:
                server.should_exit = True
                await asyncio.wait_for(task, 10)
                await engine.aclose()
            [note] = slack.messages(channel=STAFF_CHANNEL, top_level=True)
            assert _labels(note) == [words.message(key, language) for key in keys]
    assert words.message("staff_take_over", "en") == "Take over"
    assert words.message("staff_take_over", "de") != "Take over"
