"""``supportbot`` command line: chat, serve, check, and the staff tools."""

from __future__ import annotations

import click
from pydantic import ValidationError

from supportbot.cli.app import chat, check, serve
from supportbot.cli.common import LazyGroup, settings_error
from supportbot.cli.init import init

# the staff tools are imported when run: serve binds its port without paying for them
LAZY = {
    "conversations": "supportbot.cli.conversations:conversations",
    "report": "supportbot.cli.report:report",
    "export": "supportbot.cli.data:export",
    "purge": "supportbot.cli.data:purge",
    "handoff": "supportbot.cli.handoff:handoff",
    "knowledge": "supportbot.cli.knowledge:knowledge",
}


@click.group(cls=LazyGroup, lazy=LAZY, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="supportbot")
def cli() -> None:
    """A customer-support bot for Slack and Telegram that answers from your FAQ."""


cli.add_command(init)
cli.add_command(chat)
cli.add_command(check)
cli.add_command(serve)


def main() -> None:
    try:
        cli()
    except ValidationError as exc:  # a command that read Settings() itself: still one line
        settings_error(exc)
        raise SystemExit(2) from None
