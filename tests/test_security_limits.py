"""Bounded requests (issue 23, finding 4, and the aborted upload of finding 7): bodies over the
cap are refused before they are read, unauthenticated requests before they are parsed, slow
connections are closed, the connection count is capped, and an upload the client abandons
leaves no error in the logs.

Raw sockets stand in for hostile clients: an HTTP client library would not send a header that
promises 100 MB and then stop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from test_auth import TG_HEADER, WEBHOOK_SECRET, Bot, running_bot

from supportbot.config import Settings
from supportbot.engine import Engine, IncomingMessage
from supportbot.testing.fake_llm import FakeLLM
from supportbot.testing.serve import ServeProcess

MB = 1_000_000


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[Bot]:
    async with running_bot(tmp_path) as b:
        yield b


def port_of(bot: Bot) -> int:
    port = bot.http.base_url.port
    assert port is not None
    return port


def head(path: str, length: int | None, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: bot.example.com", "Content-Type: application/json",
             *extra]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def exchange(port: int, data: bytes, *, more: bytes = b"", timeout: float = 10.0) -> str:
    """Send ``data`` (then ``more``, as far as the server lets us) and return the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        try:
            for i in range(0, len(more), 65536):
                sock.sendall(more[i : i + 65536])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and hung up mid-upload: what we want
        received = b""
        while b"\r\n" not in received:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
    return received.split(b"\r\n", 1)[0].decode()


async def status(port: int, data: bytes, *, more: bytes = b"") -> str:
    return await asyncio.to_thread(exchange, port, data, more=more)


async def test_a_body_over_the_cap_is_refused_before_it_is_read(bot: Bot) -> None:
    port = port_of(bot)
    # 100 MB promised, not one byte sent: the answer cannot have waited for the body
    assert " 413 " in await status(port, head("/slack/events", 100 * MB))
    assert " 413 " in await status(port, head("/telegram/webhook", 100 * MB,
                                               f"{TG_HEADER}: {WEBHOOK_SECRET}"))
    chunked = head("/slack/events", None, "Transfer-Encoding: chunked")
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
    assert " 413 " in await status(port, chunked, more=chunk * 40)  # 2.6 MB, no length given
    assert (await bot.http.get("/healthz")).status_code == 200


async def test_unauthenticated_requests_are_refused_before_parsing(bot: Bot) -> None:
    port = port_of(bot)
    # the Telegram secret is a header: refused with the body still unsent
    assert " 403 " in await status(port, head("/telegram/webhook", 5000, f"{TG_HEADER}: nope"))
    assert " 403 " in await status(port, head("/telegram/webhook", 5000))
    # Slack signs the body: an unsigned one is refused whatever it contains, unparsed
    r = await bot.http.post("/slack/events", content=b"{not json at all",
                            headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    r = await bot.slack_raw(b'{"type": "event_callback"}', secret="wrong-secret")
    assert r.status_code == 401
    assert await bot.message_count() == 0


async def test_an_aborted_upload_logs_no_error(bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = port_of(bot)
    for path, extra in (("/slack/events", ()), ("/telegram/webhook",
                                                (f"{TG_HEADER}: {WEBHOOK_SECRET}",))):
        def abandon(path: str = path, extra: tuple[str, ...] = extra) -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(head(path, 10_000, *extra) + b'{"update_id": 1, "mess')

        await asyncio.to_thread(abandon)

    def settled() -> bool:
        seen = [r for r in caplog.records if "disconnected before" in r.getMessage()]
        return len(seen) >= 2 or any(r.levelno >= logging.ERROR for r in caplog.records)

    await bot.slack.async_wait_for(settled, within=10)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [(r.name, r.getMessage()) for r in errors]
    assert (await bot.http.get("/healthz")).status_code == 200


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Trickle header bytes (a slowloris) until the server hangs up, or ``within`` passes."""
    sock.setblocking(False)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if sock.recv(4096) == b"":
                return True
        except BlockingIOError:
            pass
        except (ConnectionResetError, BrokenPipeError):
            return True
        try:
            sock.send(b"X-Slow: 1\r\n")
        except (BlockingIOError, ConnectionResetError, BrokenPipeError):
            return True
        time.sleep(0.2)
    return False


def test_slow_and_idle_connections_are_closed_and_capped(tmp_path: Path) -> None:
    serve = ServeProcess(tmp_path, {"SUPPORTBOT_HTTP_REQUEST_TIMEOUT": "1.5",
                             "SUPPORTBOT_HTTP_MAX_CONNECTIONS": "20"}).start()
    socks: list[socket.socket] = []
    try:
        for _ in range(30):
            sock = socket.create_connection(("127.0.0.1", serve.port), timeout=5)
            sock.sendall(b"POST /slack/events HTTP/1.1\r\nHost: x\r\n")  # and never finish
            socks.append(sock)
        # past the cap, a request that does arrive is answered 503, not left hanging
        assert httpx.get(serve.url + "/healthz", timeout=5).status_code == 503
        assert all(_closed_by_server(sock, within=10) for sock in socks)
        # the slow ones are gone: the door is open again
        assert httpx.get(serve.url + "/healthz", timeout=5).status_code == 200
    finally:
        for sock in socks:
            sock.close()
        serve.stop()
    assert "Too many open files" not in serve.logs()


async def test_metrics_behind_a_token_when_one_is_set(tmp_path: Path) -> None:
    async with running_bot(tmp_path, metrics_token="scrape-token-123") as bot:
        assert (await bot.http.get("/metrics")).status_code == 401
        wrong = await bot.http.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await bot.http.get("/metrics",
                                headers={"Authorization": "Bearer scrape-token-123"})
        assert ok.status_code == 200 and "supportbot_messages_received" in ok.text
        assert (await bot.http.get("/healthz")).status_code == 200  # health stays open
    (tmp_path / "open").mkdir()
    async with running_bot(tmp_path / "open") as bot:  # no token: open, as before
        assert (await bot.http.get("/metrics")).status_code == 200


class Walked(str):
    """A message that counts the characters anyone iterates over."""

    walked = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        for ch in str.__iter__(self):
            self.walked += 1
            yield ch


async def test_a_huge_message_is_capped_before_any_per_character_work(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    cfg = Settings(_env_file=None, data_dir=tmp_path, llm_base_url=fake_llm.url,
                   max_message_chars=4000, rate_limit_per_minute=0, daily_token_budget=0)
    engine = await Engine.open(cfg)
    try:
        huge = Walked("refund " * 1_500_000)  # 10.5 MB, from an authenticated customer
        reply = await engine.handle(IncomingMessage("telegram", "9", "u9", huge, "m1"))
        assert reply.text  # answered, with the capped text
        assert huge.walked <= 4 * 4000 + 64  # a bounded prefix, not 10.5 M characters
        conv = await engine.find_conversation("telegram", "9")
        assert conv is not None
        [stored] = [m for m in await engine.store.messages(conv.id) if m.role == "user"]
        assert len(stored.text) <= 4000
    finally:
        await engine.aclose()


async def test_a_huge_answer_is_at_most_ten_messages(tmp_path: Path) -> None:
    kdir = tmp_path / "kb"
    kdir.mkdir()
    answer = "\n\n".join(f"Step {i}: refunds take five days, really. " * 20 for i in range(1500))
    (kdir / "refunds.md").write_text(
        f"---\nquestion: How long do refunds take?\n---\n{answer}\n")  # 1.3 MB, under the cap
    # FAQ only (no LLM): the answer goes out as written, like the 14 MB FAQ of the report
    async with running_bot(tmp_path, knowledge_dir=kdir, llm_base_url=None) as bot:
        await bot.slack_event(bot.slack.message_event("How long do refunds take?",
                                                      channel="DBIG"))
        await bot.telegram(bot.tg.private_message("How long do refunds take?", user_id=77))
        await bot.slack.async_wait_for(lambda: bot.slack.messages(channel="DBIG"), within=15)
        await bot.tg.wait_for(lambda: bot.tg.texts(77), within=15)
        await bot.settle()
        slack = bot.slack.messages(channel="DBIG")
        telegram = bot.tg.texts(77)
    assert 1 < len(slack) <= 10 and 1 < len(telegram) <= 10
    assert slack[-1].text.rstrip().endswith("…") and telegram[-1].rstrip().endswith("…")
