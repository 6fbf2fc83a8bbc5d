"""Socket Mode: the real AsyncSocketModeHandler connects to FakeSlack's WebSocket, envelopes are
acknowledged (only once their message is stored) and dispatched through Bolt to the engine; plus
configuration checks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from supportbot.adapters.slack import SlackAdapter
from supportbot.adapters.slack.desk import NOT_STAFF, TAKE_OVER
from supportbot.config import Settings
from supportbot.engine import Engine
from supportbot.testing.fake_llm import FakeLLM
from supportbot.testing.fake_slack import FakeSlack
from supportbot.testing.outage import store_outage

ROOT = Path(__file__).resolve().parents[1]


def settings_for(slack: FakeSlack, llm: FakeLLM, tmp_path: Path, **kw: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "prompts_dir": ROOT / "supportbot/defaults/prompts",
        "knowledge_dir": ROOT / "supportbot/defaults/knowledge",
        "llm_base_url": llm.url,
        "llm_api_key": "sk-test-key",
        "slack_bot_token": slack.bot_token,
        "slack_app_token": slack.app_token,
        "slack_api_url": slack.api_url,
        "slack_staff_channel": "CSTAFF",
        "slack_staff_user_ids": ["USTAFF"],
    }
    values.update(kw)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[FakeSlack, FakeLLM, SlackAdapter]]:
    with FakeSlack() as slack, FakeLLM() as llm:
        settings = settings_for(slack, llm, tmp_path)
        engine = await Engine.open(settings)
        adapter = SlackAdapter(engine, settings, min_interval=0.0, stream_interval=0.05)
        try:
            await asyncio.wait_for(adapter.start(), 10)
            await slack.async_wait_for(lambda: slack.wait_socket_connected(0), within=5)
            yield slack, llm, adapter
        finally:
            await adapter.stop()
            await engine.aclose()


async def test_socket_mode_has_no_http_route_and_uses_app_token(running) -> None:
    slack, _, adapter = running
    assert adapter.routes() == []
    [call] = slack.calls("apps.connections.open")
    assert call.authorized  # the xapp- token, not the bot token


async def test_socket_mode_event_is_acked_and_answered(running) -> None:
    slack, llm, adapter = running
    event = slack.message_event("hello over the socket", channel="D1")
    ack = await slack.async_socket_send(slack.event_callback(event))
    assert "envelope_id" in ack
    [msg] = await slack.async_wait_for(
        lambda: [m for m in slack.messages(channel="D1") if "…" not in m.text]
    )
    assert "hello over the socket" in msg.text
    # a redelivery of the same envelope payload (Slack retries) is acked but not answered
    await slack.async_socket_send(slack.event_callback(event, event_id="EvAgain"))
    await asyncio.sleep(0.1)
    await adapter.drain(within=5)
    assert len(slack.messages(channel="D1")) == 1
    assert len(llm.chat_requests()) == 1


async def test_socket_mode_button_from_non_staff_is_refused(running) -> None:
    slack, _, _ = running
    payload = slack.block_action(
        TAKE_OVER, "1", user="UNOBODY", channel="CSTAFF", message_ts="1.000001"
    )
    ack = await slack.async_socket_send(payload, envelope_type="interactive")
    assert "envelope_id" in ack
    [notice] = await slack.async_wait_for(lambda: slack.messages(channel="CSTAFF", ephemeral=True))
    assert notice.ephemeral_to == "UNOBODY" and notice.text == NOT_STAFF


async def test_http_mode_requires_a_signing_secret(tmp_path: Path) -> None:
    with FakeSlack() as slack, FakeLLM() as llm:
        settings = settings_for(slack, llm, tmp_path, slack_app_token=None)
        engine = await Engine.open(settings)
        try:
            with pytest.raises(ValueError, match="SIGNING_SECRET") as info:
                SlackAdapter(engine, settings)
            assert slack.bot_token not in str(info.value)
            ok = settings_for(
                slack,
                llm,
                tmp_path,
                slack_app_token=None,
                slack_signing_secret=slack.signing_secret,
            )
            routes = SlackAdapter(engine, ok).routes()
            assert [r.path for r in routes] == ["/slack/events"]  # type: ignore[attr-defined]
        finally:
            await engine.aclose()


async def test_an_envelope_is_acked_only_after_its_message_is_stored(running) -> None:
    slack, _, adapter = running
    slack.slow("users.info", 2.0)  # the display name is looked up after the store, not before
    event = slack.message_event("stored before the ack", channel="D7")
    ack = await slack.async_socket_send(slack.event_callback(event))
    assert "envelope_id" in ack
    conv = await adapter.engine.find_conversation("slack", f"{slack.team_id}:D7")
    assert conv is not None and [t.text for t in conv.recent] == ["stored before the ack"]
    await slack.async_wait_for(
        lambda: [m for m in slack.messages(channel="D7") if "…" not in m.text], within=10
    )


async def test_an_envelope_that_cannot_be_stored_is_not_acked(running) -> None:
    slack, llm, adapter = running
    event = slack.event_callback(slack.message_event("database is down", channel="D8"))
    async with store_outage(adapter.engine.store):
        with pytest.raises(TimeoutError):  # no ack: Slack delivers the envelope again
            await slack.async_socket_send(event, within=1.5)
    assert await adapter.engine.find_conversation("slack", f"{slack.team_id}:D8") is None
    ack = await slack.async_socket_send(event)  # the redelivery, once the database is back
    assert "envelope_id" in ack
    [msg] = await slack.async_wait_for(
        lambda: [m for m in slack.messages(channel="D8") if "…" not in m.text], within=10
    )
    assert "database is down" in msg.text
    await adapter.drain(within=5)
    assert len(llm.chat_requests()) == 1
