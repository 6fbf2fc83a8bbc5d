"""The phrase language staff write rules in, compiled to bounded regular expressions.

Staff write phrase templates, not regexes (full description in ``default_rules.yaml``)::

    talk to a (real) [person|human|agent]     ( ) optional, [ ] one of, | separates choices
    escalate * manager                          *  any few words (up to 4, or 9 CJK characters)
    reach *2 <person>                           *2 any 0-2 words (or 5 CJK characters)
    <talk> [to|with] <person>                   <name> any entry of the word list "name"
    agent*                                      word* also matches longer words (agents)
    = human                                     =  the whole message must be just this

Word lists (``<person>``) are what make a handful of rules generalize: one rule "verb × target"
covers every verb and every target staff list, and adding a word to a list extends every rule
that uses it. Text and patterns go through the same :func:`normalize`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from supportbot.handoff.normalize import CJK_CHARS, CJK_RE, normalize

__all__ = [
    "Lexicons",
    "PatternError",
    "Rule",
    "check_pattern",
    "compile_pattern",
    "overlaps",
    "word_starts",
]

# Up to N units, each a whole space-delimited word or two Chinese/Japanese characters (those
# scripts have no spaces), then perhaps one more such character: N words or 2N+1 characters.
# Every stretch of text splits into these units in exactly one way, so a match that fails costs
# one pass per wildcard, not one per way of splitting: with units of "one or two characters"
# (and words splittable into those), "= *8 *8 *8 human" took 130 s on a 156-character message.
_WORD = rf"(?<!\S)[^\s{CJK_CHARS}]+(?!\S)"


def _wildcard(n: int) -> str:
    return rf"(?:\s*(?:{_WORD}|[{CJK_CHARS}]{{2}})){{0,{n}}}?(?:\s*[{CJK_CHARS}])?"


_TOKEN = re.compile(r"\s*(?:([()\[\]|])|([^\s()\[\]|]+))")
_LEXREF = re.compile(r"<([a-z0-9_]+)>")
_GAP = re.compile(r"\*([1-8])?")

Lexicons = Mapping[str, Sequence[str]]  # word-list name → entries (each a small phrase)
Needles = frozenset[str] | None  # substrings one of which every match contains (a prefilter)


class PatternError(ValueError):
    """A phrase template that cannot be compiled; the message is for staff."""


def _best(a: Needles, b: Needles) -> Needles:
    """The more selective of two needle sets (longest shortest needle, then fewest)."""
    if a is None or b is None:
        return a if b is None else b
    ka, kb = (min(map(len, a)), -len(a)), (min(map(len, b)), -len(b))
    return a if ka >= kb else b


@functools.lru_cache(maxsize=8192)
def _normalized(word: str) -> str:
    return normalize(word)


@functools.lru_cache(maxsize=8192)
def _literal(word: str) -> str:
    """Regex for one normalised word, with word boundaries where the script has them."""
    prefix = word.endswith("*") and len(word) > 1
    if prefix:
        word = word[:-1]
    norm = _normalized(word)
    if not norm:
        return ""
    rx = r"\s*".join(re.escape(part) for part in norm.split(" "))
    if not CJK_RE.match(norm[0]):
        rx = rf"(?<!\S){rx}"
    if prefix:
        rx += r"\S*"
    elif not CJK_RE.match(norm[-1]):
        rx += r"(?!\S)"
    return rx


class _Parser:
    def __init__(
        self, source: str, lexicons: Lexicons, cache: dict[str, tuple[str, Needles]],
        depth: int = 0,
    ) -> None:
        self.tokens: list[tuple[str, str]] = []
        self.lexicons, self.cache, self.depth = lexicons, cache, depth
        pos = 0
        source = source.rstrip()
        while pos < len(source):
            m = _TOKEN.match(source, pos)
            if m is None:  # only trailing whitespace is left
                break
            self.tokens.append(("op", m.group(1)) if m.group(1) else ("word", m.group(2)))
            pos = m.end()
        self.i = 0
        self.top: list[tuple[str, str]] = []

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def lexicon(self, name: str) -> tuple[str, Needles]:
        """Regex and needles for ``<name>``: every entry of the word list, longest first."""
        if name in self.cache:
            return self.cache[name]
        if name not in self.lexicons:
            raise PatternError(f"unknown word list <{name}>")
        if self.depth > 3:
            raise PatternError(f"word list <{name}> refers to itself")
        alts: list[tuple[str, Needles]] = []
        for entry in sorted(self.lexicons[name], key=len, reverse=True):
            try:
                rx, needles = _Parser(entry, self.lexicons, self.cache, self.depth + 1).seq(None)
            except PatternError as exc:
                raise PatternError(f"word list <{name}>, entry {entry!r}: {exc}") from None
            if rx:
                alts.append((rx, needles))
        if not alts:
            raise PatternError(f"word list <{name}> is empty")
        needles: Needles = None
        if all(n is not None for _, n in alts):
            needles = frozenset().union(*(n for _, n in alts if n))
        result = ("(?:" + "|".join(rx for rx, _ in alts) + ")", needles)
        self.cache[name] = result
        return result

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
                if gap := _GAP.fullmatch(value):
                    parts.append(("any", _wildcard(int(gap.group(1) or 4))))
                    continue
                if ref := _LEXREF.fullmatch(value):
                    rx, lex_needles = self.lexicon(ref.group(1))
                    parts.append(("req", rx))
                    needles = _best(needles, lex_needles)
                    continue
                if "<" in value or ">" in value:
                    raise PatternError(f"{value!r}: write word lists as <name> (a-z, 0-9, _)")
                rx = _literal(value)
                if rx:
                    parts.append(("req", rx))
                    chunk = max(_normalized(value.rstrip("*")).split(" "), key=len)
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
        if closer is None:
            self.top = parts
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


Span = tuple[int, int]
_COMPILED: dict[str, re.Pattern[str]] = {}  # pattern → regex, shared by reloads


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled phrase template, with where it came from (shown to staff)."""

    lang: str
    kind: str  # "positive", "frustration", "negative" or "doubt"
    source: str
    pattern: str  # the regex, compiled on first use (see ``regex``)
    whole: bool
    line: int = 0
    path: str = ""
    needles: Needles = None

    @property
    def regex(self) -> re.Pattern[str]:
        """Compiled on first use: compiling all ~300 default rules up front takes seconds of
        CPU at start-up, while most messages only ever reach the few rules whose words they
        contain. ``re.compile`` is thread-safe, so a race only compiles twice."""
        compiled = _COMPILED.get(self.pattern)
        if compiled is None:
            compiled = _COMPILED[self.pattern] = re.compile(self.pattern)
        return compiled

    def could_match(self, text: str) -> bool:
        return self.needles is None or any(n in text for n in self.needles)

    @property
    def at_word_starts(self) -> bool:
        """Can every match begin at the start of a space-delimited word? True for rules of
        languages written with spaces (their words all begin with a boundary), which can then be
        tried only there instead of at every character: much cheaper for rules that open with
        long optional word lists."""
        return self.lang not in _NO_SPACES and not self.pattern.startswith(r"(?:\s*")

    def _matches(self, text: str, starts: list[int] | None):  # -> Iterator[re.Match[str]]
        regex = self.regex
        if starts is None or not self.at_word_starts:
            pos = 0
            while pos <= len(text) and (m := regex.search(text, pos)):
                yield m
                pos = m.start() + 1
            return
        for pos in starts:
            if (m := regex.match(text, pos)) is not None:
                yield m

    def spans(self, text: str, starts: list[int] | None = None) -> list[Span]:
        if self.whole:
            return [(0, len(text))] if self.regex.fullmatch(text) else []
        return [_trim(text, m.start(), m.end()) for m in self._matches(text, starts)]

    def first_span(
        self, text: str, blocked: list[Span], starts: list[int] | None = None
    ) -> Span | None:
        """The first match that no blocked span overlaps, trying every start position
        (``starts``: the word starts of ``text``, see :func:`word_starts`)."""
        if self.whole:
            spans = self.spans(text)
            return spans[0] if spans and not overlaps(spans[0], blocked) else None
        for m in self._matches(text, starts):
            span = _trim(text, m.start(), m.end())
            if not overlaps(span, blocked):
                return span
        return None


_NO_SPACES = frozenset({"zh", "ja", "zh-hans", "zh-hant", "zh-cn", "zh-tw", "ja-jp"})
_WORD_START = re.compile(r"(?<!\S)\S")


def word_starts(text: str) -> list[int]:
    """Where the words of normalised ``text`` begin (for :meth:`Rule.spans`)."""
    return [m.start() for m in _WORD_START.finditer(text)]


def _trim(text: str, start: int, end: int) -> Span:
    while start < end and text[start] == " ":
        start += 1
    while end > start and text[end - 1] == " ":
        end -= 1
    return start, end


def overlaps(span: Span, blocked: list[Span]) -> bool:
    return any(span[0] < e and s < span[1] for s, e in blocked)


def compile_pattern(
    source: str,
    lang: str = "",
    line: int = 0,
    *,
    kind: str = "positive",
    lexicons: Lexicons | None = None,
    path: str = "",
    cache: dict[str, tuple[str, Needles]] | None = None,
) -> Rule:
    """Compile one phrase template; :class:`PatternError` says what is wrong in staff terms.

    ``cache`` shares compiled word lists between the rules of one language.
    """
    text = source.strip()
    whole = text.startswith("=")
    if whole:
        text = text[1:].strip()
    if not text:
        raise PatternError("empty pattern")
    parser = _Parser(text, lexicons or {}, {} if cache is None else cache)
    body, needles = parser.seq(None)
    if not body:
        raise PatternError("pattern has no words left after removing punctuation")
    if not any(kind == "req" for kind, _ in parser.top):
        raise PatternError("pattern has only optional parts, so it would match every message")
    return Rule(lang, kind, source.strip(), body, whole, line, path, needles)


def check_pattern(
    source: str, *, lexicons: Lexicons | None = None, cache: dict | None = None
) -> None:
    """Raise :class:`PatternError` if ``source`` is not a valid phrase (no regex compiled)."""
    text = source.strip().removeprefix("=").strip()
    if not text:
        raise PatternError("empty pattern")
    if not _Parser(text, lexicons or {}, {} if cache is None else cache).seq(None)[0]:
        raise PatternError("pattern has no words left after removing punctuation")
