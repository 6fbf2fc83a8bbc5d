"""Retrieval quality regressions: stackfaq (English), afqmc (Chinese customer questions) and
the Chinese paraphrase set written for the example FAQ, lexical retrieval as shipped.

The shared datasets live beside the repository (../shared/datasets, see ``shared_dataset`` in
conftest.py): without them these tests are skipped on a workstation, and fail in CI. Figures
are on the odd-numbered queries (the half not used for tuning; BENCHMARKS.md has all of them);
each floor is the held-out figure reached, rounded down, so a regression fails.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from supportbot.knowledge import KnowledgeBase
from supportbot.knowledge.evaluation import (
    confidence_report,
    evaluate,
    read_queries,
    split_queries,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_FAQ = REPO / "supportbot" / "defaults" / "knowledge"


async def scored_half(tmp_path: Path, src: Path) -> tuple[dict, list[dict]]:
    kdir = tmp_path / "kb"
    kdir.mkdir(parents=True)
    shutil.copy(src / "faq.jsonl", kdir / "faq.jsonl")
    kb = KnowledgeBase(kdir, tmp_path / "idx.sqlite3")
    await kb.refresh()
    try:
        return await evaluate(kb, split_queries(read_queries(src / "queries.jsonl"), "odd"))
    finally:
        await kb.aclose()


async def test_stackfaq_lexical_quality(tmp_path: Path, stackfaq: Path) -> None:
    summary, rows = await scored_half(tmp_path, stackfaq)
    assert len(rows) > 600
    assert summary["hit@1"] >= 0.74  # 0.740 (0.747 before BM25-only ranking)
    assert summary["recall@5"] >= 0.92  # 0.922


async def test_afqmc_lexical_quality(tmp_path: Path, afqmc: Path) -> None:
    summary, rows = await scored_half(tmp_path, afqmc)
    assert len(rows) > 800
    assert summary["hit@1"] >= 0.10  # 0.105; 0.097 before word segmentation, normalisation
    assert summary["recall@5"] >= 0.29  # 0.293


async def test_answers_from_the_faq_alone_are_rarely_wrong(
    tmp_path: Path, stackfaq: Path, afqmc: Path
) -> None:
    """At the default threshold the bot answering without an LLM cites a wrong entry in under
    5% of the answers it gives on stackfaq; on afqmc, whose FAQ is full of near-duplicate
    questions, it (rightly) almost never answers alone: the confidence is a margin over the
    best other entry, and nothing for an entry about another product (花呗 / 借呗) or one
    asking something more specific. The one answer left on the odd half is a label twin
    ("花呗紧急开通" -> "紧急开通花贝"; BENCHMARKS.md); it was 3, all wrong, before those rules."""
    _, rows = await scored_half(tmp_path / "s", stackfaq)
    report = confidence_report(rows, 0.5)
    assert report["wrong_share"] < 0.05 and report["answered"] >= 20, report
    _, rows = await scored_half(tmp_path / "a", afqmc)
    report = confidence_report(rows, 0.5)
    assert report["answered_share"] < 0.01 and report["answered"] <= 1, report


async def test_chinese_paraphrases(tmp_path: Path) -> None:
    kb = KnowledgeBase(EXAMPLE_FAQ, tmp_path / "idx.sqlite3")
    await kb.refresh()
    queries = read_queries(REPO / "tests" / "data" / "zh_paraphrases.jsonl")
    summary, _ = await evaluate(kb, queries)
    await kb.aclose()
    assert len(queries) >= 80
    assert summary["hit@1"] >= 0.89  # 0.900
    assert summary["recall@5"] >= 0.98  # 0.988
