"""Limits at the HTTP doors, enforced before any adapter code sees a request.

Slack and Telegram send small JSON bodies (a few KB), so anything bigger is refused with 413
before it is read: from ``Content-Length`` without reading a byte, or as soon as a chunked body
passes the cap. Unauthenticated requests are refused as early as the platform allows: the
Telegram webhook secret is a header, checked before the body is read; the Slack signature covers
the body, checked right after reading it (capped) and before anything parses it. A body that does
not arrive within the request deadline gets 408, and a client that disconnects mid-body is
simply dropped (nothing to answer, nothing to log as an error).

At the connection level (:func:`server_options`), every connection must complete its request
within the same deadline, counted from the moment it opened or from the end of the previous
response: slow or idle connections cannot pile up until the process runs out of file
descriptors. Past ``limit_concurrency`` open connections uvicorn answers 503.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass
from typing import Any

from slack_sdk.signature import SignatureVerifier
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from supportbot.config import Settings

log = logging.getLogger("supportbot.server")

SLACK_PATH = "/slack/events"
TELEGRAM_PATH = "/telegram/webhook"
TELEGRAM_SECRET_HEADER = "x-telegram-bot-api-secret-token"
MAX_HEAD_BYTES = 16 * 1024  # request line and headers; platforms send well under 2 KB


@dataclass(frozen=True, slots=True)
class Limits:
    max_body: int
    timeout: float
    slack_signing_secret: str | None = None
    telegram_secret: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        slack = settings.slack_signing_secret
        telegram = settings.telegram_webhook_secret
        return cls(
            max_body=settings.http_max_body_bytes,
            timeout=settings.http_request_timeout,
            slack_signing_secret=slack.get_secret_value() if slack else None,
            telegram_secret=telegram.get_secret_value() if telegram else None,
        )


class _TooLarge(Exception):
    pass


class RequestLimits:
    """ASGI middleware: body size cap, body deadline, platform authentication before parsing."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits
        self.slack = (SignatureVerifier(limits.slack_signing_secret)
                      if limits.slack_signing_secret else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None and not (declared.isascii() and declared.isdigit()):
            await Response(status_code=400)(scope, receive, send)
            return
        if declared is not None and int(declared) > self.limits.max_body:
            await Response(status_code=413)(scope, receive, send)  # not a byte read
            return
        if scope["path"] == TELEGRAM_PATH and not self._telegram_ok(headers):
            await Response(status_code=403)(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.limits.timeout):
                body = await self._read(receive)
        except _TooLarge:
            await Response(status_code=413)(scope, receive, send)
            return
        except TimeoutError:
            await Response(status_code=408)(scope, receive, send)
            return
        if body is None:  # the client went away mid-body: nobody to answer
            log.debug("client disconnected before sending the whole body",
                      extra={"path": scope["path"]})
            return
        if scope["path"] == SLACK_PATH and not self._slack_ok(headers, body):
            await Response(status_code=401)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _telegram_ok(self, headers: Headers) -> bool:
        expected = self.limits.telegram_secret
        if expected is None:
            return True  # the adapter decides (long polling has no webhook route)
        given = headers.get(TELEGRAM_SECRET_HEADER, "")
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                   expected.encode("utf-8"))

    def _slack_ok(self, headers: Headers, body: bytes) -> bool:
        if self.slack is None:
            return True  # Socket Mode: no HTTP route to protect
        stamp = headers.get("x-slack-request-timestamp", "")
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
            return False  # a 400-digit "timestamp" is no timestamp
        try:
            return self.slack.is_valid(body, stamp, headers.get("x-slack-signature"))
        except (ValueError, UnicodeDecodeError):
            return False


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then the real channel (which
    reports the disconnect when the client goes away)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def middleware(settings: Settings) -> list[Middleware]:
    """For ``Starlette(middleware=...)``: the request limits of ``settings``."""
    return [Middleware(RequestLimits, limits=Limits.from_settings(settings))]


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline: a connection that has not completed its request
    (head, body and our response) within :attr:`deadline` seconds of opening, or of the end of
    its previous response, is closed. uvicorn alone keeps a silent or trickling connection open
    forever (its keep-alive timer stops at the first byte received)."""

    deadline: float = 15.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline_timer = self.loop.call_later(self.deadline, self._expired)

    def _disarm(self) -> None:
        timer = getattr(self, "_deadline_timer", None)
        if timer is not None:
            timer.cancel()
            self._deadline_timer = None

    def _expired(self) -> None:
        self._deadline_timer = None
        if not self.transport.is_closing():
            log.debug("closed a connection that exceeded the request deadline",
                      extra={"deadline_s": self.deadline})
            self.transport.close()


def server_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config``: the connection deadline, the connection cap
    and the header size cap."""
    protocol = type("DeadlineH11Protocol", (DeadlineH11Protocol,),
                    {"deadline": settings.http_request_timeout})
    return {
        "http": protocol,
        "limit_concurrency": settings.http_max_connections or None,
        "timeout_keep_alive": 5,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
    }
