"""Retrieval quality regressions: stackfaq (English) and the Chinese paraphrase set."""

from __future__ import annotations

import shutil
from pathlib import Path

from supportbot.knowledge import KnowledgeBase
from supportbot.knowledge.evaluation import evaluate, read_queries

REPO = Path(__file__).resolve().parents[1]


async def test_stackfaq_lexical_quality(tmp_path: Path, stackfaq: Path) -> None:
    """Skipped without ../shared, failed in CI without it (the ``stackfaq`` fixture)."""
    kdir = tmp_path / "kb"
    kdir.mkdir()
    shutil.copy(stackfaq / "faq.jsonl", kdir / "faq.jsonl")
    kb = KnowledgeBase(kdir, tmp_path / "idx.sqlite3")
    await kb.refresh()
    summary, rows = await evaluate(kb, read_queries(stackfaq / "queries.jsonl"))
    await kb.aclose()
    assert len(rows) > 1000
    assert summary["hit@1"] >= 0.75
    assert summary["recall@5"] >= 0.93


async def test_chinese_paraphrases(tmp_path: Path) -> None:
    kb = KnowledgeBase(REPO / "supportbot/defaults/knowledge", tmp_path / "idx.sqlite3")
    await kb.refresh()
    queries = read_queries(REPO / "tests" / "data" / "zh_paraphrases.jsonl")
    summary, _ = await evaluate(kb, queries)
    await kb.aclose()
    assert len(queries) >= 80
    assert summary["hit@1"] >= 0.85
    assert summary["recall@5"] >= 0.95
