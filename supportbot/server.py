"""``supportbot serve``: the HTTP server (``/healthz``, ``/metrics`` and each adapter's routes).

Start-up never waits for the backlog: the adapters connect, the port is bound, and messages a
crash left unanswered are answered in the background (``Engine.start``); ``/healthz`` says how
many answers are in progress or waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from supportbot import http_limits, metrics
from supportbot.adapters.base import Adapter
from supportbot.config import Settings
from supportbot.engine import Engine
from supportbot.knowledge.importing.schedule import ScheduledRefresh

log = logging.getLogger("supportbot.server")


def build_adapters(engine: Engine, settings: Settings) -> list[Adapter]:
    adapters: list[Adapter] = []
    if settings.slack_configured:
        from supportbot.adapters.slack import SlackAdapter

        adapters.append(SlackAdapter(engine, settings, backlog=settings.slack_backlog))
    if settings.telegram_configured:
        from supportbot.adapters.telegram import TelegramAdapter

        adapters.append(TelegramAdapter(engine, settings))
    return adapters


def create_app(engine: Engine, adapters: list[Adapter]) -> Starlette:
    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({
            "status": "ok",
            "adapters": [a.name for a in adapters],
            "backlog": engine.backlog(),  # answers in progress or waiting, recovery included
        })

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        for adapter in adapters:
            await adapter.start()
        engine.start()  # recovery runs in the background: the port is bound right after this
        refresh = ScheduledRefresh.start(engine.settings)  # SUPPORTBOT_KNOWLEDGE_REFRESH_HOURS
        try:
            yield
        finally:
            await refresh.stop()
            for adapter in reversed(adapters):
                await adapter.stop()

    token = engine.settings.metrics_token
    metrics_endpoint = metrics.endpoint(token.get_secret_value() if token else None)
    routes = [Route("/healthz", healthz), Route("/metrics", metrics_endpoint)]
    for adapter in adapters:
        routes.extend(adapter.routes())
    return Starlette(routes=routes, lifespan=lifespan,
                     middleware=http_limits.middleware(engine.settings))


async def run_server(settings: Settings, *, host: str, port: int) -> None:
    engine = await Engine.open(settings)
    try:
        adapters = build_adapters(engine, settings)
        if not adapters:
            log.warning(
                "no platform adapter configured (set SUPPORTBOT_SLACK_BOT_TOKEN or "
                "SUPPORTBOT_TELEGRAM_BOT_TOKEN); serving /healthz only"
            )
        app = create_app(engine, adapters)
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                **http_limits.server_options(settings))
        server = uvicorn.Server(config)
        log.info("listening", extra={"host": host, "port": port})
        await server.serve()
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await engine.aclose()
