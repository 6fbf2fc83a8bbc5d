"""The handoff model (supportbot/handoff/model.py, training.py): what no rule decides.

Training is deterministic and its file round-trips; the shipped model catches requests in
wording the rules lack, never overrides a negative rule, explains itself, and a broken or
missing weights file leaves the rules working and says what is wrong. Its quality on the dev
set is held in test_handoff_quality.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from supportbot.cli.handoff import handoff
from supportbot.handoff import HandoffDetector, normalize
from supportbot.handoff.detector import OVERRULE_BAR
from supportbot.handoff.model import (
    HandoffModel,
    default_model_path,
    features,
    label,
    model_path,
)
from supportbot.handoff.rules_file import default_rules_path
from supportbot.handoff.scoring import load_examples
from supportbot.handoff.training import choose_threshold, fold_of, train

DEV = Path(__file__).resolve().parent / "data" / "handoff_dev.jsonl"
# Tests of the model's plumbing use a rules file of their own (use_defaults: false), so that no
# built-in rule catches the request first, however the built-in rules grow.
REQUEST = "please let me talk to a real person"
OWN_RULES = """use_defaults: false
en:
  positive:
    - send me a florist
  negative:
    - my travel agent
  doubt:
    - no need
"""


@pytest.fixture(scope="module")
def with_model() -> HandoffDetector:
    """What the bot uses by default: the built-in rules and model."""
    return HandoffDetector.load(None, model=default_model_path())


@pytest.fixture
def own_rules(tmp_path: Path) -> Path:
    path = tmp_path / "handoff_phrases.yaml"
    path.write_text(OWN_RULES, encoding="utf-8")
    return path


def _english_tune() -> tuple[list[str], list[bool]]:
    examples = [e for e in load_examples(DEV, "tune") if e.lang == "en"]
    return [e.text for e in examples], [e.handoff for e in examples]


def test_features_know_word_edges_and_cjk_runs() -> None:
    grams = features(normalize("Talk to an AGENT, 转人工"))
    assert {" agen", "gent ", "w:agent", "b:to_an", "转人工", "人工"} <= grams
    assert "agen" in grams and " gent" not in grams  # word edges are marked
    assert "o an" in grams  # spans two words
    assert not any("转" in g and " " in g for g in grams)  # CJK runs stay apart from spaced text


def test_training_is_deterministic_and_the_file_round_trips(tmp_path: Path) -> None:
    texts, labels = _english_tune()
    first = train(texts, labels, epochs=60, keep=5000)
    assert train(texts, labels, epochs=60, keep=5000) == first
    weights, bias = first
    model = HandoffModel(weights, bias, 0.9, {"examples": len(texts)})
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    model.save(a)
    HandoffModel.load(a).save(b)
    assert a.read_bytes() == b.read_bytes()


def test_the_model_learns_requests_and_explains_them() -> None:
    texts, labels = _english_tune()
    held_out = {i for i, t in enumerate(texts) if fold_of(t, 5) == 0}
    weights, bias = train([t for i, t in enumerate(texts) if i not in held_out],
                          [y for i, y in enumerate(labels) if i not in held_out], epochs=150)
    model = HandoffModel(weights, bias, 0.5)
    probs = [model.score(normalize(texts[i])) for i in sorted(held_out)]
    truth = [labels[i] for i in sorted(held_out)]
    # Ranking on unseen messages: most requests above most other messages.
    pos = [p for p, y in zip(probs, truth, strict=True) if y]
    neg = [p for p, y in zip(probs, truth, strict=True) if not y]
    above = sum(p > n for p in pos for n in neg) / (len(pos) * len(neg))
    assert above > 0.95, above
    explained = model.explain("could I please speak with a real person about my bill")
    assert explained.score > 0.5
    assert explained.top and all(w > 0 for _, w in explained.top)
    assert explained.top == tuple(sorted(explained.top, key=lambda gw: (-gw[1], gw[0])))
    assert any(label(g) in "could i please speak with a real person" for g, _ in explained.top)
    assert "score" in explained.describe()


def test_threshold_holds_the_false_alarm_budget_outside_vetoed_messages() -> None:
    probs = [0.99, 0.95, 0.90, 0.80, 0.97, 0.20]
    labels = [False, False, False, False, True, True]
    vetoed = [True, False, False, False, False, False]  # a negative rule vetoes the 0.99 one
    threshold = choose_threshold(probs, labels, vetoed, max_fpr=0.25)  # 1 of 4 others allowed
    assert 0.90 < threshold <= 0.9501
    assert choose_threshold(probs, labels, vetoed, max_fpr=0.0) > 0.95


def test_the_setting_names_the_weights_file(tmp_path: Path) -> None:
    assert model_path("builtin") == default_model_path()
    assert model_path("off") is None and model_path("") is None
    assert model_path(str(tmp_path / "m.json")) == tmp_path / "m.json"


def test_shipped_model_decides_what_no_rule_does(own_rules: Path) -> None:
    assert not HandoffDetector.load(own_rules).detect(REQUEST)
    detector = HandoffDetector.load(own_rules, model=default_model_path())
    found = detector.detect(REQUEST)
    assert found.handoff and found.reason.startswith("model:score ")
    assert found.path == str(default_model_path()) and found.line == 0
    assert found.matched.count("+") >= 2  # the n-grams that weighed most, with their weights
    # what a rule decides stays the rule's decision, with its explanation
    assert detector.detect("send me a florist").reason.startswith("phrase:en:")
    assert not detector.detect("what is the weather like in Paris")


@pytest.mark.parametrize("text", [
    "my travel agent booked the wrong date",
    "I don't need a human, just tell me the opening hours",
    "is a human reviewing my refund?",
    "人工智能是什么",
    "How do I block someone who keeps messaging me?",
    "Can I share an album with someone who has no account?",
    "where is my parcel",
    "hello",
])
def test_shipped_model_leaves_mentions_and_questions_alone(
    with_model: HandoffDetector, text: str
) -> None:
    assert not with_model.detect(text).handoff


def test_a_negative_rule_anywhere_vetoes_the_model(own_rules: Path) -> None:
    detector = HandoffDetector.load(own_rules, model=default_model_path())
    assert not detector.problems
    vetoed = f"{REQUEST}, my travel agent is not answering"
    assert detector.model is not None
    assert detector.model.score(normalize(vetoed)) >= detector.model.threshold
    assert not detector.detect(vetoed).handoff  # staff correct the model with a negative phrase


def test_a_doubt_phrase_lets_the_model_overrule_an_asking_rule(own_rules: Path) -> None:
    """A refusal nobody wrote a negative rule for: the asking rule matched, a doubt phrase is in
    the message too, and the model scores it low, so it stays with the bot and says why."""
    detector = HandoffDetector.load(own_rules, model=default_model_path())
    refused = detector.detect("no need to send me a florist, thanks")
    assert not refused.handoff and refused.reason.startswith('doubt:en:"no need" (model 0.')
    assert refused.matched == "no need" and refused.path == str(own_rules)
    assert refused.line == OWN_RULES.splitlines().index("    - no need") + 1
    # the doubt phrase alone decides nothing: a request the model believes still hands off
    asked = detector.detect(f"no need for more links, {REQUEST}, send me a florist")
    assert asked.handoff and asked.reason.startswith("phrase:en:")
    # without a model the rules stand as written
    assert HandoffDetector.load(own_rules).detect("no need to send me a florist, thanks").handoff


def test_a_nearly_sure_model_overrules_a_built_in_rule_but_never_staffs_own(
    tmp_path: Path,
) -> None:
    """A built-in asking rule that matched a message the model is nearly sure is no request
    ("how do I transfer a chat to another agent in the admin panel?") is overruled, and says
    so; staff's own phrase matching the same message stands. A model that scores everything
    0.00 makes the check independent of how the built-in rules and weights grow."""
    weights = tmp_path / "sure.json"
    HandoffModel({}, bias=-20.0, threshold=0.99).save(weights)
    builtin = HandoffDetector.load(None, model=weights)
    overruled = builtin.detect(REQUEST)
    assert not overruled.handoff
    assert overruled.reason.startswith("overruled:phrase:en:") and overruled.reason.endswith(
        f"(model 0.00 < {OVERRULE_BAR})")
    assert overruled.path == str(default_rules_path()) and overruled.line > 0
    assert HandoffDetector.load(None).detect(REQUEST).handoff  # without the model it stands

    own = tmp_path / "handoff_phrases.yaml"
    own.write_text("en:\n  positive:\n    - talk to a real person\n", encoding="utf-8")
    kept = HandoffDetector.load(own, model=weights).detect(REQUEST)
    assert kept.handoff and kept.path == str(own) and kept.line == 3


def test_a_broken_model_file_keeps_the_rules_and_the_last_good_model(
    tmp_path: Path, own_rules: Path
) -> None:
    weights = tmp_path / "model.json"
    weights.write_text("{not json", encoding="utf-8")
    detector = HandoffDetector.load(own_rules, model=weights)
    assert detector.model is None
    assert [(p.path, p.line) for p in detector.problems] == [(weights, 0)]
    assert "cannot read the handoff model" in detector.problems[0].message
    assert detector.detect("send me a florist").handoff and not detector.detect(REQUEST)

    weights.write_bytes(default_model_path().read_bytes())  # fixed: used without a restart
    detector.refresh()
    assert detector.model is not None and not detector.problems
    assert detector.detect(REQUEST).handoff

    weights.write_text(json.dumps({"format": 1, "weights": []}), encoding="utf-8")
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    detector.refresh()
    assert detector.problems and "not a handoff model" in detector.problems[0].message
    assert detector.detect(REQUEST).handoff  # the last good model stays


def test_missing_model_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    detector = HandoffDetector.load(None, model=tmp_path / "nope.json")
    assert detector.model is None and detector.problems
    assert detector.detect("I want to talk to a human").handoff


def test_cli_test_names_the_model_and_can_switch_it_off(own_rules: Path) -> None:
    runner = CliRunner()
    mine = ["--phrases", str(own_rules)]
    result = runner.invoke(handoff, ["test", *mine, REQUEST])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("HANDOFF")
    assert "model:score" in result.stdout and "(default_model.json)" in result.stdout
    assert f"model: {default_model_path()}" in result.stderr
    off = runner.invoke(handoff, ["test", *mine, "--model", "off", "--json", REQUEST])
    assert off.exit_code == 0, off.output
    assert json.loads(off.stdout)["handoff"] is False and "model: off" in off.stderr


def test_cli_train_writes_a_model_staff_can_use(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in DEV.read_text(encoding="utf-8").splitlines()]
    mine = [r for r in rows if r["lang"] == "en" and r["split"] == "tune"][:600]
    mine += [{"text": "I want to talk to the on-call florist", "lang": "en", "handoff": True}]
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in mine), encoding="utf-8")
    out = tmp_path / "model.json"
    runner = CliRunner()
    result = runner.invoke(handoff, ["train", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{out}: " in result.stdout and "out-of-fold" in result.stdout
    model = HandoffModel.load(out)
    assert 0.5 <= model.threshold < 1 and model.meta["examples"] == len(mine)
    used = runner.invoke(handoff, ["test", "--model", str(out), "--json", "转人工"])
    assert used.exit_code == 0 and f"model: {out}" in used.stderr

    few = tmp_path / "few.jsonl"
    few.write_text('{"text": "human please", "lang": "en", "handoff": true}\n', encoding="utf-8")
    refused = runner.invoke(handoff, ["train", str(few), "--out", str(tmp_path / "x.json")])
    assert refused.exit_code == 2 and "need at least 20 of each" in refused.output


async def test_the_bot_hands_off_on_the_models_word_and_counts_it(
    tmp_path: Path, own_rules: Path
) -> None:
    """Through the engine: the model's decision is a handoff like a phrase's, labelled ``model``
    in the metrics; with the model off, the bot answers."""
    from supportbot import metrics
    from supportbot.engine.types import Outcome
    from supportbot.testing import OfflineBot

    before = metrics.value("supportbot_handoffs_total", {"trigger": "model"})
    prompts = own_rules.parent  # a prompts folder whose only file is the rules above
    async with OfflineBot(tmp_path / "on", prompts_dir=prompts) as bot:
        assert (await bot.ask(REQUEST)).outcome is Outcome.HANDOFF
    assert metrics.value("supportbot_handoffs_total", {"trigger": "model"}) == before + 1
    async with OfflineBot(tmp_path / "off", prompts_dir=prompts, handoff_model="off") as bot:
        assert (await bot.ask(REQUEST)).outcome is not Outcome.HANDOFF
