"""``supportbot handoff``: try the handoff rules and business hours before customers do."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from supportbot import defaults
from supportbot.config import Settings
from supportbot.handoff import BusinessHours, HandoffDetector, check_phrases, default_rules_path
from supportbot.handoff.model import model_path
from supportbot.handoff.scoring import load_examples, score
from supportbot.handoff.training import MAX_FPR, train_model
from supportbot.language import detect_language

_phrases_option = click.option(
    "--phrases",
    "phrases",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Rules file that extends the built-in ones (default: "
    "<SUPPORTBOT_PROMPTS_DIR>/handoff_phrases.yaml, else the package's starter file).",
)
_defaults_option = click.option(
    "--no-defaults", "no_defaults", is_flag=True,
    help="Ignore the rules built into supportbot (test the project file alone).",
)
_model_option = click.option(
    "--model", "model", default=None,
    help="The model that decides what no rule does: builtin, off or a weights file "
    "(default: SUPPORTBOT_HANDOFF_MODEL, builtin).",
)


def _phrases_path(phrases: Path | None) -> Path:
    """``--phrases``, else the file the engine uses: the prompts folder's, else the package's."""
    if phrases is not None:
        return phrases
    return defaults.resolve(Settings().prompts_dir, "handoff_phrases.yaml").path


def _detector(phrases: Path | None, no_defaults: bool, model: str | None) -> HandoffDetector:
    """The detector the bot would use, after saying on stderr which files it read."""
    path = _phrases_path(phrases)
    weights = model_path(Settings().handoff_model if model is None else model)
    detector = HandoffDetector.load(path, defaults=not no_defaults, model=weights)
    for problem in detector.problems:
        click.echo(f"warning: {problem}", err=True)
    if phrases is not None and not path.exists():
        click.echo(f"warning: {path}: phrases file not found", err=True)
    read = ", ".join(detector.sources) or "no rules"
    note = "" if path.exists() else f" ({path} not found: built-in rules only)"
    click.echo(f"rules: {read}{note}", err=True)
    click.echo(f"model: {detector.model.path if detector.model else 'off'}", err=True)
    return detector


@click.group()
def handoff() -> None:
    """Tune the rules that hand a thread to a human, and check business hours."""


@handoff.command("test")
@click.argument("texts", nargs=-1)
@_phrases_option
@_defaults_option
@_model_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message.")
def test_cmd(texts: tuple[str, ...], phrases: Path | None, no_defaults: bool, model: str | None,
             as_json: bool) -> None:
    """Would these messages hand off, and which rule (or the model) decides? Reads one message
    per line from stdin without TEXT."""
    detector = _detector(phrases, no_defaults, model)
    messages = texts or tuple(line.rstrip("\r\n") for line in sys.stdin)
    for text in messages:
        if not text.strip():
            continue
        result = detector.detect(text)
        if as_json:
            record = {"text": text, "handoff": result.handoff, "reason": result.reason,
                      "matched": result.matched, "file": result.path, "line": result.line}
            click.echo(json.dumps(record, ensure_ascii=False))
        else:
            verdict = "HANDOFF" if result.handoff else "bot    "
            lang = detect_language(text)
            where = f"  ({Path(result.path).name} line {result.line})" if result.line else ""
            words = f'  matched "{result.matched}"' if result.matched else ""
            if result.reason.startswith("model:"):
                where, words = f"  ({Path(result.path).name})", f"\n         {result.matched}"
            click.echo(f"{verdict}  [{lang}] {text}\n         {result.reason}{where}{words}")


@handoff.command("score")
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_phrases_option
@_defaults_option
@_model_option
@click.option("--split", default=None, help="Only examples of this split (e.g. score).")
@click.option("--json", "as_json", is_flag=True, help="Per-language figures as JSON.")
@click.option("--show", is_flag=True, help="List the misses and false positives.")
def score_cmd(dataset: Path, phrases: Path | None, no_defaults: bool, model: str | None,
              split: str | None, as_json: bool, show: bool) -> None:
    """Recall and false-positive rate per language on a labelled JSON Lines file
    ({"text", "lang", "handoff": true|false, "split"})."""
    detector = _detector(phrases, no_defaults, model)
    try:
        examples = load_examples(dataset, split)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    table = score(detector, examples)
    if as_json:
        rows = [s.as_dict() for s in table.values()]
        if not show:
            for row in rows:
                row.pop("misses"), row.pop("false_positives")
        click.echo(json.dumps(rows, ensure_ascii=False, indent=1))
        return
    click.echo(f"{'lang':6} {'asks':>5} {'recall':>7} {'other':>6} {'FPR':>7}")
    for s in table.values():
        recall = "-" if s.recall is None else f"{s.recall:.3f}"
        fpr = "-" if s.fpr is None else f"{s.fpr:.2%}"
        click.echo(f"{s.lang:6} {s.positives:5} {recall:>7} {s.negatives:6} {fpr:>7}")
        if show:
            for text in s.misses:
                click.echo(f"   miss: {text}")
            for text, reason in s.false:
                click.echo(f"   false: {text}  <- {reason}")


@handoff.command("train")
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Weights file to write; point SUPPORTBOT_HANDOFF_MODEL at it.")
@_phrases_option
@click.option("--split", default=None, help="Only examples of this split (e.g. tune).")
@click.option("--max-fpr", "max_fpr", type=click.FloatRange(0.0, 0.5), default=MAX_FPR,
              show_default=True, help="Share of other messages allowed to hand off "
              "(measured by 5-fold cross-validation on DATASET).")
def train_cmd(dataset: Path, out: Path, phrases: Path | None, split: str | None,
              max_fpr: float) -> None:
    """Train the handoff model on labelled messages ({"text", "lang", "handoff"}), e.g. the
    package's dev set plus your own conversations. Needs a few hundred of each kind."""
    detector = _detector(phrases, False, "off")
    try:
        examples = load_examples(dataset, split)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    asks = sum(e.handoff for e in examples)
    if asks < 20 or len(examples) - asks < 20:
        raise click.UsageError(f"{dataset}: {asks} requests and {len(examples) - asks} other "
                               "messages: need at least 20 of each (a few hundred to be useful)")
    model, report = train_model(examples, detector.vetoed, max_fpr=max_fpr)
    model.save(out)
    click.echo(f"{out}: {len(model.weights)} features, threshold {model.threshold:.4f}")
    click.echo("out-of-fold (5 folds): " + ", ".join(
        f"{lang} recall {r['recall']:.3f} FPR {r['fpr']:.2%}"
        for lang, r in report["out_of_fold"].items()))


@handoff.command("check")
@_phrases_option
def check_cmd(phrases: Path | None) -> None:
    """Report mistakes in the rules file as file:line; exit status 1 if there are any."""
    path = _phrases_path(phrases)
    if not path.exists() and phrases is None:
        detector = HandoffDetector.load(None)
        click.echo(f"{path} not found: built-in rules only ({detector.rule_count} rules in "
                   f"{default_rules_path()})")
        return
    problems = check_phrases(path)
    for problem in problems:
        click.echo(str(problem))
    if problems:
        raise SystemExit(1)
    detector = HandoffDetector.load(path)
    click.echo(f"{path}: OK, {detector.rule_count} rules with the built-in ones")


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
