"""Feedback buttons in Slack: the bot's answer gets 👍/👎 buttons, and signed interaction
payloads posted to the real ``/slack/events`` endpoint (uvicorn on loopback) store the vote."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from test_slack_adapter import Env, running

from supportbot.adapters.slack.feedback import BLOCK_ID, HELPFUL, UNHELPFUL
from supportbot.storage.reports import feedback_for

CUSTOMER, OTHER, DM = "UCUSTOMER", "UOTHER", "D1"


@pytest.fixture(params=[True, False], ids=["streaming", "whole"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    async with running(tmp_path, llm_stream=request.param) as e:
        yield e


async def press(env: Env, action_id: str, value: str, *, user: str, message_ts: str,
                secret: str | None = None) -> httpx.Response:
    """A customer's button press in the DM, signed with ``secret`` (the app's by default)."""
    payload = env.slack.block_action(action_id, value, user=user, channel=DM,
                                     message_ts=message_ts)
    headers, body = env.slack.signed_interaction(payload, secret=secret)
    response = await env.http.post("/slack/events", headers=headers, content=body)
    await env.settle()
    return response


def ephemerals(env: Env, user: str) -> list[str]:
    return [m.text for m in env.slack.messages(channel=DM, ephemeral=True)
            if m.ephemeral_to == user]


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

    r = await press(env, HELPFUL, str(message_id), user=CUSTOMER, message_ts=answer.ts)
    assert r.status_code == 200
    vote = await feedback_for(env.engine.store, message_id)
    assert vote is not None and vote.helpful is True and vote.actor == f"slack:{CUSTOMER}"
    assert ephemerals(env, CUSTOMER) == ["Thanks for the feedback!"]

    await press(env, UNHELPFUL, str(message_id), user=CUSTOMER, message_ts=answer.ts)
    vote = await feedback_for(env.engine.store, message_id)
    assert vote.helpful is False  # the later vote replaced the first


async def test_only_the_customer_can_vote_and_signatures_are_checked(env: Env) -> None:
    answer = await ask(env, "How long do refunds take?")
    message_id = buttons_of(answer)[HELPFUL]

    await press(env, UNHELPFUL, message_id, user=OTHER, message_ts=answer.ts)
    assert await feedback_for(env.engine.store, int(message_id)) is None
    assert ephemerals(env, OTHER) == ["Only the person who asked can rate this answer."]

    r = await press(env, HELPFUL, message_id, user=CUSTOMER, message_ts=answer.ts,
                        secret="not-the-secret")
    assert r.status_code == 401
    assert await feedback_for(env.engine.store, int(message_id)) is None

    await press(env, HELPFUL, "not-a-number", user=CUSTOMER, message_ts=answer.ts)
    await press(env, HELPFUL, message_id, user=CUSTOMER, message_ts=answer.ts)
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
