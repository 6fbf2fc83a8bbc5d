"""The Telegram application's Bot API calls: python-telegram-bot's own ``HTTPXRequest``, pointed
at the configured base URL (the loopback FakeTelegram here), and a proxy from the environment
(a raw asyncio proxy server)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest
from telegram.request import HTTPXRequest

from supportbot.adapters.telegram.app import build_application
from supportbot.config import Settings
from supportbot.testing.fake_telegram import FakeTelegram

CHAT = 111
PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy",
             "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram() as f:
        f.add_chat(CHAT, "private")
        yield f


def settings_for(api_url: str, token: str = "123456:TEST-TOKEN") -> Settings:
    return Settings(_env_file=None, telegram_bot_token=token, telegram_api_url=api_url)


async def test_bot_api_calls_reach_the_configured_base_url(fake: FakeTelegram) -> None:
    app = build_application(settings_for(fake.url, fake.token))
    assert isinstance(app.bot.request, HTTPXRequest)  # PTB's own, not a class of ours
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("👍", callback_data="fb:1:9")]])
    async with app.bot as bot:
        msg = await bot.send_message(CHAT, "<b>héllo</b> &amp; bye", parse_mode="HTML",
                                     reply_markup=markup)
        fake.fail("sendMessage", description="Bad Request: chat not found")
        with pytest.raises(BadRequest, match=r"(?i)chat not found"):
            await bot.send_message(CHAT, "hi")
    assert fake.calls("getMe")  # initialised through the fake too
    call = fake.calls("sendMessage")[0]
    assert call.params["chat_id"] == CHAT and call.params["text"] == "<b>héllo</b> &amp; bye"
    assert call.params["reply_markup"] == markup.to_dict()
    assert msg.text == "héllo & bye" and msg.chat.id == CHAT  # the answer is parsed back


async def test_requests_go_through_the_proxy_named_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[bytes] = []
    me = {"id": 42, "is_bot": True, "first_name": "Ada", "username": "ada_bot"}
    body = json.dumps({"ok": True, "result": me}).encode()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length")), 0)
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://ann:pw@127.0.0.1:{port}")
    app = build_application(settings_for("http://api.example.org/bot"))
    try:
        user = await app.bot.get_me()
    finally:
        await app.bot.shutdown()
        server.close()
    assert user.username == "ada_bot"
    [head] = seen
    assert head.startswith(b"POST http://api.example.org/bot123456:TEST-TOKEN/getMe HTTP/1.1")
    assert b"Proxy-Authorization: Basic YW5uOnB3\r\n" in head  # ann:pw
