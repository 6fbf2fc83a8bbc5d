"""Recall and false-positive rate of the handoff rules on a labelled set, per language.

A labelled set is JSON Lines: ``{"text", "lang", "handoff": true|false, "split": "tune"|"score"}``,
optionally with ``"round"``: which blind round wrote a score line, so that each round is
reported on its own (``tests/data/handoff_dev.jsonl`` is the set that ships). Staff can keep
their own, from real conversations, and check every rule change against it with ``supportbot
handoff score FILE``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supportbot.handoff.detector import Detection, HandoffDetector

__all__ = ["Example", "LangScore", "load_examples", "score"]


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    lang: str
    handoff: bool
    split: str = ""
    round: str = ""


@dataclass(slots=True)
class LangScore:
    lang: str
    positives: int = 0
    negatives: int = 0
    hits: int = 0  # positives detected
    false_alarms: int = 0  # negatives detected
    misses: list[str] = field(default_factory=list)
    false: list[tuple[str, str]] = field(default_factory=list)  # (text, reason)

    @property
    def recall(self) -> float | None:
        return self.hits / self.positives if self.positives else None

    @property
    def fpr(self) -> float | None:
        return self.false_alarms / self.negatives if self.negatives else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "lang": self.lang,
            "positives": self.positives,
            "negatives": self.negatives,
            "recall": None if self.recall is None else round(self.recall, 4),
            "fpr": None if self.fpr is None else round(self.fpr, 4),
            "misses": self.misses,
            "false_positives": [{"text": t, "reason": r} for t, r in self.false],
        }


def load_examples(path: Path, split: str | None = None) -> list[Example]:
    """Examples from a JSON Lines file, optionally one split only; ValueError names the line."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ex = Example(str(row["text"]), str(row.get("lang") or "?"), bool(row["handoff"]),
                         str(row.get("split") or ""), str(row.get("round") or ""))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: expected {{text, lang, handoff}}: {exc}") from None
        if split is None or ex.split == split:
            out.append(ex)
    return out


def score(detector: HandoffDetector, examples: Iterable[Example]) -> dict[str, LangScore]:
    """Per-language scores plus an ``"all"`` entry."""
    table: dict[str, LangScore] = {}
    for ex in examples:
        result: Detection = detector.detect(ex.text)
        for key in (ex.lang, "all"):
            s = table.setdefault(key, LangScore(key))
            if ex.handoff:
                s.positives += 1
                s.hits += result.handoff
                if not result.handoff and key != "all":
                    s.misses.append(ex.text)
            else:
                s.negatives += 1
                s.false_alarms += result.handoff
                if result.handoff and key != "all":
                    s.false.append((ex.text, result.reason))
    return dict(sorted(table.items(), key=lambda kv: (kv[0] == "all", kv[0])))
