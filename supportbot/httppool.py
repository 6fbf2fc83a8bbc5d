"""A linear-time connection pool for our httpx clients (the LLM client and PTB's Bot).

httpcore 1.0's ``AsyncConnectionPool._assign_requests_to_connections`` runs on every request
start and every response close, and costs O(connections²): for each idle connection it
re-counts the whole pool, and it probes every idle connection for expiry (``getpeername`` +
``poll`` syscalls through anyio's extra attributes). With the 30-60 warm connections a busy
bot keeps, that was a third of ``supportbot serve``'s CPU (issue 8; encode/httpcore#1035).

``linearize(client)`` swaps in a subclass that stops at the first reusable connection and
probes only that one (plus a full sweep at most once a second, or when the pool is full, so
closed and expired sockets still go), and hands an idle HTTP/1.1 connection to one queued
request only.
If httpx/httpcore internals ever change shape, the stock pool is left in place.
"""

from __future__ import annotations

import importlib.util
import sys
import time

import httpcore
import httpx

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
    """Same policy as httpcore's pool (limits, keep-alive, expiry), one pass per call."""

    _swept_at = 0.0

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        closing: list[httpcore.AsyncConnectionInterface] = []
        now = time.monotonic()
        sweep = now - self._swept_at >= SWEEP_INTERVAL
        if sweep:
            self._swept_at = now
        if sweep or len(self._connections) >= self._max_connections:
            self._connections = self._clean(sweep, closing)

        queued = [request for request in self._requests if request.is_queued()]
        if not queued:
            return closing
        # an idle HTTP/1.1 connection already handed to a request that has not started yet
        reserved = set() if self._http2 else {
            id(r.connection) for r in self._requests if r.connection is not None
        }
        for pool_request in queued:
            origin = pool_request.request.url.origin
            connection = self._reusable(origin, reserved, closing)
            if connection is None:
                if len(self._connections) >= self._max_connections:
                    victim = next((c for c in self._connections
                                   if c.is_idle() and id(c) not in reserved), None)
                    if victim is None:
                        continue  # stays queued until a response closes
                    self._connections.remove(victim)
                    closing.append(victim)
                connection = self.create_connection(origin)
                self._connections.append(connection)
            if not self._http2:
                reserved.add(id(connection))  # HTTP/1.1: one request per connection
            pool_request.assign_to_connection(connection)
        return closing

    def _clean(
        self, sweep: bool, closing: list[httpcore.AsyncConnectionInterface]
    ) -> list[httpcore.AsyncConnectionInterface]:
        """Drop closed connections, close expired ones (on a sweep) and surplus idle ones."""
        kept: list[httpcore.AsyncConnectionInterface] = []
        idle = 0
        for connection in self._connections:
            if connection.is_closed():
                continue
            if sweep and connection.has_expired():
                closing.append(connection)
                continue
            kept.append(connection)
            idle += connection.is_idle()
        surplus = idle - self._max_keepalive_connections
        if surplus <= 0:
            return kept
        trimmed = []
        for connection in kept:
            if surplus > 0 and connection.is_idle():
                closing.append(connection)
                surplus -= 1
            else:
                trimmed.append(connection)
        return trimmed

    def _reusable(
        self,
        origin: httpcore.Origin,
        reserved: set[int],
        closing: list[httpcore.AsyncConnectionInterface],
    ) -> httpcore.AsyncConnectionInterface | None:
        """The first available connection for ``origin``; expired ones found on the way close
        (the only per-request expiry probe: a server may have closed an idle socket)."""
        found = None
        expired = []
        for connection in self._connections:
            if (
                id(connection) in reserved
                or not connection.is_available()
                or not connection.can_handle_request(origin)
            ):
                continue
            if connection.has_expired():
                expired.append(connection)
                continue
            found = connection
            break
        for connection in expired:
            self._connections.remove(connection)
            closing.append(connection)
        return found


def linearize(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Give ``client``'s default transport the linear pool (no-op for custom transports)."""
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    if type(pool) is httpcore.AsyncConnectionPool:
        pool.__class__ = LinearPool
    return client
