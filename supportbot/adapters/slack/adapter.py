"""``SlackAdapter``: wires the Bolt app to ``supportbot serve`` (HTTP) or Socket Mode.

Socket Mode when ``Settings.slack_app_token`` is set (no public URL needed); otherwise Slack
posts events to ``/slack/events`` and Bolt verifies every request's signature.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_sdk.web.async_client import AsyncWebClient
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from supportbot.config import Settings

from .app import PLATFORM, SlackListeners, build_app
from .desk import SlackDesk
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
        self.client = AsyncWebClient(
            token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url
        )
        self.poster = SlackPoster(self.client, min_interval=min_interval)
        self.desk = SlackDesk(
            engine, self.poster, settings.slack_staff_channel, settings.slack_staff_user_ids
        )
        self.listeners = SlackListeners(
            engine,
            self.poster,
            self.desk,
            support_channels=settings.slack_support_channels,
            spawn=self._spawn,
            stream_interval=stream_interval,
        )
        self.app = build_app(self.client, secret, self.listeners)
        self._http = AsyncSlackRequestHandler(self.app)
        self._socket: AsyncSocketModeHandler | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        engine.register_desk(PLATFORM, self.desk)
        engine.register_sink_factory(PLATFORM, self.listeners.sink_for)

    def routes(self) -> list[BaseRoute]:
        if self.socket_mode:
            return []  # nothing to expose: events arrive over the WebSocket
        return [Route("/slack/events", self._endpoint, methods=["POST"])]

    async def _endpoint(self, request: Request) -> Response:
        # slack_sdk's verifier raises (a 500) on a non-numeric timestamp: refuse it as unsigned
        if not request.headers.get("x-slack-request-timestamp", "").strip().isdigit():
            return Response(status_code=401)
        try:
            return await self._http.handle(request)
        except Exception as exc:  # Bolt assumes a well-formed body (a JSON object, UTF-8)
            log.warning("unreadable Slack request refused: %s", type(exc).__name__)
            return Response(status_code=400)

    async def start(self) -> None:
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
        await self.drain(within=10)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain(self, within: float = 10.0) -> None:
        """Wait for in-flight event work (tests, graceful shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=within)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(self._guard(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guard(coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:  # logged; Slack already got its ack, nothing else to tell it
            log.exception("slack event handling failed")
