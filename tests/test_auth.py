"""Authentication at every door: Slack signatures, the Telegram webhook secret, staff-only
buttons and commands, and ``SUPPORTBOT_STAFF_CLI_USERS`` for the CLI on a shared database.

Also home of :class:`Bot`, the in-process server (Slack HTTP + Telegram webhook on one uvicorn)
the other security tests drive.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from click.testing import CliRunner

from supportbot.adapters.slack import SlackAdapter
from supportbot.adapters.slack.desk import CLOSE, NOT_STAFF, TAKE_OVER
from supportbot.adapters.telegram import TelegramAdapter
from supportbot.cli import cli
from supportbot.config import Settings
from supportbot.engine import Engine, IncomingMessage, Status
from supportbot.server import create_app
from supportbot.testing.fake_llm import FakeLLM
from supportbot.testing.fake_slack import FakeSlack
from supportbot.testing.fake_telegram import FakeTelegram

REPO = Path(__file__).resolve().parents[1]
STAFF, STAFF_CHANNEL = "USTAFF", "CSTAFF"
TG_STAFF_CHAT, TG_STAFFER = -1009999, 900
WEBHOOK_SECRET = "tg-webhook-secret-value"
TG_HEADER = "X-Telegram-Bot-Api-Secret-Token"


@dataclass
class Bot:
    slack: FakeSlack
    tg: FakeTelegram
    llm: FakeLLM
    engine: Engine
    slack_adapter: SlackAdapter
    http: httpx.AsyncClient
    settings: Settings

    async def slack_event(self, event: dict[str, Any], **kw: Any) -> httpx.Response:
        headers, body = self.slack.signed_event(event, **kw)
        return await self.http.post("/slack/events", headers=headers, content=body)

    async def slack_raw(self, body: bytes, content_type: str = "application/json",
                        **sign: Any) -> httpx.Response:
        headers = {"Content-Type": content_type, **self.slack.sign(body, **sign)}
        return await self.http.post("/slack/events", headers=headers, content=body)

    async def telegram(self, update: Any, secret: str | None = WEBHOOK_SECRET,
                       raw: bytes | None = None) -> httpx.Response:
        headers = {TG_HEADER: secret} if secret is not None else {}
        if raw is not None:
            return await self.http.post("/telegram/webhook", content=raw, headers=headers)
        return await self.http.post("/telegram/webhook", json=update, headers=headers)

    async def settle(self) -> None:
        for _ in range(3):
            await asyncio.sleep(0.05)
            await self.slack_adapter.drain(within=5)

    async def message_count(self) -> int:
        return await self.engine.store.count_messages()


def bot_settings(tmp: Path, slack: FakeSlack, tg: FakeTelegram, llm: FakeLLM,
                 **extra: Any) -> Settings:
    (tmp / "knowledge").mkdir(exist_ok=True)
    values: dict[str, Any] = {
        "data_dir": tmp,
        "prompts_dir": REPO / "supportbot/defaults/prompts",
        "knowledge_dir": REPO / "supportbot/defaults/knowledge",
        "slack_bot_token": slack.bot_token,
        "slack_signing_secret": slack.signing_secret,
        "slack_api_url": slack.api_url,
        "slack_staff_channel": STAFF_CHANNEL,
        "slack_staff_user_ids": [STAFF],
        "slack_support_channels": ["CSUPPORT"],
        "telegram_bot_token": tg.token,
        "telegram_api_url": tg.url,
        "telegram_webhook_url": "https://bot.example.com/telegram/webhook",
        "telegram_webhook_secret": WEBHOOK_SECRET,
        "telegram_staff_chat_id": TG_STAFF_CHAT,
        "llm_base_url": llm.url,
        "llm_api_key": "sk-auth-test-key",
        "llm_max_retries": 0,
        "rate_limit_per_minute": 0,
        "daily_token_budget": 0,
        **extra,
    }
    return Settings(_env_file=None, **values)


@contextlib.asynccontextmanager
async def running_bot(tmp: Path, **extra: Any) -> AsyncIterator[Bot]:
    with FakeSlack() as slack, FakeTelegram() as tg, FakeLLM() as llm:
        tg.add_chat(TG_STAFF_CHAT, "supergroup", "Support staff", forum=True)
        tg.set_member(TG_STAFF_CHAT, TG_STAFFER, "member")
        settings = bot_settings(tmp, slack, tg, llm, **extra)
        engine = await Engine.open(settings)
        slack_adapter = SlackAdapter(engine, settings, min_interval=0.0, stream_interval=0.05)
        tg_adapter = TelegramAdapter(engine, settings)
        app = create_app(engine, [slack_adapter, tg_adapter])
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on")
        )
        task = asyncio.create_task(server.serve())
        try:
            await FakeSlack.async_wait_for(lambda: server.started or task.done(), within=15)
            port = server.servers[0].sockets[0].getsockname()[1]
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                yield Bot(slack, tg, llm, engine, slack_adapter, http, settings)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 15)
            await engine.aclose()


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[Bot]:
    async with running_bot(tmp_path) as b:
        yield b


# --- Slack ----------------------------------------------------------------------------------


async def test_slack_requests_without_a_valid_fresh_signature_are_401_and_do_nothing(
    bot: Bot,
) -> None:
    event = bot.slack.message_event("please refund me", channel="D1")
    payload = json.dumps(bot.slack.event_callback(event)).encode()
    now = int(time.time())
    attempts = {
        "unsigned": await bot.http.post("/slack/events", content=payload,
                                        headers={"Content-Type": "application/json"}),
        "wrong secret": await bot.slack_raw(payload, secret="guessed-secret"),
        "stale (6 min)": await bot.slack_raw(payload, timestamp=now - 360),
        "future (6 min)": await bot.slack_raw(payload, timestamp=now + 360),
        "garbage timestamp": await bot.http.post("/slack/events", content=payload, headers={
            "Content-Type": "application/json", "X-Slack-Request-Timestamp": "yesterday",
            "X-Slack-Signature": bot.slack.sign(payload)["X-Slack-Signature"]}),
        "signature only": await bot.http.post("/slack/events", content=payload, headers={
            "Content-Type": "application/json",
            "X-Slack-Signature": bot.slack.sign(payload)["X-Slack-Signature"]}),
    }
    # replaying a signed body with a new timestamp breaks the signature
    signed = bot.slack.sign(payload)
    signed["X-Slack-Request-Timestamp"] = str(now + 1)
    attempts["re-timestamped"] = await bot.http.post(
        "/slack/events", content=payload, headers={"Content-Type": "application/json", **signed}
    )
    # a signed button press from a forged request
    press = bot.slack.block_action(TAKE_OVER, "1", user=STAFF, channel=STAFF_CHANNEL,
                                   message_ts="1.0")
    headers, body = bot.slack.signed_interaction(press, secret="guessed-secret")
    attempts["forged button"] = await bot.http.post("/slack/events", headers=headers, content=body)
    await bot.settle()
    assert {name: r.status_code for name, r in attempts.items()} == dict.fromkeys(attempts, 401)
    assert await bot.message_count() == 0
    assert bot.slack.messages() == [] and bot.llm.chat_requests() == []
    # the same request, correctly signed and fresh, is processed (so the 401s were the check)
    ok = await bot.slack_raw(payload, timestamp=now - 240)
    assert ok.status_code == 200
    await bot.slack.async_wait_for(lambda: bot.slack.messages(channel="D1"))


async def _slack_handoff(bot: Bot) -> tuple[int, str]:
    root = bot.slack.mention_event("I want to talk to a real person", channel="C7")
    await bot.slack_event(root)
    [note] = await bot.slack.async_wait_for(lambda: bot.slack.messages(channel=STAFF_CHANNEL))
    await bot.settle()
    conv = await bot.engine.find_conversation("slack", f"T0001:C7:{root['ts']}")
    assert conv is not None and conv.status == Status.WAITING
    return conv.id, note.ts


async def test_non_staff_slack_buttons_are_refused_and_logged(bot: Bot, caplog) -> None:
    conv_id, staff_ts = await _slack_handoff(bot)
    caplog.set_level(logging.INFO)
    for action in (TAKE_OVER, CLOSE):
        payload = bot.slack.block_action(action, str(conv_id), user="UMALLORY",
                                         channel=STAFF_CHANNEL, message_ts=staff_ts)
        headers, body = bot.slack.signed_interaction(payload)
        assert (await bot.http.post("/slack/events", headers=headers, content=body)).status_code \
            == 200
    await bot.slack.async_wait_for(
        lambda: len(bot.slack.messages(channel=STAFF_CHANNEL, ephemeral=True)) == 2
    )
    await bot.settle()
    assert all(m.text == NOT_STAFF for m in bot.slack.messages(ephemeral=True))
    conv = await bot.engine.get_conversation(conv_id)
    assert conv is not None and conv.status == Status.WAITING and conv.assignee is None
    transitions = await bot.engine.store.transitions(conv_id)
    assert not any("UMALLORY" in t.actor for t in transitions)
    assert any("UMALLORY" in (r.getMessage() + str(r.__dict__)) for r in caplog.records
               if "staff" in r.getMessage())


async def test_non_staff_reply_in_a_customer_thread_is_not_a_staff_message(bot: Bot) -> None:
    root = bot.slack.mention_event("where is my order?", channel="C8")
    await bot.slack_event(root)
    await bot.slack.async_wait_for(lambda: bot.slack.messages(channel="C8"))
    await bot.settle()
    # another workspace member (not staff) answers in the thread: it is a customer turn
    other = bot.slack.message_event("I can close this for you", channel="C8",
                                    channel_type="channel", user="UOTHER", thread_ts=root["ts"])
    await bot.slack_event(other)
    await bot.slack.async_wait_for(lambda: len(bot.slack.messages(channel="C8")) == 2)
    await bot.settle()
    conv = await bot.engine.find_conversation("slack", f"T0001:C8:{root['ts']}")
    assert conv is not None and conv.status == Status.BOT
    assert "staff" not in [t.role for t in conv.recent]


# --- Telegram -------------------------------------------------------------------------------


async def test_telegram_webhook_without_the_secret_is_403_and_does_nothing(bot: Bot) -> None:
    update = bot.tg.private_message("let me in", user_id=4242)
    for secret in (None, "", "wrong", WEBHOOK_SECRET[:-1], WEBHOOK_SECRET + "x",
                   WEBHOOK_SECRET.upper()):
        r = await bot.telegram(update, secret=secret)
        assert r.status_code == 403, secret
    r = await bot.telegram(None, secret="wrong", raw=b"{not json")
    assert r.status_code == 403  # checked before the body is even parsed
    await asyncio.sleep(0.3)
    assert await bot.message_count() == 0 and bot.tg.texts(4242) == []
    assert (await bot.telegram(update)).status_code == 200
    await bot.tg.wait_for(lambda: bot.tg.texts(4242))


async def test_non_staff_in_the_telegram_staff_group_cannot_act(bot: Bot) -> None:
    r = await bot.telegram(bot.tg.private_message("I need a human please", user_id=111))
    assert r.status_code == 200
    topic = await bot.tg.wait_for(lambda: next(iter(bot.tg.topics(TG_STAFF_CHAT)), None))
    conv = await bot.engine.find_conversation("telegram", "111")
    assert conv is not None and conv.status == Status.WAITING
    bot.tg.set_member(TG_STAFF_CHAT, 777, "left")  # a former member still posting
    for text in ("/close", "/bot", "hello from an outsider"):
        await bot.telegram(bot.tg.staff_message(text, chat_id=TG_STAFF_CHAT, thread_id=topic,
                                                user_id=777))
    await asyncio.sleep(0.5)
    conv = await bot.engine.get_conversation(conv.id)
    assert conv is not None and conv.status == Status.WAITING
    assert not any("outsider" in t for t in bot.tg.texts(111))


# --- CLI --------------------------------------------------------------------------------------


async def _seed(tmp: Path) -> int:
    settings = Settings(_env_file=None, data_dir=tmp,
                        prompts_dir=REPO / "supportbot/defaults/prompts",
                        knowledge_dir=REPO / "supportbot/defaults/knowledge")
    engine = await Engine.open(settings)
    try:
        await engine.handle(IncomingMessage("slack", "T:C:1", "U1", "hello", "m1"))
        conv = await engine.find_conversation("slack", "T:C:1")
        assert conv is not None
        return conv.id
    finally:
        await engine.aclose()


async def _status(tmp: Path, conv_id: int) -> str:
    settings = Settings(_env_file=None, data_dir=tmp,
                        prompts_dir=REPO / "supportbot/defaults/prompts",
                        knowledge_dir=REPO / "supportbot/defaults/knowledge")
    engine = await Engine.open(settings)
    try:
        view = await engine.get_conversation(conv_id)
        assert view is not None
        return str(view.status)
    finally:
        await engine.aclose()


def _cli_env(tmp: Path, allowed: str | None) -> dict[str, str]:
    env = {
        "SUPPORTBOT_DATA_DIR": str(tmp),
        "SUPPORTBOT_PROMPTS_DIR": str(REPO / "supportbot/defaults/prompts"),
        "SUPPORTBOT_KNOWLEDGE_DIR": str(REPO / "supportbot/defaults/knowledge"),
        "SUPPORTBOT_LOG_FORMAT": "json",
    }
    if allowed is not None:
        env["SUPPORTBOT_STAFF_CLI_USERS"] = allowed
    return env


async def test_cli_staff_actions_are_refused_for_os_users_not_listed(tmp_path: Path) -> None:
    conv_id = await _seed(tmp_path)
    runner = CliRunner()
    me = getpass.getuser()
    refused_env = _cli_env(tmp_path, json.dumps(["alice", "bob"]))
    for args in (["conversations", "take", str(conv_id)],
                 ["conversations", "handback", str(conv_id)],
                 ["conversations", "close", str(conv_id)],
                 ["export", "--customer", "U1"],
                 ["purge", "--customer", "U1"],
                 ["purge", "--older-than", "0"]):
        result = await asyncio.to_thread(runner.invoke, cli, args, env=refused_env)
        assert result.exit_code == 3, (args, result.output)
        assert "SUPPORTBOT_STAFF_CLI_USERS" in result.output and "U1" not in result.output
        assert "refused" in result.output and me in result.output  # and logged (stderr)
    assert await _status(tmp_path, conv_id) == "bot"  # nothing changed, nothing deleted

    for allowed in (json.dumps([me]), None):  # listed, or no list at all (the default)
        result = await asyncio.to_thread(
            runner.invoke, cli, ["conversations", "take", str(conv_id)],
            env=_cli_env(tmp_path, allowed),
        )
        assert result.exit_code == 0, result.output
        assert await _status(tmp_path, conv_id) == "human"
        result = await asyncio.to_thread(
            runner.invoke, cli, ["conversations", "handback", str(conv_id)],
            env=_cli_env(tmp_path, allowed),
        )
        assert result.exit_code == 0, result.output
