"""Does a customer's message ask for a person? Rules first, then a model; explained, never raising.

Three kinds of rules (see ``default_rules.yaml``): *positive* phrases ask for a person ("can I
talk to someone from your team"), *frustration* phrases give up on the bot ("you are not helping
at all"), *negative* phrases only mention people ("is a human reviewing my refund?", "I don't
need an agent") and cancel an asking phrase they overlap, so "人工智能是什么？转人工" still hands
off. Every decision names the rule, its file and line, and the words it matched.

*Doubt* phrases ("stop asking", "yesterday", 不用, 上次) do not decide anything themselves: when
an asking rule matched and a doubt phrase is also in the message ("pas besoin de me passer
quelqu'un", "the agent I spoke to yesterday was great"), the model has the last word, and the
message stays with the bot if the model scores it below :data:`DOUBT_BAR`. Negative rules veto
one overlapping wording; doubt covers the refusals and past events nobody wrote a negative for.
Without a doubt phrase, the model overrules a *built-in* asking rule only when it is nearly sure
(below :data:`OVERRULE_BAR`): "how do I transfer a chat to another agent in the admin panel?".
Staff's own phrases always stand: they know their customers' words better than the model does.

What no rule decides, the model (:mod:`supportbot.handoff.model`) may: a message that no asking
rule matched and that no negative rule touches anywhere hands off when the model's score reaches
its threshold. Such a decision names the model file and the n-grams that weighed most.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from supportbot.handoff.model import HandoffModel, load_cached
from supportbot.handoff.normalize import clause_breaks, normalize
from supportbot.handoff.patterns import Rule, Span, overlaps, word_starts
from supportbot.handoff.rules_file import (
    RuleSet,
    build_rules,
    default_rules_path,
    load_files,
    parse_rules_file,
    parse_rules_text,
)
from supportbot.problems import Problem

__all__ = ["DOUBT_BAR", "OVERRULE_BAR", "Detection", "HandoffDetector"]

_REASON_PREFIX = {
    "positive": "phrase", "frustration": "frustration", "negative": "negative", "doubt": "doubt",
}
# Below this model score, an asking rule's match in a message with a doubt phrase is overruled.
# Chosen on fresh batches by new authors, with the rules and model from before their fixes
# (BENCHMARKS.md, "Handoff detection", rounds 15-19): 10 of their 35 false alarms went, 1 of
# their 1,349 requests was lost.
DOUBT_BAR = 0.3
# Below this model score a built-in asking rule's match is overruled even without a doubt phrase.
# Chosen on six fresh batches by new authors (2,752 messages), with the rules and model from
# before their fixes: 11 of the rules' 42 false alarms went, 2 of their 798 requests were lost
# (0.01: 5 and 1; 0.1: 13 and 5); blind rounds 14-19 then lost 8 of 28 false alarms and 1 of
# 1,537 requests (BENCHMARKS.md, "Handoff detection", rounds 20-26).
OVERRULE_BAR = 0.05


_BUILTIN_RULES = str(default_rules_path())  # Rule.path of the rules shipped in the package

# A negation that a comma or full stop closes off answers the bot ("No, quiero hablar con un
# agente", "Não. Quero falar com um atendente"): it does not negate what follows.
_ANSWERS = frozenset({"no", "nao", "non", "nein", "not", "nope", "nah", "нет", "не"})


def _vetoes(
    text: str, norm: str, negative: list[Rule], starts: list[int]
) -> list[tuple[Rule, Span]]:
    """Every negative rule's matches, except those that read an answer ("No," / "Não.") and
    the clause after it as one refusal ("no quiero hablar...")."""
    found = [(neg, span) for neg in negative for span in neg.spans(norm, starts)]
    if not found:
        return found
    breaks = clause_breaks(text, norm)
    if not breaks:
        return found

    def answered(span: Span) -> bool:
        gap = norm.find(" ", span[0], span[1])
        return gap in breaks and norm[span[0] : gap] in _ANSWERS

    return [(neg, span) for neg, span in found if not answered(span)]


def _stamp_of(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


@dataclass(frozen=True, slots=True)
class Detection:
    """Whether a message asks for a person, and why (shown to staff and in logs).

    ``reason`` is short and stable (``phrase:en:"<talk> ..."``; its head is the metrics label);
    ``matched``, ``path`` and ``line`` say which words fired which rule where.
    """

    handoff: bool
    reason: str = "none"
    lang: str | None = None
    line: int = 0  # line of the deciding rule in its file (0 = none)
    path: str = ""
    matched: str = ""

    def __bool__(self) -> bool:
        return self.handoff

    @classmethod
    def of(cls, handoff: bool, rule: Rule, text: str, span: Span) -> Detection:
        reason = f'{_REASON_PREFIX.get(rule.kind, rule.kind)}:{rule.lang}:"{rule.source}"'
        if len(reason) > 200:  # the conversation's handoff_reason column holds 255
            reason = reason[:199] + "…"
        return cls(handoff, reason, rule.lang, rule.line, rule.path, text[span[0] : span[1]])

    @classmethod
    def overruled(cls, rule: Rule, text: str, span: Span, score: float, bar: float) -> Detection:
        """Not a handoff: ``rule`` (a doubt phrase, or the asking rule itself) matched and the
        model scored ``score``, below ``bar``."""
        found = cls.of(False, rule, text, span)
        shown = math.floor(score * 100) / 100  # never printed as high as the bar it missed
        reason = f"{found.reason[:180]} (model {shown:.2f} < {bar})"
        if rule.kind != "doubt":
            reason = f"overruled:{reason}"
        return cls(False, reason, found.lang, found.line, found.path, found.matched)

    @classmethod
    def by_model(cls, model: HandoffModel, norm: str) -> Detection:
        """``reason`` holds the score and threshold, ``matched`` the n-grams that weighed most."""
        why = model.explain(norm, normalized=True, count=4)
        reason = f"model:score {why.score:.2f} >= {model.threshold:.2f}"
        return cls(True, reason, None, 0, model.path, why.grams(4))


class HandoffDetector:
    """Rules from the package defaults plus one override file, reloaded when it changes.

    A file that cannot be read or parsed keeps the last good rules; single bad phrases are
    skipped. Either way :attr:`problems` says what is wrong.
    """

    def __init__(
        self,
        path: Path | None = None,
        rules: RuleSet | None = None,
        *,
        defaults: bool = True,
        model: Path | None = None,
    ) -> None:
        self.path = path
        self.defaults = defaults
        self.model_path = model
        self.model: HandoffModel | None = None
        self._model_stamp: tuple[int, int] | None = None
        self._model_problems: list[Problem] = []
        self._rules = rules or RuleSet()
        self._rule_problems: list[Problem] = []
        self._stamp: tuple[int, int, int] | bool | None = False  # False = never looked
        self._override_loaded = False
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None,
        *,
        defaults: bool = True,
        lazy: bool = False,
        model: str | os.PathLike[str] | None = None,
    ) -> HandoffDetector:
        """Package defaults plus ``path`` if it exists (``defaults=False``: just ``path``), and
        the model file ``model`` (None: rules only).

        ``lazy``: compile on the first :meth:`refresh` instead (~0.3 s of CPU for ~1,000
        rules), so a staff command that opens an engine but answers no customer never pays."""
        detector = cls(
            Path(path) if path is not None else None,
            defaults=defaults,
            model=Path(model) if model is not None else None,
        )
        if not lazy:
            detector.refresh(force=True)
        return detector

    @classmethod
    def from_text(
        cls, yaml_text: str, name: str = "<phrases>", *, defaults: bool = False
    ) -> HandoffDetector:
        """A detector from YAML text (for tests and tools); no reload.

        ``defaults=True`` adds the package defaults, whose word lists the text may use."""
        raw, problems = parse_rules_text(yaml_text, name)
        files = [raw] if raw is not None else []
        if defaults:
            base, found = parse_rules_file(default_rules_path())
            problems = found + problems
            files = ([base] if base is not None else []) + files
        rules, found = build_rules(files)
        detector = cls(None, rules, defaults=defaults)
        detector._rule_problems = problems + found
        detector._stamp = None
        return detector

    @property
    def rules(self) -> RuleSet:
        return self._rules

    @property
    def rule_count(self) -> int:
        return len(self._rules)

    @property
    def sources(self) -> tuple[str, ...]:
        """The files the current rules came from (package defaults first)."""
        return self._rules.sources

    @property
    def problems(self) -> list[Problem]:
        """What is wrong with the rules file and the model file (the last good ones stay)."""
        return self._rule_problems + self._model_problems

    def refresh(self, force: bool = False) -> bool:
        """Reload if the override or the model file changed (``stat`` calls otherwise); True if
        the rules were replaced."""
        if self.model_path is not None:
            self._refresh_model()
        if self.path is None and not force and self._stamp is not False:
            return False  # the package defaults do not change while running
        stamp: tuple[int, int, int] | None = None
        if self.path is not None:
            try:
                st = self.path.stat()
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                stamp = None
        if not force and stamp == self._stamp:
            return False
        with self._lock:
            if not force and stamp == self._stamp:
                return False
            self._stamp = stamp
            missing = self.path is not None and stamp is None
            if missing and self._override_loaded:
                # The override went away: keep its rules rather than silently dropping them.
                self._rule_problems = [Problem(self.path, 0, "phrases file not found")]
                return False
            rules, problems = load_files(None if missing else self.path, defaults=self.defaults)
            if missing and not self.defaults:
                problems = [Problem(self.path, 0, "phrases file not found"), *problems]
            self._rule_problems = problems
            if rules is None and not self._override_loaded and not len(self._rules):
                # Unusable from the start: the built-in rules alone, rather than none at all.
                rules, _ = load_files(None, defaults=self.defaults)
                self._rules = rules or self._rules
                return True
            if rules is None:
                return False
            self._rules = rules
            self._override_loaded = not missing and self.path is not None
            return True

    def _refresh_model(self) -> None:
        """A model file that cannot be read keeps the last good model, and says so."""
        assert self.model_path is not None
        stamp = _stamp_of(self.model_path)
        if stamp == self._model_stamp and (self.model is not None or self._model_problems):
            return
        self._model_stamp = stamp
        try:
            self.model = load_cached(self.model_path, stamp or (0, 0))
            self._model_problems = []
        except ValueError as exc:
            message = str(exc).removeprefix(f"{self.model_path}: ")
            self._model_problems = [Problem(self.model_path, 0, message)]

    def vetoed(self, text: str) -> bool:
        """Does a negative rule (a mention, a refusal) match anywhere in ``text``? The model
        never decides such a message (training leaves them out of its threshold too)."""
        text = text or ""
        norm = normalize(text)
        _, negative, _ = self._rules.live(norm)
        return bool(_vetoes(text, norm, negative, word_starts(norm)))

    def detect(self, text: str) -> Detection:
        """Does ``text`` ask for a person? Checks every language's rules."""
        rules = self._rules  # one consistent snapshot even if a reload swaps it meanwhile
        text = text or ""
        norm = normalize(text)
        if not norm:
            return Detection(False)
        asking, negative, doubt = rules.live(norm)
        starts = word_starts(norm) if asking else []
        # Negatives only matter once an asking rule matched: most messages never get there.
        blocked: list[Span] | None = None
        blocked_by: list[Rule] = []
        vetoed: tuple[Rule, Span] | None = None
        for number, rule in enumerate(asking):
            span = rule.first_span(norm, [], starts)
            if span is None:
                continue
            if blocked is None:
                vetoes = _vetoes(text, norm, negative, starts)
                blocked = [span for _, span in vetoes]
                blocked_by = [neg for neg, _ in vetoes]
            if overlaps(span, blocked):
                if vetoed is None:
                    vetoed = (rule, span)
                span = rule.first_span(norm, blocked, starts)
            if span is not None:
                return self._unless_overruled(rule, span, norm, doubt, starts,
                                              asking[number + 1 :], blocked)
        if vetoed is not None and blocked:
            for neg, b in zip(blocked_by, blocked, strict=True):
                if overlaps(vetoed[1], [b]):
                    return Detection.of(False, neg, norm, b)
        return self._ask_model(text, norm, negative, starts, blocked)

    def _unless_overruled(
        self,
        rule: Rule,
        span: Span,
        norm: str,
        doubt: list[Rule],
        starts: list[int],
        later: list[Rule],
        blocked: list[Span],
    ) -> Detection:
        """The asking ``rule`` matched at ``span``. With a doubt phrase anywhere in the message
        too, the model decides: below :data:`DOUBT_BAR` the message stays with the bot. Without
        one, a built-in rule stands unless the model scores below :data:`OVERRULE_BAR` and no
        ``later`` rule of staff's own matches too. Without a model every asking rule stands."""
        found = Detection.of(True, rule, norm, span)
        model = self.model
        if model is None:
            return found
        for doubted in doubt:
            where = doubted.first_span(norm, [], starts)
            if where is not None:
                score = model.score(norm)
                if score >= DOUBT_BAR:
                    return found
                return Detection.overruled(doubted, norm, where, score, DOUBT_BAR)
        if rule.path != _BUILTIN_RULES:
            return found
        score = model.score(norm)
        if score >= OVERRULE_BAR:
            return found
        for own in later:
            if own.path != _BUILTIN_RULES:
                where = own.first_span(norm, blocked, starts)
                if where is not None:
                    return Detection.of(True, own, norm, where)
        return Detection.overruled(rule, norm, span, score, OVERRULE_BAR)

    def _ask_model(
        self,
        text: str,
        norm: str,
        negative: list[Rule],
        starts: list[int],
        blocked: list[Span] | None,
    ) -> Detection:
        """No rule decided. The model may, unless a negative rule matches anywhere: a mention
        or a refusal ("my travel agent", "I don't need a human") whose words it cannot locate."""
        model = self.model
        if model is None or model.score(norm) < model.threshold:
            return Detection(False)
        if blocked is None:  # no asking rule matched, so the negatives were not looked at yet
            touched = bool(_vetoes(text, norm, negative, starts or word_starts(norm)))
        else:
            touched = bool(blocked)
        if touched:
            return Detection(False)
        return Detection.by_model(model, norm)

