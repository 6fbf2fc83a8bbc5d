"""The statistical layer of handoff detection: a small linear model beside the rules.

Why: the rules catch the wording they were written from, but every new author brings
constructions no phrase has seen: on round 14 of the dev set, written by someone new, the rules
alone caught 0.69 of the requests, the rules with this model 0.86, at the same false alarms
(BENCHMARKS.md, "Handoff detection"). Character n-grams generalise across inflections, typos and
word order ("passe-moi un conseiller", "свяжите с оператором") without a phrase per variant, and
a linear model stays explainable: the decision is a sum of weights, and
:meth:`HandoffModel.explain` names the n-grams that pushed it.

It mostly decides what the rules leave open (see :class:`~supportbot.handoff.HandoffDetector`):
no asking rule matched and no negative rule touches the message, so "my travel agent" or "I don't
need a human" keep vetoing it, and staff correct it with negative phrases. Beyond that it only
overrules an asking rule's match with a doubt phrase in the message, or a built-in rule's when
it is nearly sure the message is no request. The weights ship inside the package
(``default_model.json``, trained by :mod:`supportbot.handoff.training` on the ``tune`` split
of ``tests/data/handoff_dev.jsonl``); ``SUPPORTBOT_HANDOFF_MODEL`` names another
file (``supportbot handoff train`` writes one from staff's own labelled messages) or ``off``.
Features come from the rules' normal form (:func:`~supportbot.handoff.normalize`). Presence, not
counts. Loading is a ``json.load``; scoring a few hundred dict look-ups.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

from supportbot.handoff.normalize import CJK_RE, normalize

__all__ = [
    "Explanation",
    "HandoffModel",
    "default_model_path",
    "features",
    "label",
    "length_scale",
    "model_path",
]

_CJK_RUN = re.compile(CJK_RE.pattern + "+")
FORMAT = 2  # 2: weights count sqrt(LENGTH_REF / n) in long messages (1: bench, session 5)
LENGTH_REF = 150  # features of a message of ~40 characters; the median message has ~130


def length_scale(count: int) -> float:
    """A long message's features count less: its sum of weights is scaled by
    ``sqrt(LENGTH_REF / count)`` above ``LENGTH_REF`` features, so a long polite email does not
    add up to a request from many weak n-grams (held-out formal emails: 7 false alarms in 310
    without it, 3 with it, at about the same recall)."""
    if count <= LENGTH_REF:
        return 1.0
    return math.sqrt(LENGTH_REF / count)


def default_model_path() -> Path:
    return Path(__file__).with_name("default_model.json")


def model_path(setting: str) -> Path | None:
    """The weights file ``SUPPORTBOT_HANDOFF_MODEL`` names: ``builtin``, ``off`` or a path."""
    value = setting.strip()
    if value.lower() in ("", "off", "none", "false", "0"):
        return None
    if value.lower() == "builtin":
        return default_model_path()
    return Path(value).expanduser()


def features(norm: str) -> set[str]:
    """The n-grams of normalised text: what the model weighs.

    CJK runs (no spaces) give 1–4-character n-grams. The rest gives 2–5-character n-grams over
    the text with spaces at word edges (so a feature knows where words start and end, and can
    span two: "o a h" in "to a human"), plus its words (``w:agent``) and word pairs
    (``b:talk_to``), which measured better than characters alone (leave-one-batch-out on the
    tune split, recall at 0.3% false alarms: 0.757 against 0.724)."""
    out: set[str] = set()
    for run in _CJK_RUN.findall(norm):
        for n in (1, 2, 3, 4):
            for i in range(len(run) - n + 1):
                out.add(run[i : i + n])
    words = _CJK_RUN.sub(" ", norm).split()
    if words:
        padded = f" {' '.join(words)} "
        for n in (2, 3, 4, 5):
            for i in range(len(padded) - n + 1):
                gram = padded[i : i + n]
                if gram.strip():
                    out.add(gram)
        out.update("w:" + w for w in words)
        out.update(f"b:{a}_{b}" for a, b in pairwise(words))
    return out


def label(gram: str) -> str:
    """A feature as staff read it: ``w:agent`` → ``agent``, ``b:talk_to`` → ``talk to``,
    character n-grams as they are (a space marks a word edge: " agen")."""
    if gram.startswith("w:"):
        return gram[2:]
    if gram.startswith("b:"):
        return gram[2:].replace("_", " ")
    return gram


@dataclass(frozen=True, slots=True)
class Explanation:
    """A model decision: its probability and the n-grams that pushed it most (weight each)."""

    score: float
    top: tuple[tuple[str, float], ...]

    def grams(self, count: int = 5) -> str:
        """The strongest n-grams as staff read them, each with its weight."""
        return ", ".join(f'"{label(g)}" {w:+.2f}' for g, w in self.top[:count])

    def describe(self, count: int = 5) -> str:
        return f"score {self.score:.2f}: {self.grams(count)}"


class HandoffModel:
    """Weights per n-gram, a bias and a threshold chosen on the tune split (see ``train``)."""

    def __init__(
        self,
        weights: dict[str, float],
        bias: float,
        threshold: float,
        meta: dict | None = None,
        path: str = "",
    ) -> None:
        self.weights = weights
        self.bias = bias
        self.threshold = threshold
        self.meta = meta or {}
        self.path = path  # where it was loaded from: named in each decision it makes

    @classmethod
    def load(cls, path: Path) -> HandoffModel:
        """A weights file written by :meth:`save`; ValueError says what is wrong with it."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read the handoff model: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path}: not a handoff model (format {FORMAT})")
        try:
            weights = {str(g): float(w) for g, w in data["weights"].items()}
            return cls(
                weights,
                float(data["bias"]),
                float(data["threshold"]),
                dict(data.get("meta") or {}),
                str(path),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{path}: not a handoff model: {exc!r}") from None

    def save(self, path: Path) -> None:
        """Sorted keys and rounded weights: the same training data gives the same bytes."""
        data = {
            "format": FORMAT,
            "bias": round(self.bias, 4),
            "threshold": round(self.threshold, 4),
            "meta": self.meta,
            "weights": {g: round(w, 4) for g, w in sorted(self.weights.items())},
        }
        Path(path).write_text(
            json.dumps(data, ensure_ascii=False, sort_keys=True, indent=0) + "\n", encoding="utf-8"
        )

    def logit(self, norm: str) -> float:
        w = self.weights
        grams = features(norm)
        return self.bias + length_scale(len(grams)) * sum(w.get(g, 0.0) for g in grams)

    def score(self, norm: str) -> float:
        """Probability that normalised text asks for a person."""
        return _sigmoid(self.logit(norm))

    def explain(self, text: str, *, normalized: bool = False, count: int = 5) -> Explanation:
        """The score and the ``count`` n-grams with the largest weights present."""
        norm = text if normalized else normalize(text)
        w = self.weights
        grams = features(norm)
        scale = length_scale(len(grams))
        present = [(g, w[g] * scale) for g in grams if g in w]
        logit = self.bias + sum(v for _, v in present)
        present.sort(key=lambda gv: (-gv[1], gv[0]))
        return Explanation(_sigmoid(logit), tuple(present[:count]))


@lru_cache(maxsize=4)
def load_cached(path: Path, stamp: tuple[int, int]) -> HandoffModel:
    """One parsed model per file version and process (the built-in one is ~0.5 MB of JSON)."""
    return HandoffModel.load(path)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x > -60 else 0.0
