"""Retrieval quality: hit@1, recall@5 and MRR@10 over a JSONL file of labelled queries."""

from __future__ import annotations

import json
from pathlib import Path

from supportbot.knowledge.base import KnowledgeBase


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


async def evaluate(kb: KnowledgeBase, queries: list[dict]) -> tuple[dict, list[dict]]:
    """hit@1, recall@5 and MRR@10 of ``kb`` over ``queries`` ({"query", "relevant"})."""
    rows = []
    totals = [0.0, 0.0, 0.0]
    for q in queries:
        hits = await kb.search(q["query"], k=10)
        ranked = [h.entry.id for h in hits]
        m = _metrics(ranked, set(q["relevant"]))
        totals = [a + b for a, b in zip(totals, m, strict=True)]
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
    n = max(len(queries), 1)
    summary = {
        "queries": len(queries),
        "hit@1": round(totals[0] / n, 4),
        "recall@5": round(totals[1] / n, 4),
        "mrr@10": round(totals[2] / n, 4),
    }
    return summary, rows


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
