"""``SlackAdapter``: wires the Bolt app to ``supportbot serve`` (HTTP) or Socket Mode.

Socket Mode when ``Settings.slack_app_token`` is set (no public URL needed); otherwise Slack
posts events to ``/slack/events`` and Bolt verifies every request's signature.

Before the ack only Bolt's checks run (signature, our cached ``auth.test`` from ``auth.py``,
listener matching) and our listeners store the customer's message (one short transaction): the
answer is written in the background, so the ack never waits for Slack's Web API or the LLM.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import aiohttp
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_sdk.web.async_client import AsyncWebClient
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from supportbot.config import Settings

from .app import PLATFORM, SlackListeners, build_app
from .auth import BotAuth
from .desk import SlackDesk
from .files import SlackFiles
from .sink import SlackPoster

if TYPE_CHECKING:
    from supportbot.engine import Engine

log = logging.getLogger(__name__)


class SlackAdapter:
    """Translates Slack events for the engine; replies, streaming and staff actions back."""

    name = PLATFORM

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        min_interval: float = 1.0,
        stream_interval: float = 1.0,
        backlog: int = 10_000,
    ) -> None:
        if settings.slack_bot_token is None:
            raise ValueError("SUPPORTBOT_SLACK_BOT_TOKEN is not set")
        self.socket_mode = settings.slack_app_token is not None
        secret = (
            settings.slack_signing_secret.get_secret_value()
            if (settings.slack_signing_secret is not None)
            else ""
        )
        if not self.socket_mode and not secret:
            raise ValueError(
                "SUPPORTBOT_SLACK_SIGNING_SECRET is required for the HTTP Events API "
                "(or set SUPPORTBOT_SLACK_APP_TOKEN to use Socket Mode)"
            )
        self.engine = engine
        self.settings = settings
        if backlog < 1:
            raise ValueError("backlog must be at least 1")
        self.backlog = backlog  # answers in progress past which HTTP events are refused (503)
        self.client = AsyncWebClient(
            token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url
        )
        self.poster = SlackPoster(self.client, min_interval=min_interval,
                                  native_streaming=settings.slack_native_streaming)
        self.desk = SlackDesk(
            engine, self.poster, settings.slack_staff_channel, settings.slack_staff_user_ids
        )
        self.listeners = SlackListeners(
            engine,
            self.poster,
            self.desk,
            support_channels=settings.slack_support_channels,
            stream_interval=stream_interval,
        )
        self.auth = BotAuth(self.client)
        self.app = build_app(self.client, secret, self.listeners, self.auth)
        self._http = AsyncSlackRequestHandler(self.app)
        self._socket: AsyncSocketModeHandler | None = None
        engine.register_desk(PLATFORM, self.desk)
        engine.register_sink_factory(PLATFORM, self.listeners.sink_for)
        engine.register_file_fetcher(PLATFORM, SlackFiles(self.client))

    def routes(self) -> list[BaseRoute]:
        if self.socket_mode:
            return []  # nothing to expose: events arrive over the WebSocket
        return [Route("/slack/events", self._endpoint, methods=["POST"])]

    async def _endpoint(self, request: Request) -> Response:
        # slack_sdk's verifier raises (a 500) on a timestamp that is not a plain number of
        # seconds: refuse it as unsigned, like a stale one
        stamp = request.headers.get("x-slack-request-timestamp", "").strip()
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
            return Response(status_code=401)
        if self.engine.backlog() >= self.backlog:  # shed load: Slack redelivers later
            return Response(status_code=503, headers={"Retry-After": "60"})
        try:
            response = await self._http.handle(request)
        except Exception as exc:  # Bolt assumes a well-formed body (a JSON object, UTF-8)
            log.warning("unreadable Slack request refused: %s", type(exc).__name__)
            return Response(status_code=400)
        if response.status_code >= 500 and response.status_code != 503:
            log.warning("slack request failed in Bolt (%s); refused", response.status_code)
            return Response(status_code=400)
        return response

    async def start(self) -> None:
        if self.client.session is None:
            # one pooled HTTP session: slack_sdk otherwise opens a new one (and a new TCP/TLS
            # connection) for every Web API call
            self.client.session = aiohttp.ClientSession()
        await self.auth.warm()  # so no ack waits for auth.test
        if not self.socket_mode or self._socket is not None:
            return
        assert self.settings.slack_app_token is not None
        self._socket = AsyncSocketModeHandler(
            self.app, self.settings.slack_app_token.get_secret_value(), web_client=self.client
        )
        await self._socket.connect_async()
        log.info("slack socket mode connected")

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None
        await self.listeners.drain(within=10)
        if self.client.session is not None:
            await self.client.session.close()
            self.client.session = None

    async def drain(self, within: float = 10.0) -> None:
        """Wait for answers and button work in progress (tests, graceful shutdown)."""
        await self.listeners.drain(within)
