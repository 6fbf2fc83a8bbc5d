"""The bot's handoff detection (built-in rules and model) against the labelled dev set
(tests/data/handoff_dev.jsonl) and against real questions that never ask for a person.

The set has a ``tune`` split, which the rules were written and the model trained against, and a
``score`` split of twenty blind rounds (14 to 33), each written by authors new to the set,
scored blind before any rule or the model changed for it, and never tuned on (BENCHMARKS.md,
"Handoff detection", has the protocol and every round's figures; bench/handoff_quality.py
reproduces them). The issue's targets are asserted on the score split per language: recall >=
0.97 at FPR <= 0.5% for English and Chinese, recall >= 0.90 for the others. Languages below
target are strict expected failures, so the day a change meets a target the test says so;
separately, every language is held to its recorded figures, and every round to its blind ones,
so that no rule edit or retraining can quietly lose ground.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from supportbot.handoff import HandoffDetector
from supportbot.handoff.model import default_model_path
from supportbot.handoff.scoring import LangScore, load_examples, score

DATA = Path(__file__).resolve().parent / "data" / "handoff_dev.jsonl"
LANGS = ("en", "zh", "es", "fr", "de", "ja", "pt", "ru")
TARGET_RECALL = {lang: 0.97 if lang in ("en", "zh") else 0.90 for lang in LANGS}
TARGET_FPR = {"en": 0.005, "zh": 0.005}  # the issue sets an FPR target for these two only
# BLIND: each round's first score, (recall, false alarms) over all languages, before anything
# changed for it. Round 14 with the 1,048 rules of round 13 and the model as session 5 had
# measured it; rounds 15 and 16 with the 1,612 rules and the model of round 14's fourth pass;
# rounds 17, 18 and 19 with those of the first, second and third pass after them; rounds 20 and
# 21 with those of the fourth (session 8, before its changes), round 22 with those of session 8's
# first pass, rounds 23 and 24 with those of its second, round 25 with those of its third, round 26
# with those of its fourth; rounds 27 and 28 (session 9) with those session 8 left, round 29 with
# those session 9 left (scored once, after all its changes); round 30 (session 10) with those
# session 9 left, round 31 with those of session 10's second pass, round 32 with those of its
# second pass too (written later), round 33 with those session 10 left (scored once, after all
# its changes).
BLIND = {
    "14": (0.857, 6), "15": (0.942, 4), "16": (0.848, 9), "17": (0.916, 0), "18": (0.943, 7),
    "19": (0.967, 10), "20": (0.957, 5), "21": (0.975, 2), "22": (0.949, 4), "23": (0.965, 4),
    "24": (0.964, 1), "25": (0.973, 2), "26": (0.972, 1), "27": (0.991, 7), "28": (0.978, 14),
    "29": (0.991, 3), "30": (0.905, 8), "31": (0.961, 0),
    "32": (0.978, 2), "33": (0.968, 2),
}
# RECORDED: the twenty rounds together, scored once after session 10's third pass (rules tuned
# and the model retrained on the tune split only, with fifteen fresh batches by other new authors;
# 2,950 rules with the doubt phrases); nobody read the score split's misses. (recall, false
# alarms, others)
RECORDED = {
    "en": (0.974, 5, 1699), "zh": (0.982, 7, 1656), "es": (0.958, 4, 903),
    "fr": (0.958, 5, 972), "de": (0.958, 7, 971), "ja": (0.976, 14, 906),
    "pt": (0.967, 5, 941), "ru": (0.954, 6, 896),
}
# A round may fall below its blind figure only by what is listed here, said and not patched:
# after session 10's passes and retrainings, rounds 26 and 32 each hold one request fewer than
# when first scored, and reading them to write a rule would spoil the rounds.
LOST_SINCE_BLIND = {"26": 1, "32": 1}
# ... and may raise more false alarms than then only by what is listed here: session 10's model,
# retrained on 5,481 more tune messages (its threshold 0.8775, was 0.894), raises two in round 17
# that session 9's model did not (the rules alone raise none there).
ALARMS_SINCE_BLIND = {"17": 2}
# False alarms of the bot's detection on real questions (stackfaq's 1,249 English queries,
# AFQMC's 5,995 Chinese questions and 1,789 paraphrases).
REAL_ALARMS = {"stackfaq": 4, "afqmc": 1, "afqmc_queries": 0}


def _meets(lang: str) -> bool:
    recall, false_alarms, others = RECORDED[lang]
    fpr_ok = lang not in TARGET_FPR or false_alarms / others <= TARGET_FPR[lang]
    return recall >= TARGET_RECALL[lang] and fpr_ok


@pytest.fixture(scope="module")
def detector() -> HandoffDetector:
    """What the bot uses by default: the built-in rules, then the built-in model."""
    return HandoffDetector.load(None, model=default_model_path())


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
            "score split: rules and model stay below the issue's target on a new author's "
            "wording (BENCHMARKS.md, 'Handoff detection')"))
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
    """No rule edit or retraining may lose what the recorded figures hold."""
    s = blind[lang]
    recall, false_alarms, _ = RECORDED[lang]
    assert s.recall is not None and s.recall >= recall - 1e-3, (s.recall, s.misses)
    assert s.false_alarms <= false_alarms, s.false


@pytest.mark.parametrize("name", sorted(BLIND))
def test_each_blind_round_is_no_worse_than_when_first_scored(
    detector: HandoffDetector, name: str
) -> None:
    examples = [e for e in load_examples(DATA, "score") if e.round == name]
    s = score(detector, examples)["all"]
    recall, false_alarms = BLIND[name]
    caught_then = round(recall * s.positives)
    assert s.hits >= caught_then - LOST_SINCE_BLIND.get(name, 0), (name, s.recall)
    assert s.false_alarms <= false_alarms + ALARMS_SINCE_BLIND.get(name, 0), (name, s.false_alarms)


def test_real_questions_rarely_hand_off(
    detector: HandoffDetector, stackfaq: Path, afqmc: Path
) -> None:
    """Real customer questions that never ask for a person (read in place, nothing copied):
    every handoff among them is a false alarm. Held to the recorded counts."""
    for path, field, most in ((stackfaq / "queries.jsonl", "query", REAL_ALARMS["stackfaq"]),
                              (afqmc / "faq.jsonl", "question", REAL_ALARMS["afqmc"]),
                              (afqmc / "queries.jsonl", "query", REAL_ALARMS["afqmc_queries"])):
        texts = [json.loads(line)[field] for line in path.read_text("utf-8").splitlines() if line]
        alarms = [t for t in texts if detector.detect(t).handoff]
        assert len(alarms) <= most, (path, len(texts), alarms)
