"""Cheap HTTP plumbing for the LLM client's httpx client: a pool, a network backend, cookies.

CPU per LLM call, client side, against the fake LLM in another process: 1.6 ms with httpx's
defaults and 0.55 ms with ``linearize`` in a burst of 1,000 calls on new connections; 0.73 and
0.48 ms one call at a time.

- **Pool.** httpcore 1.0's ``AsyncConnectionPool`` re-examines every connection and every
  request on each request start and response close: O(n²) for a burst (encode/httpcore#1035;
  our first fix still swept a full pool on every call, 37% of the client's CPU with 1,000
  connections). ``LinearPool`` keeps the idle connections on a stack and the waiting requests
  in a FIFO queue, so each event costs O(1).
- **Network backend.** httpcore's default goes through anyio, which opens a cancel scope per
  read and write and a task group per connect, and whose locks yield to the event loop even
  when free. ``AsyncioBackend`` uses asyncio transports, sends a request's head and body in
  one segment, hands h11 what has arrived in one piece, and caps TCP handshakes in flight so
  a burst does not overflow the server's listen backlog; connections get ``_FastLock``s.
- **Cookies.** httpx feeds every response through ``http.cookiejar``; ``_Cookies`` skips it
  when no cookie is set.

``linearize(client)`` installs all three on a client built with httpx's default transport; a
custom transport or backend is left alone, and so is everything if httpcore's internals
ever change shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
import ssl
import sys
import time
from collections import deque
from collections.abc import AsyncIterable, Iterable
from typing import Any

import httpcore
import httpx
from httpcore._async.connection_pool import AsyncPoolRequest, PoolByteStream
from httpcore._backends.auto import AutoBackend
from httpcore._backends.base import SOCKET_OPTION
from httpcore._synchronization import AsyncShieldCancellation
from httpcore._utils import is_socket_readable

SWEEP_INTERVAL = 1.0  # seconds between expiry probes of every idle connection


def _cache_missing_sniffio() -> None:
    """httpcore runs ``import sniffio`` for every lock and event it creates (several per
    request). anyio 4 no longer installs sniffio, and a failed import is not cached, so each
    one re-scanned sys.path: ~7% of ``supportbot serve``'s CPU. ``None`` in ``sys.modules``
    makes the import fail at once, which httpcore already reads as "asyncio"."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


_cache_missing_sniffio()


class LinearPool(httpcore.AsyncConnectionPool):
    """Same policy as httpcore's pool (limits, keep-alive, expiry), O(1) work per request.

    HTTP/1.1 only (one request per connection): a connection is either held by one request or
    on the idle stack, so a request takes the most recently released idle connection, a new
    one, or waits in FIFO order, and a finished response hands its connection straight to
    the next waiter. With HTTP/2 enabled the stock pool's code runs unchanged.
    """

    _swept_at = 0.0
    # Set lazily: ``linearize`` swaps the class of a pool whose ``__init__`` already ran.
    _idle: dict[httpcore.AsyncConnectionInterface, None] | None = None
    _waiting: deque[AsyncPoolRequest] | None = None

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        if self._http2:
            return await super().handle_async_request(request)
        scheme = request.url.scheme.decode()
        if scheme not in ("http", "https", "ws", "wss"):
            raise httpcore.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{scheme}://'."
                if scheme
                else "Request URL is missing an 'http://' or 'https://' protocol."
            )
        timeout = request.extensions.get("timeout", {}).get("pool", None)
        pool_request = AsyncPoolRequest(request)
        self._requests.append(pool_request)
        try:
            while True:
                self._queue().append(pool_request)
                await self._close_connections(self._assign())
                connection = await pool_request.wait_for_connection(timeout=timeout)
                try:
                    response = await connection.handle_async_request(pool_request.request)
                except httpcore.ConnectionNotAvailable:
                    # it closed between being handed out and used: forget it, queue again
                    pool_request.clear_connection()
                    closing: list[httpcore.AsyncConnectionInterface] = []
                    self._drop(connection, closing)
                    await self._close_connections(closing)
                else:
                    break
        except BaseException as exc:
            await self._close_connections(self._release(pool_request))
            raise exc from None
        assert isinstance(response.stream, AsyncIterable)
        return httpcore.Response(
            status=response.status,
            headers=response.headers,
            content=_PoolStream(stream=response.stream, pool_request=pool_request, pool=self),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        self._idle = None
        await super().aclose()

    def create_connection(self, origin: httpcore.Origin) -> httpcore.AsyncConnectionInterface:
        connection = super().create_connection(origin)
        if type(connection) is httpcore.AsyncHTTPConnection:
            connection.__class__ = _Connection
            connection._request_lock = _FastLock()  # type: ignore[attr-defined]
        return connection

    async def _close_connections(self, closing: list[httpcore.AsyncConnectionInterface]) -> None:
        if closing:  # the stock one opens an anyio cancel scope even for nothing to close
            await super()._close_connections(closing)

    # --- bookkeeping (no awaits: runs atomically on the event loop) --------------------------

    def _queue(self) -> deque[AsyncPoolRequest]:
        if self._waiting is None:
            self._waiting = deque()
        return self._waiting

    def _idle_stack(self) -> dict[httpcore.AsyncConnectionInterface, None]:
        if self._idle is None:
            self._idle = {}
        return self._idle

    def _release(self, pool_request: AsyncPoolRequest) -> list[httpcore.AsyncConnectionInterface]:
        """A request is done (its response closed, or it failed or was cancelled): free its
        connection, or its place in the queue."""
        closing: list[httpcore.AsyncConnectionInterface] = []
        with contextlib.suppress(ValueError):
            self._requests.remove(pool_request)
        connection = pool_request.connection
        if connection is None:
            with contextlib.suppress(ValueError):
                self._queue().remove(pool_request)
        elif connection.is_available():
            idle = self._idle_stack()
            idle.pop(connection, None)
            idle[connection] = None  # on top: the warmest connection is reused first
        else:
            # closed, failed to connect, or never used (cancelled before sending): the stock
            # pool would keep a never-used connection forever; it cannot serve anyone else
            self._drop(connection, closing)
        return self._assign(closing)

    def _assign(
        self, closing: list[httpcore.AsyncConnectionInterface] | None = None
    ) -> list[httpcore.AsyncConnectionInterface]:
        """Hand idle or new connections to waiting requests, oldest first; returns the
        connections to close."""
        closing = [] if closing is None else closing
        idle = self._idle_stack()
        now = time.monotonic()
        if now - self._swept_at >= SWEEP_INTERVAL:
            self._swept_at = now
            for connection in [c for c in idle if c.is_closed() or c.has_expired()]:
                self._drop(connection, closing)
        waiting = self._queue()
        while waiting:
            pool_request = waiting[0]
            origin = pool_request.request.url.origin
            connection = self._take_idle(origin, closing)
            if connection is None:
                if len(self._connections) >= self._max_connections:
                    if not idle:
                        break  # every connection is busy: wait for a response to close
                    # an idle connection to another origin makes room (the oldest one)
                    self._drop(next(iter(idle)), closing)
                connection = self.create_connection(origin)
                self._connections.append(connection)
            waiting.popleft()
            pool_request.assign_to_connection(connection)
        while len(idle) > self._max_keepalive_connections:
            self._drop(next(iter(idle)), closing)  # the longest idle goes first
        return closing

    def _take_idle(
        self, origin: httpcore.Origin, closing: list[httpcore.AsyncConnectionInterface]
    ) -> httpcore.AsyncConnectionInterface | None:
        """The most recently released connection to ``origin`` that is still usable; expired
        ones found on the way close (the per-request probe: a server may have closed it)."""
        idle = self._idle_stack()
        while True:
            found = next((c for c in reversed(idle) if c.can_handle_request(origin)), None)
            if found is None:
                return None
            del idle[found]
            if found.is_available() and not found.has_expired():
                return found
            self._drop(found, closing)

    def _drop(
        self,
        connection: httpcore.AsyncConnectionInterface,
        closing: list[httpcore.AsyncConnectionInterface],
    ) -> None:
        """Take ``connection`` out of the pool, and close it unless it already is."""
        if self._idle is not None:
            self._idle.pop(connection, None)
        with contextlib.suppress(ValueError):
            self._connections.remove(connection)
            if not connection.is_closed():
                closing.append(connection)


class _FastLock:
    """httpcore's ``AsyncLock`` interface on ``asyncio.Lock``. httpcore's own goes through
    ``anyio.Lock``, which yields to the event loop on every acquire, free or not: three extra
    trips through a busy loop's ready queue per request, and ~8% of a call's CPU."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> _FastLock:
        await self._lock.acquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._lock.release()


class _Connection(httpcore.AsyncHTTPConnection):
    """Gives the HTTP/1.1 connection httpcore creates on connect a ``_FastLock`` too."""

    @property  # type: ignore[override]
    def _connection(self) -> httpcore.AsyncConnectionInterface | None:
        return self.__dict__.get("_connection")

    @_connection.setter
    def _connection(self, connection: httpcore.AsyncConnectionInterface | None) -> None:
        if type(connection) is httpcore.AsyncHTTP11Connection:
            connection._state_lock = _FastLock()  # type: ignore[attr-defined]
        self.__dict__["_connection"] = connection


class _PoolStream(PoolByteStream):
    """The response body; closing it releases the connection through ``LinearPool``."""

    _pool: LinearPool

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            with AsyncShieldCancellation():
                if hasattr(self._stream, "aclose"):
                    await self._stream.aclose()
            await self._pool._close_connections(self._pool._release(self._pool_request))


# --- a network backend on plain asyncio -------------------------------------------------------

READ_LIMIT = 256 * 1024  # bytes buffered from the socket before reading pauses


class _Protocol(asyncio.Protocol):
    """Buffers what arrives and wakes the one reader; tracks write back-pressure."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.eof = False
        self.error: BaseException | None = None
        self.reading_paused = False
        self.writing_paused = False
        self.reader: asyncio.Future[None] | None = None
        self.drainer: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size > READ_LIMIT and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return False  # close our side too: HTTP/1.1 has no use for a half-open socket

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake_reader()
        self.writing_paused = False
        self._wake_drainer()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake_drainer()

    async def until(self, waiter: str, within: float | None) -> None:
        """Wait for the callback that resolves ``waiter`` ("reader": data, EOF or an error;
        "drainer": room in the write buffer), at most ``within`` seconds (TimeoutError)."""
        setattr(self, waiter, asyncio.get_running_loop().create_future())
        try:
            async with asyncio.timeout(within):
                await getattr(self, waiter)
        finally:
            setattr(self, waiter, None)

    def _wake_reader(self) -> None:
        if self.reader is not None and not self.reader.done():
            self.reader.set_result(None)

    def _wake_drainer(self) -> None:
        if self.drainer is not None and not self.drainer.done():
            self.drainer.set_result(None)


def _take(chunks: deque[bytes], max_bytes: int) -> bytes:
    """Up to ``max_bytes`` from the front of ``chunks``, as one piece: a streamed reply arrives
    as many small writes, and h11 parses one buffer of them faster than each on its own."""
    data = chunks.popleft()
    if len(data) < max_bytes and chunks:
        parts = [data]
        size = len(data)
        while chunks and size + len(chunks[0]) <= max_bytes:
            size += len(chunks[0])
            parts.append(chunks.popleft())
        data = b"".join(parts)
    if len(data) > max_bytes:
        chunks.appendleft(data[max_bytes:])
        data = data[:max_bytes]
    return data


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection as httpcore wants it, on an asyncio transport.

    Writes made in one step of the event loop (h11 writes the head and the body separately)
    go out as one ``send`` at the end of that step, or before the next read.
    """

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        protocol.transport = transport
        self._pending: list[bytes] = []
        self._pending_size = 0

    # httpcore's interface passes timeouts as arguments, hence the ASYNC109 exemptions
    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        self._flush()
        protocol = self._protocol
        if not protocol.chunks and not protocol.eof:
            try:
                await protocol.until("reader", timeout)
            except TimeoutError:
                raise httpcore.ReadTimeout(f"no data within {timeout:g} s") from None
        if protocol.chunks:
            data = _take(protocol.chunks, max_bytes)
            protocol.size -= len(data)
            if protocol.reading_paused and protocol.size <= READ_LIMIT // 2:
                protocol.reading_paused = False
                self._transport.resume_reading()
            return data
        if protocol.error is not None:
            raise httpcore.ReadError(str(protocol.error) or type(protocol.error).__name__)
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if not buffer:
            return
        if self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(bytes(buffer))
        self._pending_size += len(buffer)
        if self._pending_size >= 64 * 1024:
            self._flush()
        protocol = self._protocol
        if not protocol.writing_paused:
            return
        self._flush()  # the transport's buffer is full: wait until it drains
        try:
            await protocol.until("drainer", timeout)
        except TimeoutError:
            raise httpcore.WriteTimeout(f"could not send within {timeout:g} s") from None
        if protocol.error is not None or self._transport.is_closing():
            raise httpcore.WriteError(str(protocol.error or "the connection is closed"))

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._pending.clear()
            self._pending_size = 0
            if not self._transport.is_closing():
                self._transport.write(data)

    async def aclose(self) -> None:
        self._flush()
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        self._flush()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            self._transport.abort()
            raise httpcore.ConnectTimeout(f"no TLS handshake within {timeout:g} s") from None
        except OSError as exc:  # ssl.SSLError included
            self._transport.abort()
            raise httpcore.ConnectError(str(exc)) from exc
        if transport is None:  # the connection closed during the handshake
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        return AsyncioStream(transport, self._protocol)  # type: ignore[arg-type]

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # data or EOF already received means "readable"; else ask the socket itself
            protocol = self._protocol
            return bool(protocol.chunks) or protocol.eof or is_socket_readable(
                self._transport.get_extra_info("socket")
            )
        key = _EXTRA_INFO.get(info)
        return None if key is None else self._transport.get_extra_info(key)


_EXTRA_INFO = {
    "ssl_object": "ssl_object",
    "client_addr": "sockname",
    "server_addr": "peername",
    "socket": "socket",
}


MAX_CONNECTING = 64  # TCP handshakes in flight at once, per client


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network layer on plain asyncio, without anyio's per-call cancel scopes and
    task groups (a third of the client's CPU per request).

    At most ``max_connecting`` TCP handshakes are in flight: a burst of 1,000 customers opens
    1,000 connections at once, and a server whose listen backlog is smaller (aiohttp's 128,
    asyncio's 100) drops the extra SYNs, which the kernel resends only after 1 s, then 3 s.
    """

    def __init__(self, max_connecting: int = MAX_CONNECTING) -> None:
        self.max_connecting = max_connecting
        self._connecting: asyncio.Semaphore | None = None

    def _gate(self) -> asyncio.Semaphore:
        if self._connecting is None:
            self._connecting = asyncio.Semaphore(self.max_connecting)
        return self._connecting

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout), self._gate():
                transport, protocol = await loop.create_connection(
                    _Protocol,
                    host,
                    port,
                    local_addr=(local_address, 0) if local_address else None,
                    **_happy_eyeballs(loop, host),
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"no connection within {timeout:g} s") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return _with_options(transport, protocol, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout), self._gate():
                transport, protocol = await loop.create_unix_connection(_Protocol, path)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"no connection within {timeout:g} s") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return _with_options(transport, protocol, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _happy_eyeballs(loop: asyncio.AbstractEventLoop, host: str) -> dict[str, float]:
    """A name may resolve to IPv6 and IPv4: race them as anyio does. The race costs ~90 µs of
    tasks, wasted on an address that is already one; uvloop has no race to ask for."""
    if _is_ip_address(host) or type(loop).__module__.startswith("uvloop"):
        return {}
    return {"happy_eyeballs_delay": 0.25}


def _is_ip_address(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            socket.inet_pton(family, host)
            return True
    return False


def _with_options(
    transport: asyncio.BaseTransport,
    protocol: _Protocol,
    socket_options: Iterable[SOCKET_OPTION] | None,
) -> AsyncioStream:
    sock = transport.get_extra_info("socket")
    for option in socket_options or ():
        sock.setsockopt(*option)
    return AsyncioStream(transport, protocol)  # type: ignore[arg-type]


class _Cookies(httpx.Cookies):
    """httpx runs every response through ``http.cookiejar`` (urllib request and response
    adapters, ~9% of a call's CPU) even when it sets no cookie; the jar reads only these two
    headers, so skipping it without them changes nothing."""

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers or "set-cookie2" in response.headers:
            super().extract_cookies(response)


def linearize(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Give ``client``'s default transport the linear pool (no-op for custom transports)."""
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    if type(pool) is httpcore.AsyncConnectionPool:
        pool.__class__ = LinearPool
        if type(pool._network_backend) is AutoBackend:
            pool._network_backend = AsyncioBackend()
    if type(client.cookies) is httpx.Cookies:
        client.cookies.__class__ = _Cookies
    return client
