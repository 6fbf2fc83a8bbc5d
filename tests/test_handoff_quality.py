"""The built-in handoff rules against the labelled dev set (tests/data/handoff_dev.jsonl): the
issue's targets per language, as a guard against a rule edit that breaks another language.
BENCHMARKS.md has the figures and how the set was written (bench/handoff_quality.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from supportbot.handoff import HandoffDetector
from supportbot.handoff.scoring import LangScore, load_examples, score

DATA = Path(__file__).resolve().parent / "data" / "handoff_dev.jsonl"
LANGS = ("en", "zh", "es", "fr", "de", "ja", "pt", "ru")


@pytest.fixture(scope="module")
def detector() -> HandoffDetector:
    return HandoffDetector.load(None)


def test_dev_set_shape() -> None:
    examples = load_examples(DATA)
    assert sum(e.handoff for e in examples) >= 400
    assert sum(not e.handoff for e in examples) >= 2000
    counts = Counter((e.lang, e.split, e.handoff) for e in examples)
    for lang in LANGS:
        for split in ("tune", "score"):
            assert counts[(lang, split, True)] >= 10 and counts[(lang, split, False)] >= 30
    assert len({e.text.casefold() for e in examples}) == len(examples)  # no duplicates


def test_targets_per_language_on_the_tune_split(detector: HandoffDetector) -> None:
    table: dict[str, LangScore] = score(detector, load_examples(DATA, "tune"))
    for lang in LANGS:
        s = table[lang]
        floor = 0.97 if lang in ("en", "zh") else 0.90
        assert s.recall is not None and s.recall >= floor, (lang, s.recall, s.misses)
        assert s.fpr is not None and s.fpr <= 0.005, (lang, s.fpr, s.false)


def test_score_split_does_not_regress(detector: HandoffDetector) -> None:
    """The score split was written after the rules and never tuned on (BENCHMARKS.md): its
    blind figures are below the issue's targets, so this only guards against a regression."""
    table = score(detector, load_examples(DATA, "score"))
    assert table["all"].recall is not None and table["all"].recall >= 0.85, table["all"].misses
    assert table["all"].fpr is not None and table["all"].fpr <= 0.01, table["all"].false
