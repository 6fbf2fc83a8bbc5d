"""Feedback buttons in Slack: the bot's answer gets 👍/👎 buttons, and signed interaction
payloads posted to the real ``/slack/events`` endpoint (uvicorn on loopback) store the vote."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from supportbot.adapters.slack import SlackAdapter
from supportbot.adapters.slack.feedback import BLOCK_ID, HELPFUL, UNHELPFUL
from supportbot.config import Settings
from supportbot.engine import Engine
from supportbot.server import create_app
from supportbot.storage.reports import feedback_for
from supportbot.testing.fake_llm import FakeLLM
from supportbot.testing.fake_slack import FakeSlack

ROOT = Path(__file__).resolve().parents[1]
CUSTOMER, OTHER, DM = "UCUSTOMER", "UOTHER", "D1"


class Env:
    def __init__(self, slack: FakeSlack, engine: Engine, adapter: SlackAdapter,
                 http: httpx.AsyncClient) -> None:
        self.slack, self.engine, self.adapter, self.http = slack, engine, adapter, http

    async def settle(self) -> None:
        for _ in range(3):
            await asyncio.sleep(0.05)
            await self.adapter.drain(within=5)

    async def press(self, action_id: str, value: str, *, user: str, message_ts: str,
                    secret: str | None = None) -> httpx.Response:
        payload = self.slack.block_action(action_id, value, user=user, channel=DM,
                                          message_ts=message_ts)
        headers, body = self.slack.signed_interaction(payload, secret=secret)
        response = await self.http.post("/slack/events", headers=headers, content=body)
        await self.settle()
        return response

    def ephemerals(self, user: str) -> list[str]:
        return [m.text for m in self.slack.messages(channel=DM, ephemeral=True)
                if m.ephemeral_to == user]


@pytest.fixture(params=[True, False], ids=["streaming", "whole"])
async def env(request, tmp_path: Path) -> AsyncIterator[Env]:
    with FakeSlack() as slack, FakeLLM() as llm:
        settings = Settings(
            _env_file=None, data_dir=tmp_path, prompts_dir=ROOT / "supportbot/defaults/prompts",
            knowledge_dir=ROOT / "supportbot/defaults/knowledge", slack_bot_token=slack.bot_token,
            slack_signing_secret=slack.signing_secret, slack_api_url=slack.api_url,
            llm_base_url=llm.url, llm_api_key="sk-test", llm_max_retries=0,
            llm_stream=request.param,
        )
        engine = await Engine.open(settings)
        adapter = SlackAdapter(engine, settings, min_interval=0.0, stream_interval=0.05)
        server = uvicorn.Server(uvicorn.Config(create_app(engine, [adapter]), host="127.0.0.1",
                                               port=0, log_config=None, lifespan="on"))
        task = asyncio.create_task(server.serve())
        try:
            await FakeSlack.async_wait_for(lambda: server.started, within=10)
            port = server.servers[0].sockets[0].getsockname()[1]
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                yield Env(slack, engine, adapter, http)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)
            await engine.aclose()


def buttons_of(message) -> dict[str, str]:
    blocks = message.blocks or []
    [actions] = [b for b in blocks if b.get("block_id") == BLOCK_ID]
    return {e["action_id"]: e["value"] for e in actions["elements"]}


async def ask(env: Env, text: str):
    headers, body = env.slack.signed_event(env.slack.message_event(text, channel=DM))
    assert (await env.http.post("/slack/events", headers=headers, content=body)).status_code == 200
    await env.slack.async_wait_for(
        lambda: any(m.blocks for m in env.slack.messages(channel=DM)), within=5
    )
    await env.settle()
    [answer] = env.slack.messages(channel=DM)
    return answer


async def test_answer_gets_buttons_and_votes_are_stored(env: Env) -> None:
    answer = await ask(env, "How long do refunds take?")
    assert "How long do refunds take?" in answer.text  # the answer text is still shown
    section = answer.blocks[0]
    assert section["type"] == "section" and section["text"]["text"] == answer.text
    buttons = buttons_of(answer)
    assert set(buttons) == {HELPFUL, UNHELPFUL}
    message_id = int(buttons[HELPFUL])

    r = await env.press(HELPFUL, str(message_id), user=CUSTOMER, message_ts=answer.ts)
    assert r.status_code == 200
    vote = await feedback_for(env.engine.store, message_id)
    assert vote is not None and vote.helpful is True and vote.actor == f"slack:{CUSTOMER}"
    assert env.ephemerals(CUSTOMER) == ["Thanks for the feedback!"]

    await env.press(UNHELPFUL, str(message_id), user=CUSTOMER, message_ts=answer.ts)
    vote = await feedback_for(env.engine.store, message_id)
    assert vote.helpful is False  # the later vote replaced the first


async def test_only_the_customer_can_vote_and_signatures_are_checked(env: Env) -> None:
    answer = await ask(env, "How long do refunds take?")
    message_id = buttons_of(answer)[HELPFUL]

    await env.press(UNHELPFUL, message_id, user=OTHER, message_ts=answer.ts)
    assert await feedback_for(env.engine.store, int(message_id)) is None
    assert env.ephemerals(OTHER) == ["Only the person who asked can rate this answer."]

    r = await env.press(HELPFUL, message_id, user=CUSTOMER, message_ts=answer.ts,
                        secret="not-the-secret")
    assert r.status_code == 401
    assert await feedback_for(env.engine.store, int(message_id)) is None

    await env.press(HELPFUL, "not-a-number", user=CUSTOMER, message_ts=answer.ts)
    await env.press(HELPFUL, message_id, user=CUSTOMER, message_ts=answer.ts)
    assert (await feedback_for(env.engine.store, int(message_id))).helpful is True


async def test_a_whole_answer_needs_no_edit_for_its_buttons(env: Env) -> None:
    """Sent whole, the answer goes out with its buttons: one Web API write per answer. A
    streamed answer gets them in a last edit (its stored id exists only once it is done)."""
    answer = await ask(env, "How long do refunds take?")
    writes = [c for c in env.slack.calls() if c.method.startswith("chat.")]
    with_buttons = [c for c in writes if c.params.get("blocks")]
    if env.engine.settings.llm_stream:
        assert [c.method for c in with_buttons] == ["chat.update"]
    else:
        assert [c.method for c in writes] == ["chat.postMessage"] == [
            c.method for c in with_buttons
        ]
    assert with_buttons[0].params["channel"] == DM and buttons_of(answer)
