"""Shared CLI plumbing: settings, logging and running the engine."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
from pydantic import ValidationError

from supportbot import logs
from supportbot.config import Settings
from supportbot.engine import Engine

T = TypeVar("T")


def load_settings(**overrides: object) -> Settings:
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        for error in exc.errors():
            name = "SUPPORTBOT_" + "_".join(str(p) for p in error["loc"]).upper()
            click.echo(f"{name}: {error['msg']}", err=True)
        raise SystemExit(2) from None
    logs.setup(settings.log_level, settings.log_format, settings.secrets())
    return settings


def with_engine(settings: Settings, work: Callable[[Engine], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = await Engine.open(settings)
        try:
            return await work(engine)
        finally:
            await engine.aclose()

    return asyncio.run(run())
