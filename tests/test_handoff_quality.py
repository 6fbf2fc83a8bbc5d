"""The built-in handoff rules against the labelled dev set (tests/data/handoff_dev.jsonl).

The set has a ``tune`` split, which the rules were written against, and a ``score`` split (round
13), written before the last round of rule changes, scored blind before them and never tuned on
(BENCHMARKS.md, "Handoff detection", has the protocol and every round's figures;
bench/handoff_quality.py reproduces them). The issue's targets are asserted on the score split per
language: recall >= 0.97 at FPR <= 0.5% for English and Chinese, recall >= 0.90 for the others.
Languages below target are strict expected failures, so the day a rule change meets a target the
test says so; separately, every language is held to its recorded round-13 figures so that no rule
edit can quietly lose ground.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from supportbot.handoff import HandoffDetector
from supportbot.handoff.scoring import LangScore, load_examples, score

DATA = Path(__file__).resolve().parent / "data" / "handoff_dev.jsonl"
LANGS = ("en", "zh", "es", "fr", "de", "ja", "pt", "ru")
TARGET_RECALL = {lang: 0.97 if lang in ("en", "zh") else 0.90 for lang in LANGS}
TARGET_FPR = {"en": 0.005, "zh": 0.005}  # the issue sets an FPR target for these two only
# The score split is round 13 (BENCHMARKS.md). BLIND: scored once with the 954 rules as round 12
# left them, before any rule was changed for round 13. RECORDED: scored once after the rules were
# tuned on the tune split only (1,048 rules; round 12's misses, now in tune, and six fresh tune
# batches; nobody looked at the score split's misses); recall, false positives. Tuning moved
# English (0.905 -> 0.952), Chinese (0.905 -> 0.929), Spanish (0.762 -> 0.905), German (0.812 ->
# 0.844), Portuguese (0.905 -> 0.952) and took three false alarms away (es, fr, pt: 6 -> 3).
BLIND = {
    "en": (0.905, 0), "zh": (0.905, 1), "es": (0.762, 1), "fr": (0.903, 1),
    "de": (0.812, 2), "ja": (0.952, 0), "pt": (0.905, 1), "ru": (1.000, 0),
}
RECORDED = {
    "en": (0.952, 0), "zh": (0.929, 1), "es": (0.905, 0), "fr": (0.903, 0),
    "de": (0.844, 2), "ja": (0.952, 0), "pt": (0.952, 0), "ru": (1.000, 0),
}


def _meets(lang: str) -> bool:
    recall, false_alarms = RECORDED[lang]
    return recall >= TARGET_RECALL[lang] and (lang not in TARGET_FPR or false_alarms == 0)


@pytest.fixture(scope="module")
def detector() -> HandoffDetector:
    return HandoffDetector.load(None)


@pytest.fixture(scope="module")
def blind(detector: HandoffDetector) -> dict[str, LangScore]:
    return score(detector, load_examples(DATA, "score"))


def test_dev_set_shape() -> None:
    examples = load_examples(DATA)
    assert sum(e.handoff for e in examples) >= 400
    assert sum(not e.handoff for e in examples) >= 2000
    counts = Counter((e.lang, e.split, e.handoff) for e in examples)
    for lang in LANGS:
        assert counts[(lang, "tune", True)] >= 60 and counts[(lang, "tune", False)] >= 200
        assert counts[(lang, "score", True)] >= 10 and counts[(lang, "score", False)] >= 15
    assert len({e.text.casefold() for e in examples}) == len(examples)  # no duplicates


def test_targets_per_language_on_the_tune_split(detector: HandoffDetector) -> None:
    table: dict[str, LangScore] = score(detector, load_examples(DATA, "tune"))
    for lang in LANGS:
        s = table[lang]
        assert s.recall is not None and s.recall >= TARGET_RECALL[lang], (lang, s.recall, s.misses)
        assert s.fpr is not None and s.fpr <= 0.005, (lang, s.fpr, s.false)


@pytest.mark.parametrize(
    "lang",
    [
        lang if _meets(lang) else pytest.param(lang, marks=pytest.mark.xfail(
            strict=True,
            reason=f"recall {RECORDED[lang][0]} / {RECORDED[lang][1]} false alarms on the "
            "score split: rules alone stay below the issue's target on unseen wording "
            "(BENCHMARKS.md, 'Handoff detection')"))
        for lang in LANGS
    ],
)
def test_issue_targets_on_the_score_split(blind: dict[str, LangScore], lang: str) -> None:
    s = blind[lang]
    assert s.recall is not None and s.recall >= TARGET_RECALL[lang], (s.recall, s.misses)
    if lang in TARGET_FPR:
        assert s.fpr is not None and s.fpr <= TARGET_FPR[lang], (s.fpr, s.false)


@pytest.mark.parametrize("lang", LANGS)
def test_score_split_does_not_regress(blind: dict[str, LangScore], lang: str) -> None:
    """No rule edit may lose what the recorded round-13 figures hold, in any language."""
    s = blind[lang]
    recall, false_alarms = RECORDED[lang]
    assert s.recall is not None and s.recall >= recall - 1e-3, (s.recall, s.misses)
    assert s.false_alarms <= false_alarms, s.false
