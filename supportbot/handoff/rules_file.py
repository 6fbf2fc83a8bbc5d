"""Loading handoff rules: the package's default file, then the project's override file.

The defaults ship inside the package (``default_rules.yaml`` next to this module), so the bot
hands off in every shipped language even outside a project folder. ``handoff_phrases.yaml``
(the project's prompts folder's copy, else the commented starter in ``supportbot/defaults``)
adds to them: its word lists extend the default lists of the
same name, its phrases are checked alongside the default ones. ``use_defaults: false`` at its top
replaces the defaults entirely. Every problem is reported as ``file:line: message`` and never
stops the bot: a bad phrase is skipped, a bad file keeps the last good rules.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from supportbot.handoff.normalize import CJK_RE
from supportbot.handoff.patterns import PatternError, Rule, check_pattern, compile_pattern
from supportbot.problems import Problem

__all__ = [
    "DEFAULT_RULES",
    "KINDS",
    "RuleSet",
    "build_rules",
    "check_phrases",
    "default_rules_path",
    "parse_rules_file",
    "parse_rules_text",
]

KINDS = ("positive", "frustration", "negative", "doubt")
DEFAULT_RULES = "default_rules.yaml"
_LANG_KEY = re.compile(r"[a-z]{2,3}(-[a-z0-9]+)?")
_NAME = re.compile(r"[a-z0-9_]+")
# libyaml's composer when PyYAML has it: the same nodes and line marks, several times faster
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def default_rules_path() -> Path:
    """The rules file that ships inside the package."""
    return Path(str(resources.files("supportbot.handoff").joinpath(DEFAULT_RULES)))


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Compiled rules of one or more files; immutable, so a reload swaps it atomically."""

    positive: tuple[Rule, ...] = ()
    frustration: tuple[Rule, ...] = ()
    negative: tuple[Rule, ...] = ()
    doubt: tuple[Rule, ...] = ()
    sources: tuple[str, ...] = ()
    needles: frozenset[str] = frozenset()  # every rule's prefilter words, for ``live``
    _cjk_needles: frozenset[str] = frozenset()
    _longest_cjk: int = 0
    _by_needle: dict[str, tuple[int, ...]] = field(default_factory=dict)  # needle → rule numbers
    _always: frozenset[int] = frozenset()  # rules without a needle

    def __post_init__(self) -> None:
        rules = (*self.positive, *self.frustration, *self.negative, *self.doubt)
        needles = frozenset(n for r in rules for n in r.needles or ())
        cjk = frozenset(n for n in needles if CJK_RE.search(n))
        by_needle: dict[str, list[int]] = {}
        for number, rule in enumerate(rules):
            for n in rule.needles or ():
                by_needle.setdefault(n, []).append(number)
        object.__setattr__(self, "_by_needle", {n: tuple(v) for n, v in by_needle.items()})
        object.__setattr__(self, "_always", frozenset(
            number for number, rule in enumerate(rules) if rule.needles is None))
        object.__setattr__(self, "needles", needles)
        object.__setattr__(self, "_cjk_needles", cjk)
        object.__setattr__(self, "_longest_cjk", max(map(len, cjk), default=0))

    def present(self, text: str) -> set[str]:
        """The needles in normalised ``text``, by looking each word's prefixes (and each
        Chinese/Japanese run's substrings) up in a set: a few dozen set lookups instead of a
        substring search per needle (~1,900 of them with the built-in rules).

        Every needle a rule could match is found: a Latin/Cyrillic word of a rule matches a whole
        word of the text or, written ``word*``, the start of one; CJK words match anywhere."""
        found: set[str] = set()
        needles, cjk, longest = self.needles, self._cjk_needles, self._longest_cjk
        for word in set(text.split()):
            if CJK_RE.match(word):
                for i in range(len(word)):
                    for j in range(i + 1, min(len(word), i + longest) + 1):
                        if word[i:j] in cjk:
                            found.add(word[i:j])
            else:
                for k in range(1, len(word) + 1):
                    if word[:k] in needles:
                        found.add(word[:k])
        return found

    def __len__(self) -> int:
        return len(self.positive) + len(self.frustration) + len(self.negative) + len(self.doubt)

    def live(self, text: str) -> tuple[list[Rule], list[Rule], list[Rule]]:
        """The asking (positive and frustration), negative and doubt rules that could match
        ``text``, in file order: the rules listed under the needles present (most rules fail
        this)."""
        numbers = set(self._always)
        for n in self.present(text):
            numbers.update(self._by_needle[n])
        asking_count = len(self.positive) + len(self.frustration)
        doubt_from = asking_count + len(self.negative)
        asking: list[Rule] = []
        negative: list[Rule] = []
        doubt: list[Rule] = []
        for number in sorted(numbers):
            if number < asking_count:
                asking.append(self.positive[number] if number < len(self.positive)
                              else self.frustration[number - len(self.positive)])
            elif number < doubt_from:
                negative.append(self.negative[number - asking_count])
            else:
                doubt.append(self.doubt[number - doubt_from])
        return asking, negative, doubt


# ---------------------------------------------------------------------------- raw files


@dataclass(slots=True)
class _Lang:
    """One language's section of one file, not compiled yet."""

    lexicons: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    phrases: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


@dataclass(slots=True)
class RawFile:
    path: str
    langs: dict[str, _Lang] = field(default_factory=dict)
    use_defaults: bool = True


def parse_rules_file(path: Path) -> tuple[RawFile | None, list[Problem]]:
    """The file's sections (``None`` if unusable as a whole) and the problems found."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [Problem(path, 0, "phrases file not found")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(path, 0, f"cannot read phrases file: {exc}")]
    return parse_rules_text(raw, path)


def _empty(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null")


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _strings(
    node: yaml.Node, path: Path | str, where: str, problems: list[Problem]
) -> list[tuple[str, int]]:
    if _empty(node):
        return []
    if not isinstance(node, yaml.SequenceNode):
        problems.append(Problem(path, _line(node), f"{where}: expected a list of phrases"))
        return []
    out = []
    for item in node.value:
        if isinstance(item, yaml.ScalarNode):
            out.append((item.value, _line(item)))
        else:
            problems.append(Problem(path, _line(item), "expected a phrase (one line)"))
    return out


def parse_rules_text(raw: str, path: Path | str) -> tuple[RawFile | None, list[Problem]]:
    try:
        root = yaml.compose(raw, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return None, [Problem(path, line, f"invalid YAML: {problem}")]
    out = RawFile(str(path))
    if root is None:  # only comments: the starter file, nothing added to the defaults
        return out, []
    if not isinstance(root, yaml.MappingNode):
        return None, [Problem(path, _line(root), "expected a mapping of language codes")]
    problems: list[Problem] = []
    for key_node, section in root.value:
        key = str(key_node.value).strip().lower()
        if key == "use_defaults":
            out.use_defaults = str(section.value).strip().lower() not in ("false", "no", "off")
            continue
        if not isinstance(key_node, yaml.ScalarNode) or not _LANG_KEY.fullmatch(key):
            problems.append(
                Problem(path, _line(key_node), f"expected a language code like 'en', got {key!r}")
            )
            continue
        if key in out.langs:
            problems.append(Problem(path, _line(key_node), f"language {key!r} appears twice"))
        lang = out.langs.setdefault(key, _Lang())
        if _empty(section):
            continue
        if not isinstance(section, yaml.MappingNode):
            problems.append(
                Problem(path, _line(section), f"{key}: expected 'positive:' and 'negative:' lists")
            )
            continue
        for kind_node, items in section.value:
            kind = str(kind_node.value)
            if kind == "words":
                _parse_lexicons(items, key, lang, path, problems)
            elif kind in KINDS:
                lang.phrases.setdefault(kind, []).extend(
                    _strings(items, path, f"{key}.{kind}", problems)
                )
            else:
                problems.append(
                    Problem(
                        path,
                        _line(kind_node),
                        f"{key}: unknown key {kind!r} (expected 'words', 'positive', "
                        "'frustration', 'negative' or 'doubt')",
                    )
                )
    return out, problems


def _parse_lexicons(
    node: yaml.Node, lang: str, lang_out: _Lang, path: Path | str, problems: list[Problem]
) -> None:
    if _empty(node):
        return
    if not isinstance(node, yaml.MappingNode):
        problems.append(Problem(path, _line(node), f"{lang}.words: expected 'name: [words]'"))
        return
    for name_node, items in node.value:
        name = str(name_node.value)
        if not _NAME.fullmatch(name):
            problems.append(
                Problem(path, _line(name_node), f"word list name {name!r}: use a-z, 0-9 and _")
            )
            continue
        entries = _strings(items, path, f"{lang}.words.{name}", problems)
        lang_out.lexicons.setdefault(name, []).extend(entries)


# ---------------------------------------------------------------------------- compiling


def build_rules(files: list[RawFile]) -> tuple[RuleSet, list[Problem]]:
    """Compile the files together: word lists merge by language and name, phrases add up."""
    problems: list[Problem] = []
    langs = sorted({lang for f in files for lang in f.langs})
    compiled: dict[str, list[Rule]] = {kind: [] for kind in KINDS}
    for lang in langs:
        entries: dict[str, list[tuple[str, int, str]]] = {}
        for f in files:
            section = f.langs.get(lang)
            for name, items in (section.lexicons if section else {}).items():
                entries.setdefault(name, []).extend((e, ln, f.path) for e, ln in items)
        # Check each word-list entry on its own, so a bad one is reported where it is written
        # and left out instead of breaking every rule that uses the list.
        lexicons: dict[str, list[str]] = {}
        names = {n: [e for e, _, _ in v] for n, v in entries.items()}
        checked: dict = {}
        for name, items in entries.items():
            good = []
            for entry, line, path in items:
                try:
                    check_pattern(entry, lexicons=names, cache=checked)
                except PatternError as exc:
                    problems.append(Problem(path, line, f"<{name}> {entry!r}: {exc}"))
                    continue
                good.append(entry)
            lexicons[name] = good
        # the word lists were just parsed to check them: reuse that unless some entry was bad
        cache: dict = checked if lexicons == names else {}
        for f in files:
            section = f.langs.get(lang)
            if section is None:
                continue
            for kind, phrases in section.phrases.items():
                for source, line in phrases:
                    try:
                        rule = compile_pattern(
                            source, lang, line, kind=kind, lexicons=lexicons, path=f.path,
                            cache=cache,
                        )
                    except PatternError as exc:
                        problems.append(Problem(f.path, line, f"{source!r}: {exc}"))
                        continue
                    compiled[kind].append(rule)
    rules = RuleSet(
        tuple(compiled["positive"]),
        tuple(compiled["frustration"]),
        tuple(compiled["negative"]),
        tuple(compiled["doubt"]),
        tuple(f.path for f in files),
    )
    return rules, problems


def _stamp(path: Path | None) -> tuple[str, int, int] | None:
    try:
        st = path.stat() if path is not None else None
    except OSError:
        return None
    return None if st is None else (str(path), st.st_mtime_ns, st.st_size)


# (override stamp, defaults stamp, defaults?) -> result of _load_files. Compiling ~600 phrases
# costs ~0.2 s of CPU; the same files are read by the engine, its reloads, `supportbot check` and
# the checks the engine runs at start, so each unchanged set of files is compiled once per process.
_LOADED: dict[tuple, tuple[RuleSet | None, list[Problem]]] = {}
_LOADED_MAX = 8


def load_files(
    override: Path | None, *, defaults: bool = True
) -> tuple[RuleSet | None, list[Problem]]:
    """Rules from the package defaults plus ``override`` (if it exists).

    ``None`` when the override exists but cannot be used as a whole (the caller keeps its last
    good rules). A missing override is not a problem: the defaults are enough.
    """
    key = (_stamp(override), _stamp(default_rules_path()) if defaults else None, defaults)
    if key not in _LOADED:
        if len(_LOADED) >= _LOADED_MAX:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = _load_files(override, defaults=defaults)
    rules, problems = _LOADED[key]
    return rules, list(problems)


def _load_files(
    override: Path | None, *, defaults: bool
) -> tuple[RuleSet | None, list[Problem]]:
    problems: list[Problem] = []
    files: list[RawFile] = []
    extra: RawFile | None = None
    if override is not None and override.exists():
        extra, found = parse_rules_file(override)
        problems.extend(found)
        if extra is None:
            return None, problems
    if defaults and (extra is None or extra.use_defaults):
        base, found = parse_rules_file(default_rules_path())
        problems.extend(found)
        if base is not None:
            files.append(base)
    if extra is not None:
        files.append(extra)
    rules, found = build_rules(files)
    return rules, problems + found


def check_phrases(path: str | os.PathLike[str]) -> list[Problem]:
    """Every problem in a phrases file, as ``file:line: message`` (empty list = all good).

    The file is checked together with the package defaults, whose word lists it may use.
    """
    path = Path(path)
    if not path.exists():
        return [Problem(path, 0, "phrases file not found")]
    return load_files(path)[1]
