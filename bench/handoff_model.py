"""An n-gram model beside the handoff rules (issue 17; not shipped): train it, and measure rules
alone, model alone and both per language on the blind ``score`` split, plus false alarms on
real questions.

    .venv/bin/python bench/handoff_model.py --model /tmp/m.json --train [--max-fpr 0.003]
    .venv/bin/python bench/handoff_model.py --model /tmp/m.json [--phrases R.yaml --no-defaults]

Training uses the ``tune`` split only; the threshold comes from 5-fold out-of-fold scores on it
(at most ``--max-fpr`` of other messages). The ``score`` split is never trained on. "Both" hands
off when a rule fires, or when the model's score reaches the threshold and no negative rule
matches anywhere in the message (and no negative rule vetoed a phrase). To measure a round
blind, give the rules as of that round's blind commit (``git show C:supportbot/handoff/
default_rules.yaml``) with ``--no-defaults``. Prints one JSON line per figure, then a table.
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

from bench.handoff_ngram import HandoffModel, train_model  # noqa: E402
from bench.handoff_quality import real_questions  # noqa: E402
from supportbot.handoff import Detection, HandoffDetector, normalize  # noqa: E402
from supportbot.handoff.patterns import word_starts  # noqa: E402
from supportbot.handoff.scoring import load_examples  # noqa: E402


def emit(**row: object) -> None:
    print(json.dumps(row, ensure_ascii=False), flush=True)


def vetoes(rules: HandoffDetector):  # -> Callable[[str], bool]
    """Does a negative rule (a mention, a refusal) match anywhere in the text? The model never
    hands those off: it cannot say which words it read as the request."""

    def vetoed(text: str) -> bool:
        norm = normalize(text)
        _, negative = rules.rules.live(norm)
        starts = word_starts(norm)
        return any(neg.spans(norm, starts) for neg in negative)

    return vetoed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "tests/data/handoff_dev.jsonl")
    parser.add_argument("--model", type=Path, required=True, help="weights file (JSON)")
    parser.add_argument("--phrases", type=Path, default=None,
                        help="rules file (with --no-defaults: alone, e.g. the rules as of a "
                        "round's blind commit)")
    parser.add_argument("--no-defaults", action="store_true")
    parser.add_argument("--train", action="store_true", help="rebuild --model from the tune split")
    parser.add_argument("--max-fpr", type=float, default=0.003,
                        help="threshold: at most this share of out-of-fold false alarms on tune")
    parser.add_argument("--show", action="store_true", help="print misses and false alarms")
    args = parser.parse_args()

    rules = HandoffDetector.load(args.phrases, defaults=not args.no_defaults)
    if args.train:
        started = time.process_time()
        model, report = train_model(load_examples(args.data, "tune"), vetoes(rules),
                                    max_fpr=args.max_fpr)
        model.save(args.model)
        emit(figure="train", cpu_s=round(time.process_time() - started, 1),
             features=len(model.weights), threshold=model.threshold,
             bytes=args.model.stat().st_size, **report)

    started = time.process_time()
    model = HandoffModel.load(args.model)
    emit(figure="load_model", cpu_ms=round((time.process_time() - started) * 1000, 1),
         features=len(model.weights), threshold=model.threshold)
    veto = vetoes(rules)

    def by_model(text: str) -> bool:
        return model.score(normalize(text)) >= model.threshold and not veto(text)

    def both(text: str) -> bool:
        found: Detection = rules.detect(text)
        return found.handoff or (found.reason == "none" and by_model(text))

    table: dict[tuple[str, str], list[int]] = {}
    for ex in load_examples(args.data, "score"):
        by_rules = rules.detect(ex.text).handoff
        combined = both(ex.text)
        model_says = by_model(ex.text)
        for key in (ex.lang, "all"):
            t = table.setdefault(("score", key), [0] * 8)
            if ex.handoff:
                t[0] += 1
                t[1] += by_rules
                t[2] += model_says
                t[3] += combined
            else:
                t[4] += 1
                t[5] += by_rules
                t[6] += model_says
                t[7] += combined
        if args.show and ex.handoff and not combined:
            print(f"   miss [{ex.lang}] {ex.text}")
        if args.show and not ex.handoff and combined:
            print(f"   false [{ex.lang}] {'model' if not by_rules else 'rules'}: {ex.text}")
    for (split, lang), t in sorted(table.items(), key=lambda kv: (kv[0][1] == "all", kv[0])):
        emit(figure="blind", split=split, lang=lang, requests=t[0], others=t[4],
             recall_rules=round(t[1] / t[0], 3), recall_model=round(t[2] / t[0], 3),
             recall_both=round(t[3] / t[0], 3), fa_rules=t[5], fa_model=t[6], fa_both=t[7],
             fpr_rules=round(t[5] / t[4], 4), fpr_model=round(t[6] / t[4], 4),
             fpr_both=round(t[7] / t[4], 4))

    for name, lang, texts in real_questions():
        by_rules = sum(rules.detect(t).handoff for t in texts)
        alarms = [t for t in texts if both(t)]
        emit(figure="real_questions", set=name, lang=lang, messages=len(texts),
             false_alarms_rules=by_rules, false_alarms_both=len(alarms))
        if args.show:
            for text in alarms:
                print(f"   false [{name}] {text}")

    texts = [e.text for e in load_examples(args.data)]
    for text in texts:
        both(text)
    per_message = []
    for _ in range(3):
        started = time.process_time()
        for text in texts:
            both(text)
        per_message.append((time.process_time() - started) / len(texts) * 1e6)
    emit(figure="detect", messages=len(texts), cpu_us_per_message=round(statistics.median(
        per_message)))

    print(f"\n{'lang':5} {'asks':>4} {'rules':>6} {'model':>6} {'both':>6} | {'other':>5} "
          f"{'rules':>6} {'model':>6} {'both':>6}")
    for (_, lang), t in sorted(table.items(), key=lambda kv: (kv[0][1] == "all", kv[0])):
        print(f"{lang:5} {t[0]:4} {t[1] / t[0]:6.3f} {t[2] / t[0]:6.3f} {t[3] / t[0]:6.3f} | "
              f"{t[4]:5} {t[5] / t[4]:6.2%} {t[6] / t[4]:6.2%} {t[7] / t[4]:6.2%}")


if __name__ == "__main__":
    main()
