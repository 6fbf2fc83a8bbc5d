"""Reproduce the handoff-detection figures: recall and false-positive rate per language on the
labelled dev set, false alarms on real customer questions, and the cost of the detection, for
the detector the bot uses (built-in rules and model; ``--model off`` for the rules alone).

    .venv/bin/python bench/handoff_quality.py [--data tests/data/handoff_dev.jsonl] [--show]
        [--model builtin|off|FILE]

The dev set (``tests/data/handoff_dev.jsonl``) has a ``tune`` split, which the built-in rules
were written and the model trained against, and a ``score`` split of twenty blind rounds (14
to 33; each line says its ``round``) by authors new to the set, scored blind first and never
tuned on (see BENCHMARKS.md for the protocol); each round is also reported on its own. Real
questions that never ask for a person come from /work/shared/datasets (stackfaq's 1,249 English
queries, AFQMC's 7,784 Chinese questions) when present: every detection there is a false alarm.
Prints one JSON line per figure, then a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supportbot.handoff import HandoffDetector  # noqa: E402
from supportbot.handoff.model import model_path  # noqa: E402
from supportbot.handoff.scoring import load_examples, score  # noqa: E402

DATASETS = Path(os.environ.get("SUPPORTBOT_DATASETS", ROOT.parent / "shared" / "datasets"))
EXTERNAL = [  # (name, file, field, language)
    ("stackfaq queries", "stackfaq/queries.jsonl", "query", "en"),
    ("afqmc questions", "afqmc-train/faq.jsonl", "question", "zh"),
    ("afqmc paraphrases", "afqmc-train/queries.jsonl", "query", "zh"),
]
RESULTS: list[dict] = []


def real_questions() -> Iterator[tuple[str, str, list[str]]]:
    """(name, language, texts) of each real-question set found in DATASETS (skips the rest)."""
    for name, rel, field, lang in EXTERNAL:
        path = DATASETS / rel
        if not path.exists():
            print(f"({path} not found: skipped)", file=sys.stderr)
            continue
        with path.open(encoding="utf-8") as lines:
            yield name, lang, [json.loads(line)[field] for line in lines if line.strip()]


def emit(**row: object) -> None:
    RESULTS.append(row)
    print(json.dumps(row, ensure_ascii=False), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "tests/data/handoff_dev.jsonl")
    parser.add_argument("--show", action="store_true", help="print misses and false alarms")
    parser.add_argument("--model", default="builtin", help="builtin, off or a weights file")
    args = parser.parse_args()

    started = time.process_time()
    detector = HandoffDetector.load(None, model=model_path(args.model))
    emit(figure="load_rules", cpu_ms=round((time.process_time() - started) * 1000),
         rules=detector.rule_count, model=detector.model.path if detector.model else "off")

    for split in ("tune", "score"):
        examples = load_examples(args.data, split)
        for lang, s in score(detector, examples).items():
            emit(figure="dev_set", split=split, lang=lang, positives=s.positives,
                 negatives=s.negatives, recall=round(s.recall or 0, 4),
                 fpr=round(s.fpr or 0, 4))
            if args.show and lang != "all":
                for text in s.misses:
                    print(f"   miss [{split}/{lang}] {text}")
                for text, reason in s.false:
                    print(f"   false [{split}/{lang}] {text} <- {reason}")

    # Each blind round of the score split on its own (its first, blind figures: BENCHMARKS.md).
    rounds: dict[str, list] = {}
    for example in load_examples(args.data, "score"):
        rounds.setdefault(example.round, []).append(example)
    for name, examples in sorted(rounds.items()):
        for lang, s in score(detector, examples).items():
            emit(figure="dev_round", round=name, lang=lang, positives=s.positives,
                 negatives=s.negatives, recall=round(s.recall or 0, 4),
                 false_alarms=s.false_alarms)

    for name, lang, texts in real_questions():
        alarms = [t for t in texts if detector.detect(t).handoff]
        emit(figure="real_questions", set=name, lang=lang, messages=len(texts),
             false_alarms=len(alarms), fpr=round(len(alarms) / len(texts), 4))
        if args.show:
            for text in alarms:
                print(f"   false [{name}] {text}")

    # Cost per message, rules compiled (the first call of each rule compiles it lazily).
    examples = load_examples(args.data)
    texts = [e.text for e in examples]
    for text in texts:
        detector.detect(text)
    per_message = []
    for _ in range(3):
        started = time.perf_counter()
        for text in texts:
            detector.detect(text)
        per_message.append((time.perf_counter() - started) / len(texts) * 1e6)
    emit(figure="detect", messages=len(texts), us_per_message=round(statistics.median(per_message)))

    print()
    print(f"{'split':6} {'lang':5} {'asks':>5} {'recall':>7} {'other':>6} {'FPR':>7}")
    for row in RESULTS:
        if row["figure"] == "dev_set":
            print(f"{row['split']:6} {row['lang']:5} {row['positives']:5} {row['recall']:7.3f} "
                  f"{row['negatives']:6} {row['fpr']:7.2%}")
    for row in RESULTS:
        if row["figure"] == "dev_round" and row["lang"] == "all":
            print(f"round {row['round']:>2}: recall {row['recall']:.3f} of {row['positives']}, "
                  f"{row['false_alarms']} false alarms in {row['negatives']}")
    for row in RESULTS:
        if row["figure"] == "real_questions":
            print(f"real   {row['lang']:5} {row['set']}: {row['false_alarms']} false alarms in "
                  f"{row['messages']} ({row['fpr']:.2%})")


if __name__ == "__main__":
    main()
