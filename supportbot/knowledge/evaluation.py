"""Retrieval quality: hit@1, recall@5 and MRR@10 over a JSONL file of labelled queries, and how
the "answer from the FAQ alone" threshold behaves on them.

Constants of the retrieval (scoring weights, the confidence threshold) are chosen on one half of
a query set and reported on the other, so that a figure is not flattered by tuning on the very
queries it is measured on. The halves are fixed: queries at even positions of the file
(``even``, the tuning half) and at odd positions (``odd``, the scored half).
"""

from __future__ import annotations

import json
from pathlib import Path

from supportbot.knowledge.base import KnowledgeBase

SPLITS = ("all", "even", "odd")


class QueryFileError(ValueError):
    pass


def _metrics(ranked: list[str], relevant: set[str]) -> tuple[float, float, float]:
    hit1 = 1.0 if ranked[:1] and ranked[0] in relevant else 0.0
    recall5 = len(relevant & set(ranked[:5])) / len(relevant) if relevant else 0.0
    mrr = 0.0
    for i, rid in enumerate(ranked[:10], start=1):
        if rid in relevant:
            mrr = 1.0 / i
            break
    return hit1, recall5, mrr


def split_queries(queries: list[dict], split: str) -> list[dict]:
    """``all``, or the queries at ``even`` / ``odd`` positions of the file (0-based)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    if split == "all":
        return queries
    start = 0 if split == "even" else 1
    return queries[start::2]


def summarise(rows: list[dict]) -> dict:
    n = max(len(rows), 1)
    return {
        "queries": len(rows),
        **{m: round(sum(r[m] for r in rows) / n, 4) for m in ("hit@1", "recall@5", "mrr@10")},
    }


async def evaluate(kb: KnowledgeBase, queries: list[dict]) -> tuple[dict, list[dict]]:
    """hit@1, recall@5 and MRR@10 of ``kb`` over ``queries`` ({"query", "relevant"})."""
    rows = []
    for q in queries:
        hits = await kb.search(q["query"], k=10)
        ranked = [h.entry.id for h in hits]
        m = _metrics(ranked, set(q["relevant"]))
        rows.append(
            {
                "query": q["query"],
                "relevant": q["relevant"],
                "ranked": ranked,
                "scores": [h.score for h in hits],
                "hit@1": m[0],
                "recall@5": m[1],
                "mrr@10": m[2],
            }
        )
    return summarise(rows), rows


def confidence_report(rows: list[dict], threshold: float) -> dict:
    """What the bot would do without an LLM at ``threshold`` (``SUPPORTBOT_FAQ_CONFIDENCE``):
    answer with the top entry when its confidence reaches the threshold, else say it does not
    know. ``wrong_share`` is the share of the answers given that cite a wrong entry;
    ``missed_share`` the share of queries whose right entry was at rank 1 but below the
    threshold (an "I don't know" that could have been an answer)."""
    answered = [r for r in rows if r["scores"] and r["scores"][0] >= threshold]
    wrong = sum(1 for r in answered if r["hit@1"] < 1.0)
    missed = sum(
        1 for r in rows if r["hit@1"] >= 1.0 and not (r["scores"] and r["scores"][0] >= threshold)
    )
    n = max(len(rows), 1)
    return {
        "threshold": threshold,
        "answered": len(answered),
        "answered_share": round(len(answered) / n, 4),
        "wrong_share": round(wrong / max(len(answered), 1), 4),
        "missed_share": round(missed / n, 4),
    }


def read_queries(path: Path) -> list[dict]:
    queries = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if not isinstance(item["query"], str) or not isinstance(item["relevant"], list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise QueryFileError(
                f'{path}:{lineno}: expected {{"query": ..., "relevant": [ids]}}'
            ) from None
        queries.append(item)
    return queries
