"""The Slack HTTP ack comes right after the message is stored and never waits for the answer:
signed events into the real Starlette app (uvicorn on loopback) while the FakeLLM is held, so no
reply can exist until the test lets go; a message that cannot be stored gets 503, not 200."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from test_slack_adapter import make_settings, serving

from supportbot.adapters.slack import SlackAdapter
from supportbot.config import Settings
from supportbot.engine import Engine
from supportbot.server import create_app
from supportbot.testing.fake_llm import FakeLLM, Gate
from supportbot.testing.fake_slack import FakeSlack
from supportbot.testing.outage import store_outage, store_stall

ROOT = Path(__file__).resolve().parents[1]


class Env:
    def __init__(self, slack: FakeSlack, llm: FakeLLM, gate: Gate, adapter: SlackAdapter,
                 http: httpx.AsyncClient) -> None:
        self.slack, self.llm, self.gate, self.adapter, self.http = slack, llm, gate, adapter, http

    def event(self, channel: str) -> dict[str, Any]:
        return self.slack.message_event(QUESTION, channel=channel, user=f"U{channel}")

    async def post_event(self, event: dict[str, Any], **kw: Any) -> httpx.Response:
        headers, body = self.slack.signed_event(event, **kw)
        # if the ack waited for the held engine this would time out (the gate holds for 10 s)
        return await self.http.post("/slack/events", headers=headers, content=body, timeout=5)

    def replies(self, channel: str) -> list[str]:
        return [m.text for m in self.slack.messages(channel=channel)]

    async def wait(self, predicate: Callable[[], Any], within: float = 15.0) -> Any:
        return await self.slack.async_wait_for(predicate, within=within)


def env_fixture(**adapter_kw: Any):
    @pytest.fixture
    async def env(tmp_path: Path) -> AsyncIterator[Env]:
        gate = Gate()
        with FakeSlack() as slack, FakeLLM(responder=gate) as llm:
            settings = Settings(
                _env_file=None, data_dir=tmp_path,
                prompts_dir=ROOT / "supportbot/defaults/prompts",
                knowledge_dir=ROOT / "supportbot/defaults/knowledge",
                slack_bot_token=slack.bot_token,
                slack_signing_secret=slack.signing_secret, slack_api_url=slack.api_url,
                llm_base_url=llm.url, llm_api_key="sk-test", llm_max_retries=0,
                llm_stream=False,
            )  # fmt: skip
            engine = await Engine.open(settings)
            adapter = SlackAdapter(engine, settings, min_interval=0.0, **adapter_kw)
            server = uvicorn.Server(uvicorn.Config(create_app(engine, [adapter]), port=0,
                                                   host="127.0.0.1", log_config=None))
            task = asyncio.create_task(server.serve())
            try:
                await FakeSlack.async_wait_for(lambda: server.started, within=10)
                port = server.servers[0].sockets[0].getsockname()[1]
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                    yield Env(slack, llm, gate, adapter, http)
            finally:
                gate.opened.set()
                server.should_exit = True
                await asyncio.wait_for(task, 15)
                await engine.aclose()

    return env


env = env_fixture()
small_backlog = env_fixture(backlog=1)

# "How do refunds work?" style questions are in the FAQ; these are not, so the LLM answers.
QUESTION = "tell me something about zebras"


async def test_ack_arrives_before_the_engine_finishes(env: Env) -> None:
    assert env.slack.calls("auth.test")  # warmed at startup: no ack waits for it
    event = env.event("D1")
    r = await env.post_event(event, event_id="Ev1")
    assert r.status_code == 200  # acknowledged ...
    await env.wait(lambda: env.llm.chat_requests())  # ... while the engine is mid-answer
    assert env.replies("D1") == []

    # Slack redelivers (as it would after a slow ack): acknowledged, and still one answer.
    again = await env.post_event(event, event_id="Ev1", retry_num=1)
    assert again.status_code == 200
    env.gate.opened.set()
    await env.wait(lambda: env.replies("D1"))
    await env.adapter.drain(within=5)
    assert env.replies("D1") == [f"Answer: {QUESTION}"]
    assert len(env.llm.chat_requests()) == 1


async def test_same_message_redelivered_with_new_event_ids_is_answered_once(env: Env) -> None:
    event = env.event("D2")
    acks = [await env.post_event(event, event_id=f"Ev{i}") for i in range(3)]
    assert [a.status_code for a in acks] == [200, 200, 200]
    env.gate.opened.set()
    await env.wait(lambda: env.replies("D2"))
    await env.adapter.drain(within=5)
    assert env.replies("D2") == [f"Answer: {QUESTION}"]


async def test_a_full_backlog_sheds_load_and_the_refused_event_is_taken_on_retry(
    small_backlog: Env,
) -> None:
    env = small_backlog
    first, second = env.event("D1"), env.event("D2")
    assert (await env.post_event(first)).status_code == 200
    await env.wait(lambda: env.llm.chat_requests())  # one answer in progress (held)
    refused = await env.post_event(second, event_id="EvSecond")
    assert refused.status_code == 503  # Slack retries it later; nothing is lost
    assert len(env.llm.chat_requests()) == 1

    env.gate.opened.set()
    await env.wait(lambda: env.replies("D1"))
    await env.adapter.drain(within=5)
    assert (await env.post_event(second, event_id="EvSecond", retry_num=1)).status_code == 200
    await env.wait(lambda: env.replies("D2"))
    assert [env.replies(c) for c in ("D1", "D2")] == [[f"Answer: {QUESTION}"]] * 2


async def test_an_event_that_cannot_be_stored_gets_503_and_its_retry_is_answered(
    env: Env,
) -> None:
    event = env.event("D5")
    async with store_outage(env.adapter.engine.store):
        refused = await env.post_event(event, event_id="EvDown")
    assert refused.status_code == 503  # never 200 for something not stored: Slack retries
    env.gate.opened.set()
    retried = await env.post_event(event, event_id="EvDown", retry_num=1)
    assert retried.status_code == 200
    await env.wait(lambda: env.replies("D5"))
    await env.adapter.drain(within=5)
    assert env.replies("D5") == [f"Answer: {QUESTION}"]
    assert len(env.llm.chat_requests()) == 1


async def test_the_ack_waits_for_the_store_not_for_slack_or_the_llm(env: Env) -> None:
    env.slack.slow("users.info", 3.0)  # looked up after the store, while the answer is made
    r = await env.post_event(env.event("D6"), event_id="EvSlowName")
    assert r.status_code == 200
    conv = await env.adapter.engine.find_conversation("slack", f"{env.slack.team_id}:D6")
    assert conv is not None and [t.text for t in conv.recent] == [QUESTION]
    assert env.llm.chat_requests() == []  # the held model has not even been asked yet


async def test_a_store_slower_than_the_ack_budget_gets_503_and_is_answered_once(
    env: Env,
) -> None:
    event = env.event("D9")
    async with store_stall(env.adapter.engine.store):
        slow = await env.post_event(event, event_id="EvStall")
    assert slow.status_code == 503  # within Slack's 3 s, not a late 200
    env.gate.opened.set()
    retried = await env.post_event(event, event_id="EvStall", retry_num=1)
    assert retried.status_code == 200
    await env.wait(lambda: env.replies("D9"))
    await env.adapter.drain(within=5)
    assert env.replies("D9") == [f"Answer: {QUESTION}"]
    assert len(env.llm.chat_requests()) == 1


# --- auth.test: fetched once at start, through Bolt's public ``authorize=`` hook ----------------


@contextlib.asynccontextmanager
async def served(slack: FakeSlack, tmp_path: Path) -> AsyncIterator[Env]:
    """The bot behind uvicorn with faults already set on ``slack`` (the ``env`` fixture starts
    before a test could set any)."""
    gate = Gate()
    gate.opened.set()  # these tests are about the ack, not the answer's timing
    with FakeLLM(responder=gate) as llm:
        settings = make_settings(slack, llm, tmp_path, llm_stream=False)
        async with serving(slack, llm, settings) as e:
            yield Env(slack, llm, gate, e.adapter, e.http)


async def test_concurrent_first_events_share_one_auth_test_after_a_failed_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with FakeSlack() as slack:
        slack.fail("auth.test", "internal_error")  # the call at start fails ...
        async with served(slack, tmp_path) as env:
            assert len(slack.calls("auth.test")) == 1
            slack.slow("auth.test", 0.3)  # ... and the retry is slow enough to overlap
            acks = await asyncio.gather(*(env.post_event(env.event(f"D{i}"), event_id=f"Ev{i}")
                                          for i in range(4)))
            assert [a.status_code for a in acks] == [200] * 4
            assert len(slack.calls("auth.test")) == 2  # one retry, shared by the four events
            await env.wait(lambda: all(env.replies(f"D{i}") for i in range(4)))
            more = await env.post_event(env.event("D9"), event_id="Ev9")
            assert more.status_code == 200
            assert len(slack.calls("auth.test")) == 2  # cached from then on
    logged = [r.getMessage() for r in caplog.records]
    assert sum("auth.test failed: internal_error" in m for m in logged) == 1
    assert not [m for m in logged if "ignored" in m]  # Bolt's "token will be ignored" is ours


async def test_an_event_that_cannot_be_authorized_gets_503_and_its_retry_is_answered(
    tmp_path: Path,
) -> None:
    with FakeSlack() as slack:
        slack.fail("auth.test", "internal_error", times=2)  # at start and on the first event
        async with served(slack, tmp_path) as env:
            event = env.event("D3")
            refused = await env.post_event(event, event_id="EvAuth")
            # not Bolt's "200 + apology" for a failed auth.test: that would lose the message
            assert refused.status_code == 503
            assert await env.adapter.engine.find_conversation(
                "slack", f"{slack.team_id}:D3") is None
            retried = await env.post_event(event, event_id="EvAuth", retry_num=1)
            assert retried.status_code == 200
            await env.wait(lambda: env.replies("D3"))
            assert env.replies("D3") == [f"Answer: {QUESTION}"]
            assert len(slack.calls("auth.test")) == 3


async def test_an_auth_test_slower_than_the_ack_budget_gets_503_not_a_late_ack(
    tmp_path: Path,
) -> None:
    with FakeSlack() as slack:
        slack.fail("auth.test", "internal_error")
        async with served(slack, tmp_path) as env:
            slack.slow("auth.test", 1.5)
            started = time.monotonic()
            refused = await env.post_event(env.event("D4"), event_id="EvSlowAuth")
            assert refused.status_code == 503
            assert time.monotonic() - started < 1.4  # Slack waits 3 s: leave room for the store
            # the call in flight is not abandoned: once it answers, events are authorized
            await env.wait(lambda: env.adapter.auth.response is not None)
            ok = await env.post_event(env.event("D4"), event_id="EvSlowAuth", retry_num=1)
            assert ok.status_code == 200
            assert len(slack.calls("auth.test")) == 2
