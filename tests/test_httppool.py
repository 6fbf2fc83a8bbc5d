"""The linear-time httpx pool (supportbot/httppool.py) against the real FakeLLM over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from supportbot.httppool import LinearPool, linearize
from supportbot.llm import LLMClient
from supportbot.testing.fake_llm import FakeLLM

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with FakeLLM(delay=0.02) as server:
        yield server


def _pool(client: httpx.AsyncClient) -> object:
    return client._transport._pool  # type: ignore[attr-defined]


def test_linearize_swaps_only_the_stock_pool() -> None:
    client = linearize(httpx.AsyncClient())
    assert type(_pool(client)) is LinearPool
    custom = httpx.AsyncHTTPTransport()
    custom._pool = object()  # type: ignore[assignment]  # someone else's pool: left alone
    other = linearize(httpx.AsyncClient(transport=custom))
    assert type(_pool(other)) is object


def test_llm_client_uses_the_linear_pool(fake: FakeLLM) -> None:
    client = LLMClient(fake.url, api_key="sk-test")
    assert type(_pool(client._http)) is LinearPool


async def test_concurrent_requests_respect_the_limit_and_reuse_connections(fake: FakeLLM) -> None:
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    async with linearize(httpx.AsyncClient(limits=limits, timeout=10)) as client:
        for _ in range(3):  # three waves of 24 requests queueing for 4 connections
            responses = await asyncio.gather(
                *(client.post(fake.url + "/chat/completions", json=BODY) for _ in range(24))
            )
            assert [r.status_code for r in responses] == [200] * 24
        assert len(_pool(client).connections) <= 4  # type: ignore[attr-defined]
    ports = {r.peer_port for r in fake.chat_requests()}
    assert len(fake.chat_requests()) == 72
    assert 1 <= len(ports) <= 4  # kept alive and reused, never more than the limit


async def test_expired_connections_are_not_handed_out(fake: FakeLLM) -> None:
    limits = httpx.Limits(max_connections=4, keepalive_expiry=0.0)
    async with linearize(httpx.AsyncClient(limits=limits, timeout=10)) as client:
        for _ in range(3):
            r = await client.post(fake.url + "/chat/completions", json=BODY)
            assert r.status_code == 200
            await asyncio.sleep(0.01)
    ports = [r.peer_port for r in fake.chat_requests()]
    assert len(set(ports)) == 3  # each idle connection had expired: a new one every time


async def test_connection_the_server_closed_is_not_reused() -> None:
    """A kept-alive socket the server has since closed must be probed and replaced, not used
    (using it would fail with "Server disconnected")."""
    accepted = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)  # then close the idle keep-alive connection
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        limits = httpx.Limits(max_connections=2)
        async with linearize(httpx.AsyncClient(limits=limits, timeout=5)) as client:
            for _ in range(3):
                response = await client.get(f"http://127.0.0.1:{port}/")
                assert response.text == "ok"
                await asyncio.sleep(0.2)
    finally:
        server.close()
        await server.wait_closed()
    assert accepted == 3
