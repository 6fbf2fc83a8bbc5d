"""Running the bot: ``chat``, ``serve`` and the pre-flight ``check``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from supportbot.cli.common import load_settings, require_database, with_engine


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per bot reply.")
@click.option("--thread", help="Conversation key (default: your user name).")
@click.option("--name", "customer", help="Customer id and display name.")
@click.option("--knowledge-dir", type=click.Path(path_type=Path), help="FAQ folder.")
@click.option("--prompts-dir", type=click.Path(path_type=Path), help="Prompt templates folder.")
def chat(as_json: bool, thread: str | None, customer: str | None, knowledge_dir: Path | None,
         prompts_dir: Path | None) -> None:
    """Talk to the bot in the terminal (or pipe one message per line)."""
    from supportbot.adapters.terminal import _whoami, run_chat

    settings = load_settings(knowledge_dir=knowledge_dir, prompts_dir=prompts_dir,
                             log_level=None if as_json else "WARNING")
    customer = customer or _whoami()
    code = with_engine(
        settings,
        lambda engine: run_chat(engine, thread=thread or customer, customer=customer,
                                as_json=as_json),
    )
    sys.exit(code)


@click.command()
@click.option("--knowledge-dir", type=click.Path(path_type=Path), help="FAQ folder.")
@click.option("--prompts-dir", type=click.Path(path_type=Path), help="Prompt templates folder.")
def check(knowledge_dir: Path | None, prompts_dir: Path | None) -> None:
    """Validate settings, prompt templates and FAQ files; print file:line: message."""
    from supportbot.checks import run_checks

    settings = load_settings(knowledge_dir=knowledge_dir, prompts_dir=prompts_dir)
    problems, summary = run_checks(settings)
    for problem in problems:
        click.echo(str(problem))
    if problems:
        click.echo(f"{len(problems)} problem(s) found.", err=True)
        sys.exit(1)
    click.echo(summary)


@click.command()
@click.option("--host", help="Address to bind (default SUPPORTBOT_HOST or 0.0.0.0).")
@click.option("--port", type=int, help="Port (default $PORT or 8080).")
def serve(host: str | None, port: int | None) -> None:
    """Run the configured platform adapters and the HTTP server (/healthz)."""
    from supportbot.server import run_server

    settings = load_settings(announce_files=True)
    require_database(settings)
    try:
        asyncio.run(run_server(settings, host=host or settings.host, port=port or settings.port))
    except ValueError as exc:  # an adapter refused its configuration
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(2)
