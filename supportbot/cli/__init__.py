"""``supportbot`` command line: chat, serve, check, and the staff tools."""

from __future__ import annotations

import click
from pydantic import ValidationError

from supportbot.cli.app import chat, check, serve
from supportbot.cli.common import settings_error
from supportbot.cli.conversations import conversations
from supportbot.cli.data import export, purge
from supportbot.cli.init import init
from supportbot.cli.report import report


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="supportbot")
def cli() -> None:
    """A customer-support bot for Slack and Telegram that answers from your FAQ."""


cli.add_command(init)
cli.add_command(chat)
cli.add_command(check)
cli.add_command(serve)
cli.add_command(conversations)
cli.add_command(report)
cli.add_command(export)
cli.add_command(purge)


def _optional_groups() -> None:
    from supportbot.cli.handoff import handoff
    from supportbot.cli.knowledge import knowledge

    cli.add_command(handoff)
    cli.add_command(knowledge)


_optional_groups()


def main() -> None:
    try:
        cli()
    except ValidationError as exc:  # a command that read Settings() itself: still one line
        settings_error(exc)
        raise SystemExit(2) from None
