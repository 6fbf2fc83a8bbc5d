"""The system prompt and the bot's own words, as files staff edit while the bot runs.

Two layers: the package's own files (``supportbot/defaults/prompts``) and the configured prompts
folder, whose files override the package's one by one (same relative path). A template a
staff member adds or edits is never trusted: every template renders in Jinja's immutable
sandbox, so ``{{ cycler.__init__.__globals__ ... }}`` raises a ``SecurityError`` instead of
running code.

Jinja's ``auto_reload`` recompiles a template whose file changed; when the new version is broken
we log it and keep rendering the last good one, so a typo never takes the bot down. A message
that cannot be read or rendered falls back to the package's text, never to its raw key.
"""

from __future__ import annotations

import logging
import re
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateSyntaxError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from supportbot import defaults as package
from supportbot.problems import Problem

log = logging.getLogger("supportbot.prompts")

#: libyaml's parser when PyYAML was built with it (its wheels are): the same nodes and line
#: marks, about ten times faster than the pure-Python one on the eight message files
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

SYSTEM_TEMPLATE = "system.md.j2"
MESSAGE_NAMES = (
    "dont_know",
    "llm_failed",
    "handoff_requested",
    "handoff_after_hours",
    "handoff_still_waiting",
    "handed_back",
    "answer_resumed",
    "closed",
    "new_conversation",
    "message_truncated",
    "greeting",
    "help",
    "text_only",
    "picture_unseen",
    "file_too_large",
    "picture_unreadable",
    "file_unsupported",
    "file_download_failed",
    "file_received",
    "rate_limited",
    "budget_exhausted",
    "feedback_thanks",
    "feedback_refused",
    "feedback_helpful",
    "feedback_not_helpful",
    "staff_take_over",
    "staff_hand_back",
    "staff_close",
    "passage_excerpt",
    "assistant_status",
    "assistant_loading",
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
        # passage_excerpt: an imported help-center passage answered without an LLM
        "title": "Returns and refunds — Refund timing",
        "excerpt": "Refunds are issued within 5 business days.",
        "url": "https://help.example.com/returns",
        # files customers send (file_too_large, file_download_failed, file_received…)
        "filename": "screenshot.png",
        "kind": "sticker",
    }


def sandboxed_environment(loader: FileSystemLoader | None = None) -> ImmutableSandboxedEnvironment:
    """The one way templates are compiled: sandboxed (no private attributes, no mutation of
    the values passed in), strict about undefined variables, no HTML escaping (plain text)."""
    return ImmutableSandboxedEnvironment(
        loader=loader,
        undefined=StrictUndefined,
        autoescape=False,
        auto_reload=True,
        keep_trailing_newline=False,
    )


@dataclass
class _MessageFile:
    mtime: float | None = None
    templates: dict[str, Template] | None = None


class PromptLibrary:
    """Renders prompts and messages from the configured folder over the package defaults.

    ``directory`` is the override folder; ``None`` (or the package folder itself) means the
    package defaults only.
    """

    def __init__(self, directory: Path | str | None = None, *,
                 defaults: dict[str, Any] | None = None,
                 default_dir: Path = package.PROMPTS) -> None:
        self.default_dir = Path(default_dir)
        self.directory = Path(directory) if directory is not None else self.default_dir
        self.defaults = defaults or {}
        self.layers = [self.default_dir]
        if self.directory.resolve() != self.default_dir.resolve():
            self.layers.insert(0, self.directory)  # first match wins: override, then package
        self.env = sandboxed_environment(FileSystemLoader([str(p) for p in self.layers]))
        self._last_good: dict[str, Template] = {}
        self._messages: dict[Path, _MessageFile] = {}

    # --- which files are in use ----------------------------------------------------------

    def resolve(self, relative_path: str) -> package.Resolved:
        return package.resolve(self.directory, relative_path, self.default_dir)

    def files_in_use(self) -> list[tuple[str, package.Resolved]]:
        """Every prompt file the bot reads, with the file that is used for it."""
        names = set(package.prompt_files()) if self.default_dir == package.PROMPTS else set()
        for layer in self.layers:
            names.update(p.relative_to(layer).as_posix() for p in layer.rglob("*")
                         if p.is_file() and p.suffix in (".j2", ".yaml"))
        return [(name, self.resolve(name)) for name in sorted(names)]

    def overrides(self) -> list[str]:
        return [name for name, used in self.files_in_use() if used.source == "override"]

    # --- system prompt ------------------------------------------------------------------

    def render_system(self, platform: str, **context: Any) -> str:
        """Render ``<platform>.md.j2`` when staff provided one, else ``system.md.j2``."""
        name = f"{platform}.md.j2"
        if not any((layer / name).is_file() for layer in self.layers):
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
        """One of the bot's own messages in the customer's language (English when missing).

        Tried in order: the override file for the language, the package's file for it, then
        the same for English; a file that is broken or a template that fails to render is
        skipped, so customers never see a raw key like ``dont_know``.
        """
        values = {"next_open": None, "customer_name": "", "limit": 0, "timezone": "UTC",
                  "bot_name": "", "company_name": "", **self.defaults, **context}
        for lang in _language_chain(language):
            for layer in self.layers:
                template = self._message_templates(layer, lang).get(name)
                if template is None:
                    continue
                try:
                    return one_line(template.render(values))
                except Exception as exc:  # a template may raise anything when rendered
                    log.error("message %s (%s, %s) failed to render: %s", name, lang, layer,
                              exc)
        log.error("no text for message %s in any layer", name)
        return name

    def feedback_labels(self, language: str = "en") -> tuple[str, str]:
        """The 👍/👎 buttons' labels in the customer's language."""
        return (self.message("feedback_helpful", language),
                self.message("feedback_not_helpful", language))

    def _message_templates(self, layer: Path, lang: str) -> dict[str, Template]:
        path = layer / "messages" / f"{lang}.yaml"
        cached = self._messages.setdefault(path, _MessageFile())
        try:
            mtime = path.stat().st_mtime
        except OSError:  # no such file (or deleted by staff): the next layer answers
            cached.mtime, cached.templates = None, None
            return {}
        if cached.mtime != mtime:
            cached.mtime = mtime
            templates, problems = _load_messages(self.env, path)
            for problem in problems:
                log.error("%s (using the last good or the package's text)", problem)
            # keep what was good before, take what parses now
            cached.templates = {**(cached.templates or {}), **templates}
        return cached.templates or {}

    # --- supportbot check ----------------------------------------------------------------

    def check(self) -> list[Problem]:
        problems: list[Problem] = []
        for name, used in self.files_in_use():
            if not name.endswith(".j2"):
                continue
            try:
                template = self.env.get_template(name)
                context = {**sample_context(), **self.defaults}
                if "/" not in name:  # top-level templates are rendered; partials via include
                    template.render(context)
                else:
                    _render_partial_for_safety(template, context)
            except TemplateSyntaxError as exc:
                problems.append(Problem(exc.filename or used.path, exc.lineno or 0,
                                        exc.message or ""))
            except SecurityError as exc:
                file, line = _template_location(exc, used.path)
                problems.append(Problem(file, line, f"unsafe template: {exc}"))
            except Exception as exc:  # a template may raise anything when rendered
                file, line = _template_location(exc, used.path)
                problems.append(Problem(file, line, str(exc)))
        problems.extend(self._check_messages())
        return problems

    def _check_messages(self) -> list[Problem]:
        problems: list[Problem] = []
        files = sorted({p.name for layer in self.layers
                        for p in (layer / "messages").glob("*.yaml")})
        english = self._english_names()
        for filename in files:
            lang = filename.removesuffix(".yaml")
            available: set[str] = set()
            in_use: list[Path] = []
            for layer in self.layers:
                path = layer / "messages" / filename
                if not path.is_file():
                    continue
                in_use.append(path)
                templates, found = _load_messages(self.env, path)
                problems.extend(found)
                available.update(templates)
            # keys missing from every layer of this language: customers get English instead
            # (or, for English, the raw key's fallback), so say which file lacks which key
            reference = MESSAGE_NAMES if lang == "en" else english
            for key in reference:
                if key not in available:
                    problems.append(Problem(in_use[0], 0, f"missing message {key!r}"
                                            + ("" if lang == "en" else " (present in en.yaml)")))
        return problems

    def _english_names(self) -> list[str]:
        names: set[str] = set()
        for layer in self.layers:
            path = layer / "messages" / "en.yaml"
            if path.is_file():
                names.update(_message_keys(path))
        return [n for n in MESSAGE_NAMES if n in names]


_WIDE_GAP = re.compile(r"(?<=[\u3000-\u30ff\u3400-\u9fff\uf900-\ufaff\uff00-\uffef])\s+"
                       r"(?=[\u3000-\u30ff\u3400-\u9fff\uf900-\ufaff\uff00-\uffef])")


def one_line(text: str) -> str:
    """A message as one line: YAML folding and template whitespace become single spaces, and
    none is left between two Chinese or Japanese characters (those scripts use no spaces)."""
    return _WIDE_GAP.sub("", " ".join(text.split()))


def _render_partial_for_safety(template: Template, context: dict[str, Any]) -> None:
    """Partials are rendered through ``{% include %}``; rendered alone they may lack variables
    their includer sets, so only a sandbox violation is reported from here."""
    try:
        template.render(context)
    except SecurityError:
        raise
    except Exception:  # other errors surface when the including template renders
        return


_LANGUAGE = re.compile(r"[a-z]{2,3}")


def _language_chain(language: str) -> list[str]:
    """``zh-Hans`` -> ["zh", "en"]. Only a plain language code can name a file: anything else
    (it may come from a platform's hint) is treated as English, never as a path."""
    base = (language or "en").lower().replace("_", "-").split("-")[0]
    if not _LANGUAGE.fullmatch(base):
        base = "en"
    return [base] if base == "en" else [base, "en"]


def _message_keys(path: Path) -> list[str]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=YAML_LOADER)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    return [str(k) for k in data] if isinstance(data, dict) else []


# (the loader's folders, message source) -> compiled template, shared by every library over
# the same folders. Eight languages of ~60 messages are compiled by every engine start, reload
# and ``supportbot check``, and Jinja's own cache covers only templates read through its loader.
# The folders are part of the key because a message may ``{% include %}`` a partial.
_COMPILED: dict[tuple[tuple[str, ...], str], Template] = {}
_COMPILED_MAX = 4096


def _message_template(env: ImmutableSandboxedEnvironment, source: str) -> Template:
    key = (tuple(getattr(env.loader, "searchpath", ())), source)
    template = _COMPILED.get(key)
    if template is None:
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.clear()
        template = _COMPILED[key] = env.from_string(source)
    return template


def _load_messages(env: ImmutableSandboxedEnvironment,
                   path: Path) -> tuple[dict[str, Template], list[Problem]]:
    problems: list[Problem] = []
    try:
        source = path.read_text(encoding="utf-8")
        node = yaml.compose(source, Loader=YAML_LOADER)
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
            template = _message_template(env, value_node.value)
            template.render({**sample_context()})
        except TemplateSyntaxError as exc:
            problems.append(Problem(path, line + (exc.lineno or 1) - 1, exc.message or ""))
            continue
        except SecurityError as exc:
            problems.append(Problem(path, line, f"unsafe template: {exc}"))
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
