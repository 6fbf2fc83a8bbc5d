"""Shared CLI plumbing: settings, logging and running the engine.

The engine (and with it the storage layer, the knowledge index, the LLM client) is imported
only by the commands that run it: ``supportbot serve`` binds its port before that import, so
``/healthz`` answers within a moment of start whatever the engine costs to load."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import ValidationError

from supportbot import logs
from supportbot.config import Settings

if TYPE_CHECKING:
    from supportbot.engine import Engine

T = TypeVar("T")
log = logging.getLogger("supportbot.cli")


class LazyGroup(click.Group):
    """A command group whose subcommands are imported only when one is run (or ``--help`` lists
    them): ``supportbot serve`` then never pays for the staff tools' imports (the storage layer,
    the knowledge index) before it binds its port. ``lazy`` maps a name to ``module:attribute``.
    """

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)


def settings_error(exc: ValidationError) -> None:
    """Print each bad setting as one line that names it (never the rejected value)."""
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:  # a field's own error; whole-model checks name the setting
            name = "SUPPORTBOT_" + "_".join(str(p) for p in error["loc"]).upper()
            message = f"{name}: {message}"
        click.echo(message, err=True)


def load_settings(*, announce_files: bool = False, **overrides: object) -> Settings:
    """Settings from the environment, ``.env`` and command-line options; a bad value is one
    line naming the setting (exit status 2), never a traceback. ``announce_files`` logs which
    prompt and knowledge files are in use (package defaults or overrides) at start-up."""
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        settings_error(exc)
        raise SystemExit(2) from None
    logs.setup(settings.log_level, settings.log_format, settings.secrets())
    if announce_files:
        from supportbot.checks import files_in_use

        log.info("files in use: %s", "; ".join(files_in_use(settings)))
    return settings


def require_database(settings: Settings) -> None:
    """Exit with one line (status 2) when the database cannot be opened."""
    from supportbot.database_url import unreachable

    problem = asyncio.run(unreachable(settings.resolved_database_url, settings.database_setting))
    if problem is not None:
        click.echo(problem, err=True)
        raise SystemExit(2)


def with_engine(settings: Settings, work: Callable[[Engine], Awaitable[T]]) -> T:
    from supportbot.database_url import unreachable
    from supportbot.engine import Engine

    async def run() -> T:
        problem = await unreachable(settings.resolved_database_url, settings.database_setting)
        if problem is not None:
            click.echo(problem, err=True)
            raise SystemExit(2)
        engine = await Engine.open(settings)
        try:
            return await work(engine)
        finally:
            await engine.aclose()

    return asyncio.run(run())
