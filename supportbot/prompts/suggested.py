"""Suggested prompts: the questions offered when a customer opens a new assistant thread.

Staff edit them like the bot's other words: ``suggested_prompts.yaml`` in the configured prompts
folder replaces the package's file (``supportbot/defaults/prompts/suggested_prompts.yaml``). The
file is keyed by language; each prompt is a ``title`` (the button) and a ``message`` (the
question sent when it is clicked). It is re-read when it changes; a broken edit is logged and the
last good lists stay in use, so a typo never empties the panel. ``supportbot check`` reports
every mistake with file and line.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from supportbot import defaults as package
from supportbot.problems import Problem
from supportbot.prompts.library import YAML_LOADER

log = logging.getLogger("supportbot.prompts")

FILENAME = "suggested_prompts.yaml"
#: Slack shows at most four suggested prompts in a thread
MAX_PROMPTS = 4
MAX_TITLE = 100
MAX_MESSAGE = 1000
_LANGUAGE = re.compile(r"[a-z]{2,3}")


@dataclass(frozen=True, slots=True)
class SuggestedPrompt:
    title: str
    message: str

    def as_slack(self) -> dict[str, str]:
        """The shape ``assistant.threads.setSuggestedPrompts`` takes."""
        return {"title": self.title, "message": self.message}


def load_suggested_prompts(path: Path) -> tuple[dict[str, list[SuggestedPrompt]], list[Problem]]:
    """Every valid language list in ``path``, and a problem (file, line) for everything else."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=YAML_LOADER)
    except (OSError, UnicodeDecodeError) as exc:
        return {}, [Problem(path, 0, f"cannot read: {exc}")]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return {}, [Problem(path, mark.line + 1 if mark else 0,
                            f"invalid YAML: {getattr(exc, 'problem', exc)}")]
    if node is None:
        return {}, [Problem(path, 0, "empty: expected language codes with lists of prompts")]
    if not isinstance(node, yaml.MappingNode):
        return {}, [Problem(path, node.start_mark.line + 1,
                            "expected a mapping of language code: list of prompts")]
    lists: dict[str, list[SuggestedPrompt]] = {}
    problems: list[Problem] = []
    for key, value in node.value:
        line = key.start_mark.line + 1
        lang = str(key.value)
        if not isinstance(key, yaml.ScalarNode) or not _LANGUAGE.fullmatch(lang):
            problems.append(Problem(path, line, f"{lang!r} is not a language code like en or zh"))
            continue
        if not isinstance(value, yaml.SequenceNode) or not value.value:
            problems.append(Problem(path, value.start_mark.line + 1,
                                    f"{lang}: expected a list of prompts (title and message)"))
            continue
        if len(value.value) > MAX_PROMPTS:
            problems.append(Problem(path, value.value[MAX_PROMPTS].start_mark.line + 1,
                                    f"{lang}: Slack shows at most {MAX_PROMPTS} prompts"))
        prompts = [p for item in value.value[:MAX_PROMPTS]
                   if (p := _prompt(path, lang, item, problems)) is not None]
        if prompts:
            lists[lang] = prompts
    if "en" not in lists and not any(p.message.startswith("en:") for p in problems):
        problems.append(Problem(path, 1, "no valid 'en' list: English is the fallback for "
                                         "every other language"))
    return lists, problems


def _prompt(path: Path, lang: str, item: yaml.Node,
            problems: list[Problem]) -> SuggestedPrompt | None:
    line = item.start_mark.line + 1
    if not isinstance(item, yaml.MappingNode):
        problems.append(Problem(path, line, f"{lang}: a prompt needs a title and a message"))
        return None
    fields: dict[str, str] = {}
    reported = len(problems)
    for key, value in item.value:
        name = str(key.value)
        if name not in ("title", "message"):
            problems.append(Problem(path, key.start_mark.line + 1,
                                    f"{lang}: unknown field {name!r} (title, message)"))
            continue
        text = str(value.value).strip() if isinstance(value, yaml.ScalarNode) else ""
        limit = MAX_TITLE if name == "title" else MAX_MESSAGE
        if not text or len(text) > limit:
            problems.append(Problem(path, value.start_mark.line + 1,
                                    f"{lang}: {name} must be text of 1-{limit} characters"))
            continue
        fields[name] = " ".join(text.split())
    missing = [f for f in ("title", "message") if f not in fields]
    if missing:
        if len(problems) == reported:  # not already explained by a bad field above
            problems.append(Problem(path, line, f"{lang}: prompt without {' or '.join(missing)}"))
        return None
    return SuggestedPrompt(fields["title"], fields["message"])


def check_suggested_prompts(prompts_dir: Path | str | None) -> list[Problem]:
    """For ``supportbot check``: mistakes in the suggested prompts file in use."""
    return load_suggested_prompts(package.resolve(prompts_dir, FILENAME).path)[1]


class SuggestedPrompts:
    """The prompts for one language from the file in use, re-read when it changes."""

    def __init__(self, prompts_dir: Path | str | None = None) -> None:
        self.prompts_dir = prompts_dir
        self._mtime: tuple[Path, float] | None = None
        self._lists: dict[str, list[SuggestedPrompt]] = {}

    def for_language(self, language: str | None) -> list[SuggestedPrompt]:
        """The list for ``language`` (``zh-CN`` means ``zh``), else English, else none."""
        lists = self._current()
        base = (language or "en").lower().replace("_", "-").split("-")[0]
        return lists.get(base) or lists.get("en") or []

    def _current(self) -> dict[str, list[SuggestedPrompt]]:
        path = package.resolve(self.prompts_dir, FILENAME).path
        try:
            stamp = (path, path.stat().st_mtime)
        except OSError:
            return self._lists
        if stamp != self._mtime:
            self._mtime = stamp
            lists, problems = load_suggested_prompts(path)
            for problem in problems:
                log.error("%s (using the valid lists and the last good ones)", problem)
            self._lists = {**self._lists, **lists}
        return self._lists
