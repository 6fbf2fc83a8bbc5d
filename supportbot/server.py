"""``supportbot serve``: the HTTP server (``/healthz``, ``/readyz``, ``/metrics`` and each
adapter's routes).

Start-up never keeps the port closed: ``supportbot serve`` binds it first and answers
``/healthz`` (``"status": "starting"``) while the engine opens (imports, migrations, the FAQ
index) and the adapters connect, so a platform that wants ``$PORT`` bound within a minute gets
it whatever the FAQ size. Messages a crash left unanswered are answered in the background
(``Engine.start``); ``/healthz`` says how many answers are in progress or waiting. A webhook
that arrives while starting waits for it (at most ``DOOR_WAIT`` seconds, within Slack's 3 s),
then gets 503 so the platform delivers it again: nothing is acknowledged before it is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from supportbot import http_limits, metrics
from supportbot.adapters.base import Adapter
from supportbot.config import Settings

if TYPE_CHECKING:
    from supportbot.engine import Engine

log = logging.getLogger("supportbot.server")

DOOR_WAIT = 2.5  # seconds a platform request waits for start-up before it gets 503


def build_adapters(engine: Engine, settings: Settings) -> list[Adapter]:
    adapters: list[Adapter] = []
    if settings.slack_configured:
        from supportbot.adapters.slack import SlackAdapter

        adapters.append(SlackAdapter(engine, settings, backlog=settings.slack_backlog))
    if settings.telegram_configured:
        from supportbot.adapters.telegram import TelegramAdapter

        adapters.append(TelegramAdapter(engine, settings))
    return adapters


def _import_heavy(settings: Settings) -> None:
    """Import the engine and the configured platform SDKs (seconds of CPU on a small host)."""
    importlib.import_module("supportbot.engine")
    if settings.slack_configured:
        importlib.import_module("supportbot.adapters.slack")
    if settings.telegram_configured:
        importlib.import_module("supportbot.adapters.telegram")


class Serving:
    """The state ``/healthz`` and the doors answer from: starting, then the engine and its
    adapters."""

    def __init__(
        self,
        settings: Settings | None = None,
        engine: Engine | None = None,
        adapters: list[Adapter] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.adapters: list[Adapter] = list(adapters or [])
        self.ready = asyncio.Event()
        self.error: BaseException | None = None
        self.server: uvicorn.Server | None = None
        self._owns_engine = engine is None  # opened here, so closed here

    def app(self) -> Starlette:
        settings = self.settings or (self.engine.settings if self.engine is not None else None)
        assert settings is not None, "Serving needs settings or an engine"
        token = settings.metrics_token
        routes = [
            Route("/healthz", self.healthz),
            Route("/readyz", self.readyz),
            Route("/metrics", metrics.endpoint(token.get_secret_value() if token else None)),
        ]
        if self._owns_engine:  # adapters come later: one route answers for all of them
            routes.append(Route("/{path:path}", self.door, methods=["POST"]))
        else:
            for adapter in self.adapters:
                routes.extend(adapter.routes())
        # body cap, body deadline, platform authentication before any adapter code runs
        return Starlette(routes=routes, lifespan=self.lifespan,
                         middleware=http_limits.middleware(settings))

    async def healthz(self, _: Request) -> JSONResponse:
        if not self.ready.is_set() or self.engine is None:
            return JSONResponse({"status": "starting", "adapters": [], "backlog": None})
        return JSONResponse({
            "status": "ok",
            "adapters": [a.name for a in self.adapters],
            "backlog": self.engine.backlog(),  # answers in progress or waiting (recovery too)
        })

    async def readyz(self, _: Request) -> Response:
        if self.ready.is_set():
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "starting"}, status_code=503)

    async def door(self, request: Request) -> Response:
        if not self.ready.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ready.wait(), DOOR_WAIT)
            if not self.ready.is_set():  # not stored, so not acknowledged: delivered again
                return Response(status_code=503, headers={"Retry-After": "5"})
        for adapter in self.adapters:
            for route in adapter.routes():
                if isinstance(route, Route) and route.path == request.url.path and (
                    route.methods is None or request.method in route.methods
                ):
                    response: Response = await route.endpoint(request)
                    return response
        return Response(status_code=404)

    @contextlib.asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        if not self._owns_engine:  # opened already: connect before serving, as callers expect
            await self._open()
            if self.error is not None:
                raise self.error
        opening = asyncio.create_task(self._open()) if self._owns_engine else None
        try:
            yield
        finally:
            if opening is not None:
                opening.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await opening
            if self._owns_engine and self.engine is not None:
                # the adapters still send while the answers in progress finish
                await self.engine.drain(self.engine.settings.shutdown_grace_seconds)
            for adapter in reversed(self.adapters):
                try:
                    await adapter.stop()
                except Exception as exc:
                    log.warning("adapter %s did not stop cleanly: %s", adapter.name,
                                type(exc).__name__)
            if self._owns_engine and self.engine is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self.engine.aclose()

    async def _open(self) -> None:
        try:
            if self.engine is None:
                assert self.settings is not None
                await asyncio.to_thread(_import_heavy, self.settings)  # the loop keeps serving
                from supportbot.engine import Engine

                self.engine = await Engine.open(self.settings)
                self.adapters = build_adapters(self.engine, self.settings)
                if not self.adapters:
                    log.warning(
                        "no platform adapter configured (set SUPPORTBOT_SLACK_BOT_TOKEN or "
                        "SUPPORTBOT_TELEGRAM_BOT_TOKEN); serving /healthz only"
                    )
            for adapter in self.adapters:
                await adapter.start()
            self.engine.start()  # recovery runs in the background; serving never waits for it
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a refused configuration, a database that went away
            self.error = exc
            log.error("could not start: %s", exc)
            if self.server is not None:
                self.server.should_exit = True
            return
        self.ready.set()
        log.info("ready", extra={"adapters": [a.name for a in self.adapters]})


def create_app(engine: Engine, adapters: list[Adapter]) -> Starlette:
    """The app around an engine that is already open (tests, benchmarks): the adapters start
    with the server, and the caller closes the engine."""
    return Serving(engine=engine, adapters=adapters).app()


async def run_server(settings: Settings, *, host: str, port: int) -> None:
    serving = Serving(settings)
    config = uvicorn.Config(serving.app(), host=host, port=port, log_config=None,
                            access_log=False, **http_limits.server_options(settings))
    server = uvicorn.Server(config)
    serving.server = server
    log.info("listening", extra={"host": host, "port": port})
    refresh = None
    if settings.knowledge_refresh_hours > 0:  # re-fetch imported pages (knowledge import)
        from supportbot.knowledge.importing.schedule import ScheduledRefresh

        refresh = ScheduledRefresh.start(settings)
    try:
        await server.serve()
    finally:
        if refresh is not None:
            refresh.cancel()
        # uvicorn re-raises a SIGINT it handled once it has shut down, which asyncio turns
        # into a cancellation of this task: the shutdown is complete, so end normally.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)
    if serving.error is not None:
        raise serving.error
