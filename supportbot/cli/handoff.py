"""``supportbot handoff``: try the handoff phrases and business hours before customers do."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from supportbot.config import Settings
from supportbot.handoff import BusinessHours, HandoffDetector, check_phrases
from supportbot.language import detect_language

_phrases_option = click.option(
    "--phrases",
    "phrases",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Phrases file (default: <SUPPORTBOT_PROMPTS_DIR>/handoff_phrases.yaml).",
)


def _phrases_path(phrases: Path | None) -> Path:
    return phrases if phrases is not None else Settings().prompts_dir / "handoff_phrases.yaml"


@click.group()
def handoff() -> None:
    """Tune the phrases that hand a thread to a human, and check business hours."""


@handoff.command("test")
@click.argument("texts", nargs=-1)
@_phrases_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message.")
def test_cmd(texts: tuple[str, ...], phrases: Path | None, as_json: bool) -> None:
    """Would these messages hand off? Reads one message per line from stdin without TEXT."""
    path = _phrases_path(phrases)
    detector = HandoffDetector.load(path)
    for problem in detector.problems:
        click.echo(f"warning: {problem}", err=True)
    messages = texts or tuple(line.rstrip("\r\n") for line in sys.stdin)
    for text in messages:
        if not text.strip():
            continue
        result = detector.detect(text)
        if as_json:
            record = {"text": text, "handoff": result.handoff, "reason": result.reason}
            click.echo(json.dumps(record, ensure_ascii=False))
        else:
            verdict = "HANDOFF" if result.handoff else "bot    "
            lang = detect_language(text)
            where = f"  (line {result.line})" if result.line else ""
            click.echo(f"{verdict}  [{lang}] {text}\n         {result.reason}{where}")


@handoff.command("check")
@_phrases_option
def check_cmd(phrases: Path | None) -> None:
    """Report mistakes in the phrases file as file:line; exit status 1 if there are any."""
    path = _phrases_path(phrases)
    problems = check_phrases(path)
    for problem in problems:
        click.echo(str(problem))
    if problems:
        raise SystemExit(1)
    detector = HandoffDetector.load(path)
    click.echo(f"{path}: OK, {detector.rule_count} phrases")


@handoff.command("hours")
@click.option("--spec", default=None, help="Business hours (default: SUPPORTBOT_BUSINESS_HOURS).")
@click.option("--tz", default=None, help="Time zone (default: SUPPORTBOT_TIMEZONE).")
@click.option("--at", "at", default=None, help="ISO time to check instead of now.")
def hours_cmd(spec: str | None, tz: str | None, at: str | None) -> None:
    """Are staff around now (or --at), and when do they come back?"""
    if spec is None or tz is None:
        settings = Settings()
        spec = settings.business_hours if spec is None else spec
        tz = settings.timezone if tz is None else tz
    try:
        hours = BusinessHours.parse(spec, tz)
        now = datetime.fromisoformat(at) if at else datetime.now(UTC)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if hours.is_open(now):
        click.echo(f"open ({hours.describe()})")
        return
    nxt = hours.next_open(now)
    when = nxt.isoformat(timespec="minutes") if nxt else "never"
    click.echo(f"closed ({hours.describe()}); opens {when}")
