"""``supportbot serve``: the HTTP server (``/healthz``, ``/metrics`` and each adapter's routes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from supportbot import metrics
from supportbot.adapters.base import Adapter
from supportbot.config import Settings
from supportbot.engine import Engine

log = logging.getLogger("supportbot.server")


def build_adapters(engine: Engine, settings: Settings) -> list[Adapter]:
    adapters: list[Adapter] = []
    if settings.slack_configured:
        from supportbot.adapters.slack import SlackAdapter

        adapters.append(SlackAdapter(engine, settings, workers=settings.slack_workers,
                                     backlog=settings.slack_backlog))
    if settings.telegram_configured:
        from supportbot.adapters.telegram import TelegramAdapter

        adapters.append(TelegramAdapter(engine, settings))
    return adapters


def create_app(engine: Engine, adapters: list[Adapter]) -> Starlette:
    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "adapters": [a.name for a in adapters]})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        for adapter in adapters:
            await adapter.start()
        engine.start_background()
        recovered = await engine.recover()
        if any(recovered.values()):
            log.info("recovered unanswered messages", extra=recovered)
        try:
            yield
        finally:
            for adapter in reversed(adapters):
                await adapter.stop()

    async def metrics_endpoint(_: Request) -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    routes = [Route("/healthz", healthz), Route("/metrics", metrics_endpoint)]
    for adapter in adapters:
        routes.extend(adapter.routes())
    return Starlette(routes=routes, lifespan=lifespan)


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
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
        server = uvicorn.Server(config)
        log.info("listening", extra={"host": host, "port": port})
        await server.serve()
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await engine.aclose()
