"""The linear-time httpx pool (supportbot/httppool.py) against the real FakeLLM over loopback."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest

from supportbot.httppool import AsyncioBackend, LinearPool, linearize
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


# --- the pool's bookkeeping -------------------------------------------------------------------


async def test_linearize_also_swaps_backend_cookie_jar_and_locks(fake: FakeLLM) -> None:
    async with linearize(httpx.AsyncClient()) as client:
        assert type(_pool(client)._network_backend) is AsyncioBackend  # type: ignore[attr-defined]
        assert type(client.cookies).__name__ == "_Cookies"
        assert (await client.post(fake.url + "/chat/completions", json=BODY)).status_code == 200
        [connection] = _pool(client).connections  # type: ignore[attr-defined]
        # locks that do not yield when free (if httpcore renames these, this says so)
        assert type(connection._request_lock).__name__ == "_FastLock"
        assert type(connection._connection._state_lock).__name__ == "_FastLock"
    custom = AsyncioBackend(max_connecting=3)
    transport = httpx.AsyncHTTPTransport()
    transport._pool._network_backend = custom  # type: ignore[attr-defined]
    async with linearize(httpx.AsyncClient(transport=transport)) as other:
        assert _pool(other)._network_backend is custom  # type: ignore[attr-defined]


async def test_waiting_requests_are_served_in_arrival_order(fake: FakeLLM) -> None:
    limits = httpx.Limits(max_connections=1)
    async with linearize(httpx.AsyncClient(limits=limits, timeout=10)) as client:
        tasks = []
        for i in range(6):
            body = {"messages": [{"role": "user", "content": f"request {i}"}]}
            post = client.post(fake.url + "/chat/completions", json=body)
            tasks.append(asyncio.create_task(post))
            await asyncio.sleep(0)  # each one queued before the next starts
        assert [r.status_code for r in await asyncio.gather(*tasks)] == [200] * 6
    seen = [r.messages[-1]["content"] for r in fake.chat_requests()]
    assert seen == [f"request {i}" for i in range(6)]
    assert len({r.peer_port for r in fake.chat_requests()}) == 1


async def test_cancelled_and_timed_out_waiters_free_their_place(fake: FakeLLM) -> None:
    limits = httpx.Limits(max_connections=2)
    async with linearize(httpx.AsyncClient(limits=limits, timeout=10)) as client:
        url = fake.url + "/chat/completions"
        tasks = [asyncio.create_task(client.post(url, json=BODY)) for _ in range(8)]
        await asyncio.sleep(0.005)  # two are in flight, six wait for a connection
        for task in tasks[2:5]:
            task.cancel()
        with pytest.raises(httpx.PoolTimeout):  # waits behind the rest, gives up first
            await client.post(url, json=BODY, timeout=httpx.Timeout(10, pool=0.001))
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert [type(r).__name__ for r in results] == (
            ["Response"] * 2 + ["CancelledError"] * 3 + ["Response"] * 3
        )
        pool = _pool(client)
        assert not pool._requests and not pool._waiting  # type: ignore[attr-defined]
        # nothing leaked: both connections still serve a new wave
        again = await asyncio.gather(*(client.post(url, json=BODY) for _ in range(4)))
        assert [r.status_code for r in again] == [200] * 4
        assert len(pool.connections) == 2  # type: ignore[attr-defined]


async def test_a_request_cancelled_while_connecting_gives_its_slot_back(fake: FakeLLM) -> None:
    backend = AsyncioBackend(max_connecting=1)
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1))
    transport._pool._network_backend = backend  # type: ignore[attr-defined]
    async with linearize(httpx.AsyncClient(transport=transport, timeout=5)) as client:
        url = fake.url + "/chat/completions"
        gate = backend._gate()
        await gate.acquire()  # every connect now waits for the gate
        stuck = asyncio.create_task(client.post(url, json=BODY))
        await asyncio.sleep(0.01)
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        gate.release()
        assert not _pool(client).connections  # type: ignore[attr-defined]
        response = await client.post(url, json=BODY, timeout=httpx.Timeout(5, pool=1))
        assert response.status_code == 200


async def test_idle_connections_beyond_the_keepalive_limit_are_closed(fake: FakeLLM) -> None:
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=1)
    async with linearize(httpx.AsyncClient(limits=limits, timeout=10)) as client:
        url = fake.url + "/chat/completions"
        await asyncio.gather(*(client.post(url, json=BODY) for _ in range(4)))
        assert len(_pool(client).connections) == 1  # type: ignore[attr-defined]
        ports = {r.peer_port for r in fake.chat_requests()}
        await client.post(url, json=BODY)
    assert len(ports) == 4
    assert fake.chat_requests()[-1].peer_port in ports  # the one kept alive was reused


# --- the asyncio network backend --------------------------------------------------------------


async def test_connect_waits_for_the_handshake_gate_and_failures_release_it(
    fake: FakeLLM,
) -> None:
    backend = AsyncioBackend(max_connecting=1)
    port = int(fake.url.rsplit(":", 1)[1].split("/")[0])
    async with backend._gate():
        with pytest.raises(httpcore.ConnectTimeout):
            await backend.connect_tcp("127.0.0.1", port, timeout=0.05)
    with socket.socket() as sock:  # a port nobody listens on: refused
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("127.0.0.1", closed, timeout=5)
    streams = await asyncio.gather(
        *(backend.connect_tcp("127.0.0.1", port, timeout=5) for _ in range(3))
    )
    for stream in streams:
        assert stream.get_extra_info("server_addr") == ("127.0.0.1", port)
        await stream.aclose()


async def _raw_server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    **kwargs: Any,
) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, **kwargs)
    return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


def _data_segments_sent(sock: Any) -> int:
    """Linux ``struct tcp_info.tcpi_data_segs_out``: TCP segments with data sent so far."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("I", info, 156)[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's TCP_INFO")
async def test_request_head_and_body_leave_in_one_segment() -> None:
    """h11 hands over the head and the body separately; they must go out as one send."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(8)
            except asyncio.IncompleteReadError:
                break
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    server, address = await _raw_server(serve)
    async with server, linearize(httpx.AsyncClient(timeout=5)) as client:
        segments = []
        for _ in range(3):
            response = await client.post(f"http://{address}/", content=b'{"x": 1}')
            assert response.text == "ok"
            sock = response.extensions["network_stream"].get_extra_info("socket")
            segments.append(_data_segments_sent(sock))
    assert segments == [1, 2, 3]  # one segment per request on the one kept-alive connection


async def test_uploads_respect_back_pressure() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await asyncio.sleep(0.05)  # a late, slow reader: the client has to wait for it
            received = 0
            while received < length:
                received += len(await reader.read(min(65536, length - received)))
                await asyncio.sleep(0.001)
            body = str(received).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        writer.close()

    server, address = await _raw_server(serve)
    payload = bytes(range(256)) * 8 * 1024  # 2 MiB
    buffered: list[int] = []

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 1024):
            connection = _pool(client).connections[0]  # type: ignore[attr-defined]
            transport = connection._connection._network_stream._transport
            buffered.append(transport.get_write_buffer_size())
            yield payload[start : start + 1024]
            await asyncio.sleep(0)  # each small piece goes out in a step of its own

    # a small kernel send buffer, so the transport's own buffer is what fills up
    transport = httpx.AsyncHTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)]
    )
    async with server, linearize(httpx.AsyncClient(transport=transport, timeout=10)) as client:
        response = await client.post(f"http://{address}/", content=payload)  # one big write
        assert response.text == str(len(payload))
        length = {"Content-Length": str(len(payload))}
        response = await client.post(f"http://{address}/", content=pieces(), headers=length)
        assert response.text == str(len(payload))
    assert max(buffered) < 256 * 1024  # small writes wait for the buffer to drain as well


async def test_silent_server_is_a_read_timeout_and_a_cut_body_an_error() -> None:
    answer = asyncio.Event()
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        if connections == 1:
            await answer.wait()  # the first request gets no answer in time
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
            await writer.drain()
        writer.close()

    server, address = await _raw_server(serve)
    async with server, linearize(httpx.AsyncClient(timeout=5)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"http://{address}/", timeout=0.05)
        answer.set()
        with pytest.raises(httpx.RemoteProtocolError):  # the body is shorter than promised
            await client.get(f"http://{address}/")
    assert connections == 2  # the timed-out connection was not reused


async def test_cookies_set_by_a_server_are_still_sent_back() -> None:
    cookies: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            sent = [line for line in head.split(b"\r\n") if line.lower().startswith(b"cookie:")]
            cookies.append(sent[0] if sent else b"")
            extra = b"" if sent else b"Set-Cookie: session=abc123; Path=/\r\n"
            writer.write(b"HTTP/1.1 200 OK\r\n" + extra + b"Content-Length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    server, address = await _raw_server(serve)
    async with server, linearize(httpx.AsyncClient(timeout=5)) as client:
        for _ in range(3):
            assert (await client.get(f"http://{address}/")).status_code == 200
    assert cookies == [b"", b"Cookie: session=abc123", b"Cookie: session=abc123"]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


async def test_tls_connections_work(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure")
            await writer.drain()
        writer.close()

    server, address = await _raw_server(serve, ssl=server_ctx)
    port = address.rsplit(":", 1)[1]
    trusting = ssl.create_default_context(cafile=str(cert))
    async with server:
        async with linearize(httpx.AsyncClient(verify=trusting, timeout=5)) as client:
            for _ in range(2):
                response = await client.get(f"https://localhost:{port}/")
                assert response.text == "secure"
            stream = response.extensions["network_stream"]
            assert stream.get_extra_info("ssl_object") is not None
            assert len(_pool(client).connections) == 1  # type: ignore[attr-defined]
        async with linearize(httpx.AsyncClient(timeout=5)) as untrusting:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.get(f"https://localhost:{port}/")
