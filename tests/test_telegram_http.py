"""The aiohttp request class under python-telegram-bot's real ``Bot``: the loopback FakeTelegram
for the API, raw asyncio servers for a silent server and an HTTP proxy."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, NetworkError, TimedOut
from yarl import URL

from supportbot.adapters.telegram.http import AiohttpRequest, _env_proxy
from supportbot.testing.fake_telegram import FakeTelegram

CHAT = 111
NO_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy",
                "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NO_PROXY_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram() as f:
        f.add_chat(CHAT, "private")
        yield f


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    request = AiohttpRequest()
    async with Bot(fake.token, base_url=fake.url, request=request) as b:
        yield b


async def test_parameters_arrive_as_ptbs_own_client_sends_them(
    fake: FakeTelegram, bot: Bot
) -> None:
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("👍", callback_data="fb:1:9")]])
    msg = await bot.send_message(CHAT, "<b>héllo</b> &amp; bye", parse_mode="HTML",
                                 reply_markup=markup)
    [call] = fake.calls("sendMessage")
    assert call.params["chat_id"] == CHAT and call.params["text"] == "<b>héllo</b> &amp; bye"
    assert call.params["reply_markup"] == markup.to_dict()
    assert msg.text == "héllo & bye" and msg.chat.id == CHAT  # the answer is parsed back
    assert fake.calls("getMe")  # ``async with Bot`` initialised through it too


async def test_files_go_as_multipart(fake: FakeTelegram, bot: Bot) -> None:
    await bot.set_webhook("https://bot.example.com/hook", certificate=b"-----BEGIN CERT",
                          secret_token="s3cret")
    [call] = fake.calls("setWebhook")
    assert call.params["certificate"] == "<file>"
    assert call.params["url"] == "https://bot.example.com/hook"
    assert call.params["secret_token"] == "s3cret"


async def test_api_errors_come_back_as_ptb_errors(fake: FakeTelegram, bot: Bot) -> None:
    fake.fail("sendMessage", description="Bad Request: chat not found")
    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        await bot.send_message(CHAT, "hi")


async def test_a_refused_connection_is_a_network_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    request = AiohttpRequest()
    await request.initialize()
    try:
        with pytest.raises(NetworkError) as caught:
            await request.do_request(f"http://127.0.0.1:{port}/bot1:T/getMe", "POST")
        assert not isinstance(caught.value, TimedOut)
    finally:
        await request.shutdown()


async def test_a_silent_server_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    request = AiohttpRequest(read_timeout=0.2)
    await request.initialize()
    try:
        with pytest.raises(TimedOut):
            await request.do_request(f"http://127.0.0.1:{port}/bot1:T/getMe", "POST")
    finally:
        await request.shutdown()
        server.close()


async def test_requests_before_initialize_are_refused() -> None:
    with pytest.raises(RuntimeError, match="not initialized"):
        await AiohttpRequest().do_request("http://127.0.0.1:1/bot1:T/getMe", "POST")


def test_proxy_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://ann:pw@proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.corp.example")
    assert _env_proxy("https", "api.telegram.org") == (
        URL("http://proxy.internal:3128"), {"Proxy-Authorization": "Basic YW5uOnB3"}  # ann:pw
    )
    assert _env_proxy("https", "bots.corp.example") is None
    assert _env_proxy("http", "api.telegram.org") is None  # no HTTP_PROXY set
    monkeypatch.setenv("ALL_PROXY", "proxy.internal:8080")
    assert _env_proxy("http", "api.telegram.org") == (URL("http://proxy.internal:8080"), None)


async def test_requests_go_through_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        body = b'{"ok": true, "result": true}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://ann:pw@127.0.0.1:{port}")
    request = AiohttpRequest()
    await request.initialize()
    try:
        status, body = await request.do_request("http://api.example.org/bot1:T/logOut", "POST")
    finally:
        await request.shutdown()
        server.close()
    assert (status, body) == (200, b'{"ok": true, "result": true}')
    [head] = seen
    assert head.startswith(b"POST http://api.example.org/bot1:T/logOut HTTP/1.1")
    assert b"Proxy-Authorization: Basic YW5uOnB3" in head  # ann:pw
