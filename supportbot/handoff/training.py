"""Training the handoff model (:mod:`supportbot.handoff.model`) from labelled messages.

Logistic regression with numpy (installed already, for retrieval): full-batch Adam from zero,
so the same examples give the same weights, byte for byte. The threshold is not guessed: it is
the lowest score at which 5-fold out-of-fold scores on the training examples raise at most
``max_fpr`` false alarms among the messages no negative rule vetoes. ``supportbot handoff
train`` runs it on staff's own examples, ``bench/handoff_model.py`` on the shipped dev set.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from supportbot.handoff.model import HandoffModel, features, length_scale
from supportbot.handoff.normalize import normalize

if TYPE_CHECKING:
    from supportbot.handoff.scoring import Example

__all__ = ["MAX_FPR", "choose_threshold", "fit", "fold_of", "train", "train_model"]

# Out-of-fold false alarms allowed at the threshold. Chosen on four batches by new authors, each
# held out in turn, and on stackfaq's real questions: 0.3% gave recall 0.83–0.90 with 12–18
# stackfaq false alarms, 0.15% recall 0.82–0.89 with 6–11 (BENCHMARKS.md, "Handoff detection").
MAX_FPR = 0.0015


def train(
    texts: Sequence[str],
    labels: Sequence[bool],
    *,
    l2: float = 1e-4,
    epochs: int = 300,
    min_df: int = 2,
    keep: int | None = None,
    lr: float = 0.05,
) -> tuple[dict[str, float], float]:
    """Logistic regression weights ``(weights, bias)`` for raw ``texts``; deterministic.

    Full-batch Adam from zero over presence features seen in at least ``min_df`` messages,
    L2 penalty ``l2`` per feature (mean log-loss), classes weighted equally. ``keep``: only
    the strongest features by absolute weight (a smaller file; the rest count zero)."""
    import numpy as np  # training only: scoring needs no numpy

    feats = [features(normalize(t)) for t in texts]
    df: dict[str, int] = {}
    for fs in feats:
        for g in fs:
            df[g] = df.get(g, 0) + 1
    vocab = sorted(g for g, c in df.items() if c >= min_df)
    index = {g: i for i, g in enumerate(vocab)}
    rows = [sorted(index[g] for g in fs if g in index) for fs in feats]
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    cols = np.fromiter((i for r in rows for i in r), dtype=np.int64, count=int(lengths.sum()))
    row_of = np.repeat(np.arange(len(rows)), lengths)
    scale = np.array([length_scale(len(fs)) for fs in feats])
    y = np.asarray(labels, dtype=np.float64)
    pos = max(y.sum(), 1.0)
    neg = max(len(y) - y.sum(), 1.0)
    sample_w = np.where(y > 0, 0.5 / pos, 0.5 / neg)  # each class half the loss
    n_feat = len(vocab)
    w = np.zeros(n_feat)
    b = 0.0
    m_w = np.zeros(n_feat)
    v_w = np.zeros(n_feat)
    m_b = v_b = 0.0
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for t in range(1, epochs + 1):
        z = scale * np.bincount(row_of, weights=w[cols], minlength=len(rows)) + b
        p = 1.0 / (1.0 + np.exp(-z))
        g_row = (p - y) * sample_w
        g_w = np.bincount(cols, weights=(g_row * scale)[row_of], minlength=n_feat) + l2 * w
        g_b = float(g_row.sum())
        m_w = beta1 * m_w + (1 - beta1) * g_w
        v_w = beta2 * v_w + (1 - beta2) * g_w * g_w
        m_b = beta1 * m_b + (1 - beta1) * g_b
        v_b = beta2 * v_b + (1 - beta2) * g_b * g_b
        corr1, corr2 = 1 - beta1**t, 1 - beta2**t
        w -= lr * (m_w / corr1) / (np.sqrt(v_w / corr2) + eps)
        b -= lr * (m_b / corr1) / (math.sqrt(v_b / corr2) + eps)
    order = np.argsort(-np.abs(w), kind="stable")
    if keep is not None:
        order = order[:keep]
    weights = {vocab[i]: float(w[i]) for i in order if abs(w[i]) >= 1e-4}
    return weights, float(b)


def fold_of(text: str, folds: int) -> int:
    """A message's cross-validation fold: a hash of its text, so every run splits alike."""
    return zlib.crc32(text.encode("utf-8")) % folds


def choose_threshold(
    probs: Sequence[float], labels: Sequence[bool], vetoed: Sequence[bool], max_fpr: float
) -> float:
    """The lowest score at which at most ``max_fpr`` of the other messages (those no negative
    rule vetoes anyway) would hand off, rounded up to 4 decimals (what the file stores)."""
    negatives = sorted(
        (p for p, y, v in zip(probs, labels, vetoed, strict=True) if not y and not v), reverse=True
    )
    total = sum(1 for y in labels if not y)
    allowed = int(max_fpr * total)
    if allowed >= len(negatives):
        return 0.5
    worst = negatives[allowed]  # the highest-scoring other message that must stay below
    threshold = round(math.floor(worst * 10_000) / 10_000 + 1e-4, 4)
    while threshold <= worst:  # float rounding: the stored threshold must stay above it
        threshold = round(threshold + 1e-4, 4)
    return threshold


def fit(
    texts: Sequence[str],
    labels: Sequence[bool],
    vetoed: Sequence[bool],
    *,
    folds: int = 5,
    max_fpr: float = MAX_FPR,
    keep: int = 30_000,
    meta: dict | None = None,
) -> tuple[HandoffModel, list[float]]:
    """Train on everything; choose the threshold from ``folds``-fold out-of-fold scores.

    ``vetoed[i]``: a negative rule matches message ``i`` (the model never decides those).
    Returns the model and the out-of-fold probabilities (for reports)."""
    oof = [0.0] * len(texts)
    fold = [fold_of(t, folds) for t in texts]
    for k in range(folds):
        train_idx = [i for i in range(len(texts)) if fold[i] != k]
        weights, bias = train(
            [texts[i] for i in train_idx], [labels[i] for i in train_idx], keep=keep
        )
        model = HandoffModel(weights, bias, 0.5)
        for i in range(len(texts)):
            if fold[i] == k:
                oof[i] = model.score(normalize(texts[i]))
    threshold = choose_threshold(oof, labels, vetoed, max_fpr)
    weights, bias = train(texts, labels, keep=keep)
    info = {
        "examples": len(texts),
        "requests": sum(map(bool, labels)),
        "folds": folds,
        "max_fpr": max_fpr,
        **(meta or {}),
    }
    return HandoffModel(weights, bias, threshold, info), oof


def train_model(
    examples: Sequence[Example], vetoes: Callable[[str], bool], *, max_fpr: float = MAX_FPR
) -> tuple[HandoffModel, dict]:
    """The model for labelled examples (the tune split): weights from all of them, threshold
    from 5-fold out-of-fold scores at ``max_fpr`` false alarms among the messages ``vetoes``
    lets through (a negative rule matching: the model never decides those). Also returns the
    out-of-fold figures per language."""
    texts = [e.text for e in examples]
    labels = [e.handoff for e in examples]
    vetoed = [vetoes(t) for t in texts]
    langs = sorted({e.lang for e in examples})
    meta = {"languages": langs}
    model, oof = fit(texts, labels, vetoed, max_fpr=max_fpr, meta=meta)
    report: dict[str, dict] = {}
    for lang in [*langs, "all"]:
        rows = [
            (p, e.handoff, v)
            for p, e, v in zip(oof, examples, vetoed, strict=True)
            if lang in ("all", e.lang)
        ]
        asks = [p >= model.threshold and not v for p, y, v in rows if y]
        alarms = [p >= model.threshold and not v for p, y, v in rows if not y]
        report[lang] = {
            "recall": round(sum(asks) / max(len(asks), 1), 3),
            "fpr": round(sum(alarms) / max(len(alarms), 1), 4),
        }
    return model, {"out_of_fold": report}
