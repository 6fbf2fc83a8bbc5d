"""``supportbot init [DIR]``: a project folder that works as it is and shows what to edit.

It copies the package's own defaults (prompts, the bot's messages, handoff phrases, the example
FAQ) so staff edit real files instead of starting from nothing, and adds ``.env.example`` (every
setting, commented out, with its default) and a ``Procfile`` for Heroku-style platforms. Files
that exist are never overwritten without ``--force``: ``init`` is safe to run twice.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr

from supportbot import defaults
from supportbot.config import Settings

PROCFILE = "web: supportbot serve --port $PORT\n"

_ENV_HEADER = """\
# supportbot settings: copy this file to .env (or set the variables in your platform's
# dashboard) and uncomment what you change. Every value shown is the default.
# DATABASE_URL (as Heroku, Render and Fly set it) is read when SUPPORTBOT_DATABASE_URL is unset;
# sqlite:///file.db, postgres://… and postgresql://… are accepted as written.
"""


def env_name(field: str) -> str:
    """The environment variable that sets one field of :class:`Settings`."""
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else f"SUPPORTBOT_{field.upper()}"


def _shown(value: Any) -> str:
    if value is None or isinstance(value, SecretStr):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def env_example() -> str:
    """``.env.example``: every setting, commented out, with its default (derived from
    :class:`Settings`, so a new setting can never be forgotten here)."""
    lines = [_ENV_HEADER]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        lines.append(f"# {env_name(name)}={_shown(default)}")
    return "\n".join(lines) + "\n"


def scaffold(directory: Path) -> dict[Path, bytes]:
    """Every file ``init`` writes, relative to ``directory``."""
    files: dict[Path, bytes] = {}
    for rel in defaults.prompt_files():
        files[Path("prompts") / rel] = (defaults.PROMPTS / rel).read_bytes()
    for rel in defaults.knowledge_files():
        files[Path("knowledge") / rel] = (defaults.KNOWLEDGE / rel).read_bytes()
    files[Path(".env.example")] = env_example().encode()
    files[Path("Procfile")] = PROCFILE.encode()
    return files


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def init(directory: Path, force: bool) -> None:
    """Create a project folder: prompts, the bot's messages, handoff phrases, an example FAQ,
    .env.example and a Procfile. Then run `supportbot chat` in it."""
    files = scaffold(directory)
    existing = sorted(rel.as_posix() for rel in files if (directory / rel).exists())
    if existing and not force:
        click.echo(f"{directory}: {len(existing)} file(s) already exist, nothing written "
                   "(use --force to overwrite):", err=True)
        for rel in existing:
            click.echo(f"  {rel}", err=True)
        sys.exit(1)
    for rel, content in files.items():
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    where = "" if directory.resolve() == Path.cwd().resolve() else f"cd {directory} && "
    click.echo(f"Created {len(files)} file(s) in {directory}"
               f"{f' ({len(existing)} overwritten)' if existing else ''}.\n"
               f"Next: {where}supportbot chat   (then edit knowledge/ and prompts/; "
               "supportbot check validates them)")
