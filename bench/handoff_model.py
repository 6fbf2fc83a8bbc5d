"""Train the shipped handoff model and measure rules alone against rules + model (issue 17).

    # --train rewrites supportbot/handoff/default_model.json
    .venv/bin/python bench/handoff_model.py --train
    .venv/bin/python bench/handoff_model.py [--model M.json] [--phrases R.yaml --no-defaults]

Training uses the ``tune`` split only; the threshold comes from 5-fold out-of-fold scores on it
(at most ``--max-fpr`` of other messages). The ``score`` split is never trained on. To measure a
round blind, give the rules as of that round's blind commit (``git show C:supportbot/handoff/
default_rules.yaml``) with ``--no-defaults`` and a model trained before it. Prints one JSON line
per figure, then a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.handoff_quality import real_questions  # noqa: E402
from supportbot.handoff import HandoffDetector, normalize  # noqa: E402
from supportbot.handoff.model import HandoffModel, default_model_path  # noqa: E402
from supportbot.handoff.scoring import load_examples  # noqa: E402
from supportbot.handoff.training import MAX_FPR, train_model  # noqa: E402


def emit(**row: object) -> None:
    print(json.dumps(row, ensure_ascii=False), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "tests/data/handoff_dev.jsonl")
    parser.add_argument("--model", type=Path, default=default_model_path(), help="weights file")
    parser.add_argument("--phrases", type=Path, default=None, help="rules file")
    parser.add_argument("--no-defaults", action="store_true", help="--phrases alone")
    parser.add_argument("--train", action="store_true", help="rebuild --model from the tune split")
    parser.add_argument("--max-fpr", type=float, default=MAX_FPR,
                        help="threshold: at most this share of out-of-fold false alarms on tune")
    parser.add_argument("--show", action="store_true", help="print misses and false alarms")
    args = parser.parse_args()

    rules = HandoffDetector.load(args.phrases, defaults=not args.no_defaults)
    if args.train:
        started = time.process_time()
        model, report = train_model(load_examples(args.data, "tune"), rules.vetoed,
                                    max_fpr=args.max_fpr)
        model.save(args.model)
        emit(figure="train", cpu_s=round(time.process_time() - started, 1),
             features=len(model.weights), threshold=model.threshold,
             bytes=args.model.stat().st_size, **report)

    started = time.process_time()
    both = HandoffDetector.load(args.phrases, defaults=not args.no_defaults, model=args.model)
    model: HandoffModel | None = both.model
    assert model is not None, both.problems
    emit(figure="load_model", cpu_ms=round((time.process_time() - started) * 1000, 1),
         features=len(model.weights), threshold=model.threshold)

    table: dict[str, list[int]] = {}
    for ex in load_examples(args.data, "score"):
        by_rules = rules.detect(ex.text).handoff
        combined = both.detect(ex.text).handoff
        model_says = model.score(normalize(ex.text)) >= model.threshold
        for key in (ex.lang, "all"):
            t = table.setdefault(key, [0] * 8)
            base = 0 if ex.handoff else 4
            t[base] += 1
            t[base + 1] += by_rules
            t[base + 2] += model_says
            t[base + 3] += combined
        if args.show and ex.handoff != combined:
            print(f"   {'miss' if ex.handoff else 'false'} [{ex.lang}] {ex.text}")
    for lang, t in sorted(table.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        emit(figure="score_split", lang=lang, requests=t[0], others=t[4],
             recall_rules=round(t[1] / t[0], 3), recall_model=round(t[2] / t[0], 3),
             recall_both=round(t[3] / t[0], 3), fa_rules=t[5], fa_model=t[6], fa_both=t[7],
             fpr_rules=round(t[5] / t[4], 4), fpr_both=round(t[7] / t[4], 4))

    for name, lang, texts in real_questions():
        alarms = [t for t in texts if both.detect(t).handoff]
        emit(figure="real_questions", set=name, lang=lang, messages=len(texts),
             false_alarms_rules=sum(rules.detect(t).handoff for t in texts),
             false_alarms_both=len(alarms))
        if args.show:
            for text in alarms:
                print(f"   false [{name}] {text}")

    texts = [e.text for e in load_examples(args.data)]
    for text in texts:
        both.detect(text)
    per_message = []
    for _ in range(3):
        started = time.process_time()
        for text in texts:
            both.detect(text)
        per_message.append((time.process_time() - started) / len(texts) * 1e6)
    emit(figure="detect", messages=len(texts),
         cpu_us_per_message=round(statistics.median(per_message)))

    print(f"\n{'lang':5} {'asks':>4} {'rules':>6} {'model':>6} {'both':>6} | {'other':>5} "
          f"{'rules':>6} {'model':>6} {'both':>6}")
    for lang, t in sorted(table.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        print(f"{lang:5} {t[0]:4} {t[1] / t[0]:6.3f} {t[2] / t[0]:6.3f} {t[3] / t[0]:6.3f} | "
              f"{t[4]:5} {t[5] / t[4]:6.2%} {t[6] / t[4]:6.2%} {t[7] / t[4]:6.2%}")


if __name__ == "__main__":
    main()
