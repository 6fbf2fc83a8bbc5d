"""The LLM client's connections: httpx's own pool, sized by ``SUPPORTBOT_LLM_MAX_CONNECTIONS``,
against the real FakeLLM (or a raw asyncio server) over loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from supportbot.config import Settings
from supportbot.llm import LLMClient
from supportbot.testing.fake_llm import FakeLLM

QUESTION = [{"role": "user", "content": "hi"}]


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with FakeLLM(delay=0.05) as server:
        yield server


async def test_a_burst_waits_for_the_pool_and_reuses_its_connections(fake: FakeLLM) -> None:
    async with LLMClient(fake.url, max_connections=4, timeout=10, deadline=20) as client:
        for wave in range(3):  # three waves of 24 requests queueing for 4 connections
            replies = await asyncio.gather(
                *(client.complete([{"role": "user", "content": f"q {wave} {i}"}])
                  for i in range(24))
            )
            assert all(r.text for r in replies)
    requests = fake.chat_requests()
    assert len(requests) == 72
    assert 1 <= len({r.peer_port for r in requests}) <= 4  # kept alive, never above the limit


async def test_the_setting_sizes_the_pool(fake: FakeLLM) -> None:
    settings = Settings(_env_file=None, llm_base_url=fake.url, llm_max_connections=2)
    async with LLMClient.from_settings(settings) as client:
        await asyncio.gather(*(client.complete(QUESTION) for _ in range(8)))
    assert len({r.peer_port for r in fake.chat_requests()}) == 2


async def test_the_default_pool_serves_a_hundred_replies_at_once(fake: FakeLLM) -> None:
    """With a slow model every reply in progress holds a connection: 100 at once by default."""
    fake.delay = 0.5
    async with LLMClient(fake.url, timeout=10, deadline=20) as client:
        await asyncio.gather(*(client.complete(QUESTION) for _ in range(120)))
    requests = fake.chat_requests()
    assert len({r.peer_port for r in requests}) == 100
    arrivals = sorted(r.at for r in requests)
    # the last 20 waited for a connection to come back: they arrived a model's reply later
    assert arrivals[100] - arrivals[0] >= 0.4


async def test_a_connection_the_server_closed_is_replaced_not_reused() -> None:
    """A kept-alive socket the LLM server has since closed must not fail the next reply."""
    accepted = 0
    body = json.dumps({"model": "m", "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant",
                                                              "content": "ok"}}]}).encode()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await asyncio.sleep(0.05)  # then close the idle keep-alive connection
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with LLMClient(f"http://127.0.0.1:{port}/v1", max_retries=0) as client:
            for _ in range(3):
                assert (await client.complete(QUESTION)).text == "ok"
                await asyncio.sleep(0.2)
    finally:
        server.close()
        await server.wait_closed()
    assert accepted == 3
