"""Reproduce the FAQ retrieval figures: quality on stackfaq and on the Chinese paraphrase set,
index build time and search latency at 10,000 entries.

    .venv/bin/python bench/retrieval_quality.py [--stackfaq DIR] [--embeddings-url URL]

``--embeddings-url`` (e.g. http://127.0.0.1:8765/v1, see bench/embeddings_server.py) adds the
hybrid figures. Prints one JSON line per figure, then a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supportbot.knowledge import Embedder, KnowledgeBase, load_directory  # noqa: E402
from supportbot.knowledge.evaluation import evaluate, read_queries  # noqa: E402

RESULTS: list[dict] = []


def emit(**row: object) -> None:
    RESULTS.append(row)
    print(json.dumps(row, ensure_ascii=False), flush=True)


def baseline(entries, queries, tokenize: str, query_terms, columns: str = "qa") -> dict:
    """Plain FTS5 bm25 over question+answer with the given tokenizer, as a reference point."""
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE VIRTUAL TABLE f USING fts5(id UNINDEXED, q, a, tokenize = '{tokenize}')")
    for e in entries:
        q = "\n".join([e.question, *e.alternatives])
        db.execute("INSERT INTO f VALUES (?,?,?)", (e.id, q, e.answer))
    h1 = r5 = mrr = 0.0
    for item in queries:
        terms = query_terms(item["query"])
        ranked = []
        if terms:
            expr = " OR ".join('"' + t.replace('"', '""') + '"' for t in dict.fromkeys(terms))
            ranked = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM f WHERE f MATCH ? ORDER BY rank LIMIT 10", (expr,)
                )
            ]
        rel = set(item["relevant"])
        h1 += bool(ranked[:1]) and ranked[0] in rel
        r5 += len(rel & set(ranked[:5])) / len(rel)
        mrr += next((1 / i for i, x in enumerate(ranked, 1) if x in rel), 0.0)
    n = len(queries)
    return {"hit@1": round(h1 / n, 4), "recall@5": round(r5 / n, 4), "mrr@10": round(mrr / n, 4)}


def words(text: str) -> list[str]:
    import re

    return re.findall(r"\w+", text.lower())


def trigrams(text: str) -> list[str]:
    s = "".join(text.split())
    return [s[i : i + 3] for i in range(len(s) - 2)] or ([s] if s else [])


async def quality(name: str, kdir: Path, queries_file: Path, embedder: Embedder | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        kb = KnowledgeBase(kdir, Path(tmp) / "index.sqlite3", embedder)
        await kb.refresh()
        summary, _ = await evaluate(kb, read_queries(queries_file))
        await kb.aclose()
    emit(figure=name, mode="hybrid" if embedder else "lexical", **summary)


def synthetic_corpus(src: list, n: int, dest: Path) -> None:
    rng = random.Random(7)
    vocab = [w for e in src for w in words(e.question + " " + e.answer)]
    with (dest / "big.jsonl").open("w") as f:
        for i in range(n):
            base = src[i % len(src)]
            q = base.question + " " + " ".join(rng.choices(vocab, k=4))
            a = base.answer + " " + " ".join(rng.choices(vocab, k=30))
            f.write(json.dumps({"id": f"e{i}", "question": q, "answer": a}) + "\n")


async def scale(src_entries, queries) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        kdir = Path(tmp) / "kb"
        kdir.mkdir()
        synthetic_corpus(src_entries, 10_000, kdir)
        index = Path(tmp) / "index.sqlite3"
        t = time.perf_counter()
        kb = KnowledgeBase(kdir, index)
        await kb.refresh()
        build = time.perf_counter() - t
        await kb.aclose()
        t = time.perf_counter()
        kb = KnowledgeBase(kdir, index)
        await kb.refresh()
        reopen = time.perf_counter() - t
        times = []
        for item in queries[:500]:
            t = time.perf_counter()
            await kb.search(item["query"], k=5)
            times.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        await kb.refresh()
        noop = (time.perf_counter() - t) * 1000
        await kb.aclose()
    times.sort()
    emit(
        figure="scale-10k",
        entries=10_000,
        build_s=round(build, 2),
        reopen_s=round(reopen, 3),
        noop_refresh_ms=round(noop, 2),
        search_p50_ms=round(statistics.median(times), 3),
        search_p95_ms=round(times[int(len(times) * 0.95)], 3),
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stackfaq", type=Path, default=ROOT.parent / "shared/datasets/stackfaq")
    parser.add_argument("--embeddings-url", default=None)
    parser.add_argument("--embeddings-model", default="all-MiniLM-L6-v2")
    args = parser.parse_args()

    zh_queries = ROOT / "tests/data/zh_paraphrases.jsonl"
    zh_entries, _ = load_directory(ROOT / "knowledge")
    zq = read_queries(zh_queries)
    await quality("zh-paraphrases", ROOT / "knowledge", zh_queries, None)
    emit(
        figure="zh-paraphrases",
        mode="fts5-trigram",
        **baseline(zh_entries, zq, "trigram", trigrams),
    )

    if args.stackfaq.is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            kdir = Path(tmp) / "kb"
            kdir.mkdir()
            shutil.copy(args.stackfaq / "faq.jsonl", kdir / "faq.jsonl")
            qfile = args.stackfaq / "queries.jsonl"
            entries, _ = load_directory(kdir)
            queries = read_queries(qfile)
            emit(
                figure="stackfaq",
                mode="fts5-plain-bm25",
                **baseline(entries, queries, "unicode61", words),
            )
            await quality("stackfaq", kdir, qfile, None)
            if args.embeddings_url:
                emb = Embedder(args.embeddings_url, args.embeddings_model, timeout=120)
                await quality("stackfaq", kdir, qfile, emb)
            await scale(entries, queries)
    else:
        print(f"stackfaq not found at {args.stackfaq}: skipping its figures", file=sys.stderr)

    print()
    print(f"{'figure':<16}{'mode':<18}{'hit@1':>8}{'recall@5':>10}{'MRR@10':>8}")
    for r in RESULTS:
        if "hit@1" in r:
            print(
                f"{r['figure']:<16}{r['mode']:<18}{r['hit@1']:>8.3f}{r['recall@5']:>10.3f}"
                f"{r['mrr@10']:>8.3f}"
            )
        else:
            print(
                f"{r['figure']:<16}" + "  ".join(f"{k}={v}" for k, v in r.items() if k != "figure")
            )


if __name__ == "__main__":
    asyncio.run(main())
