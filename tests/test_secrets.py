"""Secrets stay secret: API keys, bot tokens and signing secrets never appear in logs, errors,
``check`` output or exports, even at DEBUG and even when a server echoes the key back."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from click.testing import CliRunner
from test_auth import STAFF_CHANNEL, WEBHOOK_SECRET, running_bot
from test_crash_recovery import wait_for

from supportbot import logs
from supportbot.cli import cli
from supportbot.config import Settings
from supportbot.testing.fake_llm import FakeLLM
from supportbot.testing.fake_slack import FakeSlack
from supportbot.testing.fake_telegram import FakeTelegram
from supportbot.testing.serve import ServeProcess

LLM_KEY = "sk-live-SECRET-llm-key-0123456789"
SLACK_TOKEN = "xoxb-SECRET-slack-bot-token-98765"
SLACK_SIGNING = "SECRET-signing-secret-abcdef"
TG_TOKEN = "987654:SECRET-telegram-token-AAAAA"
TG_WEBHOOK = "SECRET-webhook-token-zyx"
REPO = Path(__file__).resolve().parents[1]


def leaks(text: str) -> list[str]:
    return [s for s in (LLM_KEY, SLACK_TOKEN, SLACK_SIGNING, TG_TOKEN, TG_WEBHOOK,
                        WEBHOOK_SECRET) if s in text]


def secret_env(slack: FakeSlack, tg: FakeTelegram, llm: FakeLLM) -> dict[str, str]:
    return {
        "SUPPORTBOT_SLACK_BOT_TOKEN": SLACK_TOKEN,
        "SUPPORTBOT_SLACK_SIGNING_SECRET": SLACK_SIGNING,
        "SUPPORTBOT_SLACK_API_URL": slack.api_url,
        "SUPPORTBOT_SLACK_STAFF_CHANNEL": STAFF_CHANNEL,
        "SUPPORTBOT_TELEGRAM_BOT_TOKEN": TG_TOKEN,
        "SUPPORTBOT_TELEGRAM_API_URL": tg.url,
        "SUPPORTBOT_TELEGRAM_WEBHOOK_URL": "https://bot.example.com/telegram/webhook",
        "SUPPORTBOT_TELEGRAM_WEBHOOK_SECRET": TG_WEBHOOK,
        "SUPPORTBOT_LLM_BASE_URL": llm.url,
        "SUPPORTBOT_LLM_API_KEY": LLM_KEY,
        "SUPPORTBOT_LLM_MAX_RETRIES": "1",
        "SUPPORTBOT_LLM_BASE_BACKOFF": "0.01",
        "SUPPORTBOT_LOG_LEVEL": "DEBUG",
        "SUPPORTBOT_LOG_MESSAGE_TEXT": "true",
    }


def test_serve_at_debug_with_failures_never_logs_a_secret(tmp_path: Path) -> None:
    with FakeSlack(signing_secret=SLACK_SIGNING, bot_token=SLACK_TOKEN) as slack, \
            FakeTelegram(token=TG_TOKEN) as tg, FakeLLM() as llm:
        serve = ServeProcess(tmp_path, secret_env(slack, tg, llm)).start()
        try:
            llm.fail_next("401")  # the server echoes the key back in its error body
            headers, body = slack.signed_event(slack.message_event("hello there", channel="D1"))
            httpx.post(serve.url + "/slack/events", headers=headers, content=body)
            wait_for(lambda: slack.messages(channel="D1"))
            slack.fail("chat.postMessage", "invalid_auth", times=2)
            llm.fail_next("500", times=2)
            headers, body = slack.signed_event(slack.message_event("again", channel="D2"))
            httpx.post(serve.url + "/slack/events", headers=headers, content=body)
            headers, body = slack.signed_event(slack.message_event("x", channel="D3"),
                                               secret="wrong")
            httpx.post(serve.url + "/slack/events", headers=headers, content=body)
            tg.fail("sendMessage", code=401, description="Unauthorized", times=1)
            update = tg.private_message("telegram question", user_id=5)
            httpx.post(serve.url + "/telegram/webhook", json=update,
                       headers={"X-Telegram-Bot-Api-Secret-Token": TG_WEBHOOK})
            httpx.post(serve.url + "/telegram/webhook", json=update,
                       headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"})
            update = tg.private_message("second telegram question", user_id=5)
            httpx.post(serve.url + "/telegram/webhook", json=update,
                       headers={"X-Telegram-Bot-Api-Secret-Token": TG_WEBHOOK})
            wait_for(lambda: any("second" in t for t in tg.texts(5)))
            time.sleep(0.5)
        finally:
            serve.stop()
        logs = serve.logs()
    assert '"level": "debug"' in logs and "hello there" in logs  # it really logged, verbosely
    assert "401" in logs or "LLM" in logs
    assert leaks(logs) == []


async def test_in_process_logs_errors_check_and_exports_hold_no_secret(
    tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_bot(tmp_path, llm_api_key=LLM_KEY) as bot:
        bot.llm.fail_next("401")
        await bot.slack_event(bot.slack.message_event("key please", channel="D9"))
        await bot.slack.async_wait_for(lambda: bot.slack.messages(channel="D9"))
        await bot.settle()
        conv = await bot.engine.find_conversation("slack", "T0001:D9")
        assert conv is not None
    captured = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''} {r.__dict__}" for r in caplog.records
    )
    assert LLM_KEY not in captured

    env = {
        "SUPPORTBOT_DATA_DIR": str(tmp_path),
        "SUPPORTBOT_PROMPTS_DIR": str(REPO / "supportbot/defaults/prompts"),
        "SUPPORTBOT_KNOWLEDGE_DIR": str(REPO / "supportbot/defaults/knowledge"),
        "SUPPORTBOT_LLM_BASE_URL": "http://127.0.0.1:9/v1",
        "SUPPORTBOT_LLM_API_KEY": LLM_KEY,
        "SUPPORTBOT_SLACK_BOT_TOKEN": SLACK_TOKEN,
        "SUPPORTBOT_SLACK_SIGNING_SECRET": SLACK_SIGNING,
        "SUPPORTBOT_TELEGRAM_BOT_TOKEN": TG_TOKEN,
        "SUPPORTBOT_TELEGRAM_WEBHOOK_SECRET": TG_WEBHOOK,
        "SUPPORTBOT_LOG_LEVEL": "DEBUG",
    }
    runner = CliRunner()
    outputs = []
    for args in (["check"], ["conversations", "export", str(conv.id)],
                 ["export", "--customer", "UCUSTOMER"], ["conversations", "list", "--json"],
                 ["purge", "--older-than", "1000", "--dry-run"]):
        result = await asyncio.to_thread(runner.invoke, cli, args, env=env)
        outputs.append(result.output + repr(result.exception or ""))
    assert "key please" in outputs[1] and "key please" in outputs[2]
    assert leaks("\n".join(outputs)) == []


# --- every log output is masked, tracebacks included (issue 23, finding 3) ------------------

DB_PASSWORD = "SECRET-db-password-4242"
SLACK_APP = "xapp-1-SECRET-app-token-13579"


def all_secret_settings() -> Settings:
    return Settings(
        _env_file=None, llm_api_key=LLM_KEY, slack_bot_token=SLACK_TOKEN,
        slack_signing_secret=SLACK_SIGNING, slack_app_token=SLACK_APP,
        telegram_bot_token=TG_TOKEN, telegram_webhook_secret=TG_WEBHOOK,
        database_url=f"postgresql+asyncpg://bot:{DB_PASSWORD}@db.internal:5432/support",
    )


EVERY_SECRET = (LLM_KEY, SLACK_TOKEN, SLACK_SIGNING, SLACK_APP, TG_TOKEN, TG_WEBHOOK, DB_PASSWORD)


def leaked_in(output: str) -> list[str]:
    """Secrets found in the output, also URL-encoded or JSON-escaped, or the token's secret half."""
    found = []
    for secret in EVERY_SECRET:
        forms = {secret, quote(secret, safe=""), json.dumps(secret)[1:-1], secret.split(":")[-1]}
        if any(form in output for form in forms):
            found.append(secret)
    return found


def _fail_like_a_proxy(settings: Settings) -> None:
    url = f"https://api.telegram.org/bot{TG_TOKEN}/sendMessage"
    try:
        try:
            raise ConnectionError(f"could not reach postgres://bot:{DB_PASSWORD}@db.internal")
        except ConnectionError as inner:
            raise RuntimeError(
                f"502 Bad Gateway <html>upstream failed for {url} "
                f"({quote(url, safe='')}) key={LLM_KEY} app={SLACK_APP}</html>"
            ) from inner
    except RuntimeError:
        log = logging.getLogger("supportbot.test.secrets")
        log.debug("request failed: %s", url, exc_info=True,
                  extra={"headers": {"Authorization": f"Bearer {LLM_KEY}"},
                         "signing": SLACK_SIGNING, "token": SLACK_TOKEN})
        log.exception("webhook %s failed", TG_WEBHOOK, stack_info=True)
        logging.getLogger("uvicorn.error").error("socket %s", SLACK_APP, exc_info=True)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_every_log_output_is_masked_tracebacks_included(fmt: str) -> None:
    settings = all_secret_settings()
    assert set(EVERY_SECRET) <= set(settings.secrets())  # the DB password counts too
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, sys.excepthook, threading.excepthook)
    try:
        logs.setup("DEBUG", fmt, settings.secrets(), stream=stream)
        _fail_like_a_proxy(settings)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        sys.excepthook, threading.excepthook = saved[2], saved[3]
    output = stream.getvalue()
    assert "Traceback" in output and "502 Bad Gateway" in output and "ConnectionError" in output
    assert "Stack (most recent call last)" in output  # stack_info was logged, masked
    assert leaked_in(output) == []


def test_serve_logs_no_secret_when_servers_echo_them_in_errors(tmp_path: Path) -> None:
    """A proxy's 502 page echoing the Telegram request URL (token inside), Slack failing with a
    502: the whole DEBUG log of ``supportbot serve`` is grepped, tracebacks included."""
    with FakeSlack(signing_secret=SLACK_SIGNING, bot_token=SLACK_TOKEN) as slack, \
            FakeTelegram(token=TG_TOKEN) as tg, FakeLLM() as llm:
        serve = ServeProcess(tmp_path, secret_env(slack, tg, llm)).start()
        try:
            echoed = f"{tg.url}{TG_TOKEN}/sendMessage"
            tg.fail("sendMessage", code=502, times=20,
                    description=f"Bad Gateway: upstream {echoed} ({quote(echoed, safe='')})")
            for i in range(2):
                update = tg.private_message(f"proxy question {i}", user_id=40 + i)
                httpx.post(serve.url + "/telegram/webhook", json=update,
                           headers={"X-Telegram-Bot-Api-Secret-Token": TG_WEBHOOK})
            slack.fail("chat.postMessage", "invalid_auth", times=3, status=502)
            headers, body = slack.signed_event(slack.message_event("slack question", channel="D5"))
            httpx.post(serve.url + "/slack/events", headers=headers, content=body)
            wait_for(lambda: len([c for c in tg.calls("sendMessage") if c.error]) >= 2
                     and slack.calls("chat.postMessage"))
            time.sleep(0.5)
        finally:
            serve.stop()
        logs_text = serve.logs()
    # the failures were logged (with the echoed page or just the error's type: either way the
    # whole log, tracebacks included, is what gets grepped)
    assert "Bad Gateway" in logs_text or "NetworkError" in logs_text
    assert '"level": "debug"' in logs_text
    assert leaked_in(logs_text) == []
