"""Does the customer ask for a person? Phrase rules from a staff-edited YAML file.

Staff write phrase templates, not regexes (syntax in ``prompts/handoff_phrases.yaml``)::

    talk to a (real) [person|human|agent]     ( ) optional, [ ] one of, | separates choices
    escalate * manager                          *  any few words (up to 4, or 8 CJK characters)
    agent*                                      word* also matches longer words (agents)
    = human                                     =  the whole message must be just this

Text and patterns go through the same normalisation (NFKC, casefold, punctuation → space,
accents on Latin/Cyrillic letters dropped, spaces between CJK characters dropped), so staff
need not think about case, full-width characters or punctuation. A negative pattern cancels a
positive match only where the two overlap, so "人工智能是什么？转人工" still hands off.

The LLM can ask for a handoff too, by writing :data:`HANDOFF_MARKER` in its reply.
"""

from __future__ import annotations

import os
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from supportbot.problems import Problem

__all__ = [
    "HANDOFF_MARKER",
    "Detection",
    "HandoffDetector",
    "MarkerStreamFilter",
    "check_phrases",
    "normalize",
    "split_marker",
]

HANDOFF_MARKER = "[[HANDOFF]]"

# --------------------------------------------------------------------------- normalisation

# Scripts written without spaces (Chinese, Japanese): no word boundaries, so normalisation
# drops spaces between their characters and puts one between them and any other script.
# Every other word is then delimited by spaces, and patterns need only cheap boundaries:
# big Unicode classes inside each of ~100 patterns would take seconds to compile.
_CJK = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RE = re.compile(f"[{_CJK}]")
_CJK_GAP = re.compile(f"(?<=[{_CJK}])\\s+(?=[{_CJK}])")
_CJK_EDGE = re.compile(f"(?<=[{_CJK}])(?=[^\\s{_CJK}])|(?<=[^\\s{_CJK}])(?=[{_CJK}])")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """The form both messages and patterns are compared in."""
    text = unicodedata.normalize("NFKC", text).casefold()
    out: list[str] = []
    prev_base = ""
    for ch in unicodedata.normalize("NFD", text):
        cat = unicodedata.category(ch)
        if cat == "Mn":
            # Drop accents on Latin/Greek/Cyrillic (users often omit them); keep e.g. kana dakuten.
            if prev_base and ord(prev_base) < 0x0530:
                continue
            out.append(ch)
            continue
        prev_base = ch
        out.append(" " if cat[0] in "PSZC" else ch)
    text = unicodedata.normalize("NFC", "".join(out))
    text = _SPACES.sub(" ", text).strip()
    return _CJK_EDGE.sub(" ", _CJK_GAP.sub("", text))


# --------------------------------------------------------------------------- pattern language

# Up to four units, each a whole space-delimited word or one or two characters (for Chinese
# and Japanese, which have no spaces): four words or eight CJK characters. Bounded, so a long
# message cannot make it backtrack badly.
_WILDCARD = r"(?:\s*(?:(?<!\S)\S+(?!\S)|\S{1,2})){0,4}?"
_TOKEN = re.compile(r"\s*(?:([()\[\]|])|([^\s()\[\]|]+))")


class PatternError(ValueError):
    """A phrase template that cannot be compiled; the message is for staff."""


Needles = frozenset[str] | None  # substrings one of which every match contains (a prefilter)


def _best(a: Needles, b: Needles) -> Needles:
    """The more selective of two needle sets (longest shortest needle)."""
    if a is None or b is None:
        return a if b is None else b
    return a if min(map(len, a)) >= min(map(len, b)) else b


def _literal(word: str) -> str:
    """Regex for one normalised word, with word boundaries where the script has them."""
    prefix = word.endswith("*") and len(word) > 1
    if prefix:
        word = word[:-1]
    norm = normalize(word)
    if not norm:
        return ""
    rx = r"\s*".join(re.escape(part) for part in norm.split(" "))
    if not _CJK_RE.match(norm[0]):
        rx = rf"(?<!\S){rx}"
    if prefix:
        rx += r"\S*"
    elif not _CJK_RE.match(norm[-1]):
        rx += r"(?!\S)"
    return rx


class _Parser:
    def __init__(self, source: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        source = source.rstrip()
        while pos < len(source):
            m = _TOKEN.match(source, pos)
            if m is None:  # only trailing whitespace is left
                break
            self.tokens.append(("op", m.group(1)) if m.group(1) else ("word", m.group(2)))
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def seq(self, closer: str | None) -> tuple[str, Needles]:
        parts: list[tuple[str, str]] = []
        needles: Needles = None
        while (tok := self.peek()) is not None:
            kind, value = tok
            if kind == "op" and value in ")]|":
                if closer is None:
                    if value == "|":
                        raise PatternError(
                            "'|' outside brackets: write choices as [a|b] or optional ones as (a|b)"
                        )
                    raise PatternError(f"unmatched '{value}'")
                break
            self.i += 1
            if kind == "word":
                if value == "*":
                    parts.append(("any", _WILDCARD))
                    continue
                rx = _literal(value)
                if rx:
                    parts.append(("req", rx))
                    chunk = max(normalize(value.rstrip("*")).split(" "), key=len)
                    needles = _best(needles, frozenset([chunk]))
                continue
            close = ")" if value == "(" else "]"
            alts = self.alternatives(close)
            if value == "(" or any(a == "" for a, _ in alts):
                # "(a|b)" is optional; "[a|]" with an empty choice is optional too.
                body = "|".join(a for a, _ in alts if a)
                parts.append(("opt", f"(?:{body})"))
            else:
                parts.append(("req", "(?:" + "|".join(a for a, _ in alts) + ")"))
                if all(n is not None for _, n in alts):
                    needles = _best(needles, frozenset().union(*(n for _, n in alts if n)))
        out = ""
        for n, (kind, rx) in enumerate(parts):
            sep = r"\s*" if n else ""
            if kind == "any":
                out += rx  # brings its own separators
            elif kind == "opt":
                out += f"(?:{sep}{rx})?"
            else:
                out += f"{sep}{rx}"
        return out, needles

    def alternatives(self, close: str) -> list[tuple[str, Needles]]:
        alts = [self.seq(close)]
        while True:
            tok = self.peek()
            if tok is None:
                raise PatternError(f"missing '{close}'")
            self.i += 1
            if tok[1] == "|":
                alts.append(self.seq(close))
            elif tok[1] == close:
                if all(a == "" for a, _ in alts):
                    raise PatternError("empty brackets")
                return alts
            else:
                raise PatternError(f"expected '{close}' but found '{tok[1]}'")


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled phrase template."""

    lang: str
    source: str
    regex: re.Pattern[str]
    whole: bool
    line: int = 0
    needles: Needles = None

    def could_match(self, text: str) -> bool:
        return self.needles is None or any(n in text for n in self.needles)

    def spans(self, text: str) -> list[tuple[int, int]]:
        if not self.could_match(text):
            return []
        if self.whole:
            return [(0, len(text))] if self.regex.fullmatch(text) else []
        found = []
        pos = 0
        while pos <= len(text) and (m := self.regex.search(text, pos)):
            found.append(_trim(text, m.start(), m.end()))
            pos = m.start() + 1
        return found

    def first_span(self, text: str, blocked: list[tuple[int, int]]) -> tuple[int, int] | None:
        """The first match that no blocked span overlaps, trying every start position."""
        if not self.could_match(text):
            return None
        if self.whole:
            spans = self.spans(text)
            return spans[0] if spans and not _overlaps(spans[0], blocked) else None
        pos = 0
        while pos <= len(text) and (m := self.regex.search(text, pos)):
            span = _trim(text, m.start(), m.end())
            if not _overlaps(span, blocked):
                return span
            pos = m.start() + 1
        return None


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start] == " ":
        start += 1
    while end > start and text[end - 1] == " ":
        end -= 1
    return start, end


def _overlaps(span: tuple[int, int], blocked: list[tuple[int, int]]) -> bool:
    return any(span[0] < e and s < span[1] for s, e in blocked)


def compile_pattern(source: str, lang: str = "", line: int = 0) -> Rule:
    """Compile one phrase template; :class:`PatternError` says what is wrong in staff terms."""
    text = source.strip()
    whole = text.startswith("=")
    if whole:
        text = text[1:].strip()
    if not text:
        raise PatternError("empty pattern")
    parser = _Parser(text)
    body, needles = parser.seq(None)
    if not body:
        raise PatternError("pattern has no words left after removing punctuation")
    try:
        regex = re.compile(body)
    except re.error as exc:  # pragma: no cover - the parser should never build a bad regex
        raise PatternError(f"cannot compile: {exc}") from exc
    if regex.fullmatch(""):
        raise PatternError("pattern has only optional parts, so it would match every message")
    return Rule(lang, source.strip(), regex, whole, line, needles)


# --------------------------------------------------------------------------- phrases file


@dataclass(frozen=True, slots=True)
class Detection:
    """Whether a message asks for a person, and why (shown to staff and in logs)."""

    handoff: bool
    reason: str = "none"
    lang: str | None = None
    line: int = 0  # line of the deciding phrase in the phrases file (0 = none)

    def __bool__(self) -> bool:
        return self.handoff


@dataclass(frozen=True, slots=True)
class _Rules:
    positive: tuple[Rule, ...] = ()
    negative: tuple[Rule, ...] = ()
    needles: frozenset[str] = frozenset()  # every rule's prefilter substrings, for ``live``

    def __post_init__(self) -> None:
        found = {n for rule in (*self.positive, *self.negative) for n in rule.needles or ()}
        object.__setattr__(self, "needles", frozenset(found))

    def live(self, text: str) -> tuple[list[Rule], list[Rule]]:
        """The positive and negative rules that could match ``text``: each needle is looked for
        once, instead of once per rule that lists it (most rules fail this prefilter)."""
        present = {n for n in self.needles if n in text}

        def could(rule: Rule) -> bool:
            return rule.needles is None or not rule.needles.isdisjoint(present)

        return [r for r in self.positive if could(r)], [r for r in self.negative if could(r)]


_LANG_KEY = re.compile(r"[a-z]{2,3}(-[a-z0-9]+)?")
_KINDS = ("positive", "negative")


def _parse_file(path: Path) -> tuple[_Rules | None, list[Problem]]:
    """Rules from the file (``None`` if unusable as a whole) and the problems found."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [Problem(path, 0, "phrases file not found")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(path, 0, f"cannot read phrases file: {exc}")]
    return _parse_text(raw, path)


def _parse_text(raw: str, path: Path | str) -> tuple[_Rules | None, list[Problem]]:
    try:
        root = yaml.compose(raw, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return None, [Problem(path, line, f"invalid YAML: {problem}")]
    problems: list[Problem] = []
    if root is None:
        return _Rules(), [Problem(path, 1, "phrases file is empty")]
    if not isinstance(root, yaml.MappingNode):
        return None, [Problem(path, _line(root), "expected a mapping of language codes")]
    positive: list[Rule] = []
    negative: list[Rule] = []
    seen_langs: set[str] = set()
    for key_node, section in root.value:
        lang = str(key_node.value).strip().lower()
        if not isinstance(key_node, yaml.ScalarNode) or not _LANG_KEY.fullmatch(lang):
            problems.append(
                Problem(path, _line(key_node), f"expected a language code like 'en', got {lang!r}")
            )
            continue
        if lang in seen_langs:
            problems.append(Problem(path, _line(key_node), f"language {lang!r} appears twice"))
        seen_langs.add(lang)
        if isinstance(section, yaml.ScalarNode) and section.value in ("", "~", "null"):
            continue
        if not isinstance(section, yaml.MappingNode):
            problems.append(
                Problem(path, _line(section), f"{lang}: expected 'positive:' and 'negative:' lists")
            )
            continue
        for kind_node, items in section.value:
            kind = str(kind_node.value)
            if kind not in _KINDS:
                problems.append(
                    Problem(
                        path,
                        _line(kind_node),
                        f"{lang}: unknown key {kind!r} (expected 'positive' or 'negative')",
                    )
                )
                continue
            if isinstance(items, yaml.ScalarNode) and items.value in ("", "~", "null"):
                continue
            if not isinstance(items, yaml.SequenceNode):
                problems.append(
                    Problem(path, _line(items), f"{lang}.{kind}: expected a list of phrases")
                )
                continue
            target = positive if kind == "positive" else negative
            for item in items.value:
                if not isinstance(item, yaml.ScalarNode):
                    problems.append(Problem(path, _line(item), "expected a phrase (one line)"))
                    continue
                try:
                    target.append(compile_pattern(item.value, lang, _line(item)))
                except PatternError as exc:
                    problems.append(Problem(path, _line(item), f"{item.value!r}: {exc}"))
    return _Rules(tuple(positive), tuple(negative)), problems


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def check_phrases(path: str | os.PathLike[str]) -> list[Problem]:
    """Every problem in a phrases file, as ``file:line: message`` (empty list = all good)."""
    return _parse_file(Path(path))[1]


class HandoffDetector:
    """Phrase rules for one file, reloaded when the file changes; never raises while running.

    A file that cannot be read or parsed keeps the last good rules; single bad phrases are
    skipped. Either way :attr:`problems` says what is wrong.
    """

    def __init__(self, path: Path | None = None, rules: _Rules | None = None) -> None:
        self.path = path
        self._rules = rules or _Rules()
        self.problems: list[Problem] = []
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HandoffDetector:
        detector = cls(Path(path))
        detector.refresh(force=True)
        return detector

    @classmethod
    def from_text(cls, yaml_text: str, name: str = "<phrases>") -> HandoffDetector:
        """A detector from YAML text (for tests and tools); no reload."""
        rules, problems = _parse_text(yaml_text, name)
        detector = cls(None, rules)
        detector.problems = problems
        return detector

    @property
    def rule_count(self) -> int:
        return len(self._rules.positive) + len(self._rules.negative)

    def refresh(self, force: bool = False) -> bool:
        """Reload if the file changed (a ``stat`` call otherwise); True if rules were replaced."""
        if self.path is None:
            return False
        try:
            st = self.path.stat()
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        if not force and stamp == self._stamp:
            return False
        with self._lock:
            if not force and stamp == self._stamp:
                return False
            self._stamp = stamp
            rules, problems = _parse_file(self.path)
            self.problems = problems
            if rules is None:
                return False
            self._rules = rules
            return True

    def detect(self, text: str) -> Detection:
        """Does ``text`` ask for a person? Checks every language's phrases."""
        rules = self._rules  # one consistent snapshot even if a reload swaps it meanwhile
        norm = normalize(text or "")
        if not norm:
            return Detection(False)
        positive, negative = rules.live(norm)
        blocked: list[tuple[int, int]] = []
        blocked_by: list[Rule] = []
        for rule in negative:
            spans = rule.spans(norm)
            blocked.extend(spans)
            blocked_by.extend([rule] * len(spans))
        vetoed: Rule | None = None
        for rule in positive:
            if rule.first_span(norm, blocked) is not None:
                reason = f'phrase:{rule.lang}:"{rule.source}"'
                return Detection(True, reason, rule.lang, rule.line)
            if vetoed is None and blocked and rule.first_span(norm, []) is not None:
                vetoed = rule
        if vetoed is not None:
            span = vetoed.first_span(norm, [])
            assert span is not None
            for neg, b in zip(blocked_by, blocked, strict=True):
                if _overlaps(span, [b]):
                    reason = f'negative:{neg.lang}:"{neg.source}"'
                    return Detection(False, reason, neg.lang, neg.line)
        return Detection(False)


# --------------------------------------------------------------------------- LLM marker

_MARKER = re.compile(r"[ \t]*\[{1,2}\s*hand[\s_-]?off\s*\]{1,2}", re.IGNORECASE)


def split_marker(text: str) -> tuple[str, bool]:
    """The reply without any ``[[HANDOFF]]`` marker, and whether one was there."""
    cleaned, n = _MARKER.subn("", text)
    if not n:
        return text, False
    return cleaned.strip(), True


@dataclass(slots=True)
class MarkerStreamFilter:
    """Strips the marker from a streamed reply, holding back text that may be its beginning.

    ``feed(delta)`` returns what is safe to show now, ``flush()`` the rest at the end.
    """

    found: bool = False
    _buffer: str = field(default="")

    def feed(self, delta: str) -> str:
        buf = self._buffer + delta
        hold = _possible_marker_start(buf)
        self._buffer = buf[hold:]
        return self._strip(buf[:hold])

    def flush(self) -> str:
        out, self._buffer = self._buffer, ""
        return self._strip(out)

    def _strip(self, text: str) -> str:
        text, n = _MARKER.subn("", text)
        self.found = self.found or bool(n)
        return text


def _possible_marker_start(buf: str) -> int:
    """Index from which ``buf`` might still become a marker (``len(buf)`` if nowhere)."""
    start = max(0, len(buf) - 24)
    for i in range(start, len(buf)):
        if buf[i] != "[":
            continue
        tail = re.sub(r"[\s_-]", "", buf[i:]).lower()
        if "[[handoff]]".startswith(tail) or "[handoff]".startswith(tail):
            # Include spaces right before it: the marker regex removes those too.
            while i > 0 and buf[i - 1] in " \t":
                i -= 1
            return i
    # Trailing spaces too: if a marker follows, they go with it.
    end = len(buf)
    while end > 0 and buf[end - 1] in " \t":
        end -= 1
    return end
