"""The system prompt and the bot's own words, as files staff edit while the bot runs.

Jinja's ``auto_reload`` recompiles a template whose file changed; when the new version is broken
we log it and keep rendering the last good one, so a typo never takes the bot down.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateSyntaxError,
)

from supportbot.problems import Problem

log = logging.getLogger("supportbot.prompts")

SYSTEM_TEMPLATE = "system.md.j2"
MESSAGE_NAMES = (
    "dont_know",
    "llm_failed",
    "handoff_requested",
    "handoff_after_hours",
    "handoff_still_waiting",
    "handed_back",
    "closed",
    "new_conversation",
    "message_truncated",
    "greeting",
    "help",
    "text_only",
    "rate_limited",
    "budget_exhausted",
    "feedback_thanks",
    "feedback_refused",
)


@dataclass(frozen=True, slots=True)
class Snippet:
    id: str
    title: str
    text: str
    url: str | None = None


def sample_context() -> dict[str, Any]:
    """Values for every documented variable, used by ``check`` to render templates once."""
    return {
        "bot_name": "Ada",
        "company_name": "Acme",
        "customer_name": "Sam",
        "platform": "cli",
        "language": "en",
        "now": datetime(2026, 1, 1, 9, 0),
        "timezone": "UTC",
        "snippets": [Snippet("faq-1", "Question", "Answer", "https://example.com")],
        "handoff_marker": "[[HANDOFF]]",
        "business_hours": "Mon-Fri 09:00-18:00",
        "next_open": datetime(2026, 1, 2, 9, 0),
        "limit": 4000,
    }


class PromptLibrary:
    def __init__(self, directory: Path, *, defaults: dict[str, Any] | None = None) -> None:
        self.directory = Path(directory)
        self.defaults = defaults or {}
        self.env = Environment(
            loader=FileSystemLoader(self.directory),
            undefined=StrictUndefined,
            autoescape=False,
            auto_reload=True,
            keep_trailing_newline=False,
        )
        self._last_good: dict[str, Template] = {}
        self._messages: dict[str, dict[str, Template]] = {}
        self._messages_mtime: dict[str, float] = {}

    # --- system prompt ------------------------------------------------------------------

    def render_system(self, platform: str, **context: Any) -> str:
        """Render ``<platform>.md.j2`` when staff provided one, else ``system.md.j2``."""
        name = f"{platform}.md.j2"
        if not (self.directory / name).is_file():
            name = SYSTEM_TEMPLATE
        values = {**self.defaults, "platform": platform, **context}
        try:
            template = self.env.get_template(name)
            text = template.render(values)
        except Exception as exc:  # a template may raise anything when rendered
            last = self._last_good.get(name)
            log.error("prompt template %s is broken, serving the last good version: %s",
                      name, _describe(exc))
            if last is None:
                raise
            return last.render(values).strip()
        self._last_good[name] = template
        return text.strip()

    # --- the bot's own words -------------------------------------------------------------

    def message(self, name: str, language: str = "en", **context: Any) -> str:
        """One of the bot's own messages in the customer's language (English when missing)."""
        values = {"next_open": None, "customer_name": "", "limit": 0, "timezone": "UTC",
                  **self.defaults, **context}
        for lang in _language_chain(language):
            template = self._message_templates(lang).get(name)
            if template is not None:
                try:
                    return " ".join(template.render(values).split())
                except Exception as exc:  # a template may raise anything when rendered
                    log.error("message %s (%s) failed to render: %s", name, lang, exc)
        return name

    def _message_templates(self, lang: str) -> dict[str, Template]:
        path = self.directory / "messages" / f"{lang}.yaml"
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return self._messages.get(lang, {})
        if self._messages_mtime.get(lang) != mtime:
            self._messages_mtime[lang] = mtime
            templates, problems = _load_messages(self.env, path)
            for problem in problems:
                log.error("%s (keeping the last good version)", problem)
            if not problems:
                self._messages[lang] = templates
            else:  # keep what was good before, take what parses now
                self._messages[lang] = {**self._messages.get(lang, {}), **templates}
        return self._messages.get(lang, {})

    # --- supportbot check ----------------------------------------------------------------

    def check(self) -> list[Problem]:
        problems: list[Problem] = []
        if not (self.directory / SYSTEM_TEMPLATE).is_file():
            problems.append(Problem(self.directory / SYSTEM_TEMPLATE, 0, "missing system prompt"))
        for path in sorted(self.directory.rglob("*.j2")):
            name = path.relative_to(self.directory).as_posix()
            try:
                template = self.env.get_template(name)
                if "/" not in name:  # top-level templates are rendered; partials via include
                    template.render({**sample_context(), **self.defaults})
            except TemplateSyntaxError as exc:
                problems.append(Problem(exc.filename or path, exc.lineno or 0, exc.message or ""))
            except Exception as exc:  # a template may raise anything when rendered
                file, line = _template_location(exc, path)
                problems.append(Problem(file, line, str(exc)))
        for path in sorted((self.directory / "messages").glob("*.yaml")):
            templates, found = _load_messages(self.env, path)
            problems.extend(found)
            if path.stem == "en":
                problems.extend(
                    Problem(path, 0, f"missing message {name!r}")
                    for name in MESSAGE_NAMES
                    if name not in templates and not any(p.path == path for p in found)
                )
        return problems


def _language_chain(language: str) -> list[str]:
    base = (language or "en").lower().replace("_", "-").split("-")[0]
    return [base] if base == "en" else [base, "en"]


def _load_messages(env: Environment, path: Path) -> tuple[dict[str, Template], list[Problem]]:
    problems: list[Problem] = []
    try:
        source = path.read_text(encoding="utf-8")
        node = yaml.compose(source)
    except (OSError, UnicodeDecodeError) as exc:
        return {}, [Problem(path, 0, f"cannot read: {exc}")]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        return {}, [Problem(path, line, f"invalid YAML: {getattr(exc, 'problem', exc)}")]
    if node is None:
        return {}, []
    if not isinstance(node, yaml.MappingNode):
        return {}, [Problem(path, node.start_mark.line + 1, "expected a mapping of name: text")]
    templates: dict[str, Template] = {}
    for key_node, value_node in node.value:
        name = key_node.value
        line = value_node.start_mark.line + 1
        if name not in MESSAGE_NAMES:
            problems.append(Problem(path, key_node.start_mark.line + 1,
                                    f"unknown message {name!r}"))
            continue
        if not isinstance(value_node, yaml.ScalarNode):
            problems.append(Problem(path, line, f"message {name!r} must be text"))
            continue
        try:
            template = env.from_string(value_node.value)
            template.render({**sample_context()})
        except TemplateSyntaxError as exc:
            problems.append(Problem(path, line + (exc.lineno or 1) - 1, exc.message or ""))
            continue
        except Exception as exc:  # a template may raise anything when rendered
            problems.append(Problem(path, line, str(exc)))
            continue
        templates[name] = template
    return templates, problems


def _template_location(exc: BaseException, fallback: Path) -> tuple[str, int]:
    """The template file and line where a render error happened (Jinja keeps them in the
    traceback frames it rewrites)."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(".j2"):
            return frame.filename, frame.lineno or 0
    return str(fallback), 0


def _describe(exc: Exception) -> str:
    if isinstance(exc, TemplateSyntaxError):
        return f"{exc.filename}:{exc.lineno}: {exc.message}"
    file, line = _template_location(exc, Path("?"))
    return f"{file}:{line}: {exc}"
