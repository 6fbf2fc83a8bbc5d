"""Reproduce the FAQ retrieval figures: quality on stackfaq and on the Chinese paraphrase set,
index build time and search latency at 10,000 entries.

    .venv/bin/python bench/retrieval_quality.py [--stackfaq DIR] [--embeddings-url URL] [--tune]

``--embeddings-url`` (e.g. http://127.0.0.1:8765/v1, see bench/embeddings_server.py) adds the
hybrid figures. stackfaq figures are also given on two fixed random halves of its queries (seed
0), because the lexical constants and the hybrid weights were chosen on these queries;
``--tune`` re-runs the hybrid weight search on half A and reports it on half B (and swapped).
With jieba importable (a scratch venv, never a dependency) the Chinese set is also scored with
jieba segmentation. Dense latency at 10k uses an in-process deterministic embedder (no HTTP),
with numpy when it is importable and with the pure-Python fallback. Prints one JSON line per
figure, then a table.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supportbot.knowledge import Embedder, KnowledgeBase, load_directory, scoring  # noqa: E402
from supportbot.knowledge import text as ktext  # noqa: E402
from supportbot.knowledge import vectors as kvectors  # noqa: E402
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


def halves(n: int) -> tuple[set[int], set[int]]:
    order = list(range(n))
    random.Random(0).shuffle(order)
    return set(order[: n // 2]), set(order[n // 2 :])


def summarise(rows: list[dict], picked: set[int] | None = None) -> dict:
    sel = [r for i, r in enumerate(rows) if picked is None or i in picked]
    n = max(len(sel), 1)
    return {
        "queries": len(sel),
        **{m: round(sum(r[m] for r in sel) / n, 4) for m in ("hit@1", "recall@5", "mrr@10")},
    }


async def quality(
    name: str,
    kdir: Path,
    queries_file: Path,
    embedder: Embedder | None,
    split: bool = False,
    mode: str | None = None,
) -> list[dict]:
    queries = read_queries(queries_file)
    with tempfile.TemporaryDirectory() as tmp:
        kb = KnowledgeBase(kdir, Path(tmp) / "index.sqlite3", embedder)
        await kb.refresh()
        if embedder is not None:  # one batched request per 64 queries instead of one each
            await embedder.embed_queries([q["query"] for q in queries])
        summary, rows = await evaluate(kb, queries)
        await kb.aclose()
    mode = mode or ("hybrid" if embedder else "lexical")
    emit(figure=name, mode=mode, **summary)
    if split:
        a, b = halves(len(rows))
        emit(figure=name, mode=f"{mode} half-A", **summarise(rows, a))
        emit(figure=name, mode=f"{mode} half-B", **summarise(rows, b))
    return rows


TUNE_DOC = (0.0, 0.25, 0.5, 1.0)
TUNE_DENSE = (0.5, 0.6, 0.75, 0.85, 1.0)


async def tune(kdir: Path, queries_file: Path, embedder: Embedder) -> None:
    """Pick DOC_WEIGHT x DENSE_WEIGHT on one half of the queries, report the other half."""
    queries = read_queries(queries_file)
    a, b = halves(len(queries))
    saved = scoring.DOC_WEIGHT, scoring.DENSE_WEIGHT
    with tempfile.TemporaryDirectory() as tmp:
        kb = KnowledgeBase(kdir, Path(tmp) / "index.sqlite3", embedder)
        await kb.refresh()
        await embedder.embed_queries([q["query"] for q in queries])
        grid: dict[tuple[float, float], list[dict]] = {}
        try:
            for doc in TUNE_DOC:
                for dense in TUNE_DENSE:
                    kb._dense.doc_weight = doc
                    scoring.DENSE_WEIGHT = dense
                    grid[doc, dense] = (await evaluate(kb, queries))[1]
        finally:
            scoring.DOC_WEIGHT, scoring.DENSE_WEIGHT = saved
            kb._dense.doc_weight = saved[0]
        await kb.aclose()
    for train, test, label in ((a, b, "A->B"), (b, a, "B->A")):
        best = max(grid, key=lambda g: (summarise(grid[g], train)["hit@1"], -g[0], -g[1]))
        emit(
            figure="stackfaq",
            mode=f"tuned {label}",
            doc_weight=best[0],
            dense_weight=best[1],
            train_hit1=summarise(grid[best], train)["hit@1"],
            **summarise(grid[best], test),
        )


def jieba_cjk_terms(mode: str):
    import jieba

    def cjk_terms(run: str) -> list[str]:
        words = jieba.lcut_for_search(run) if mode == "search" else jieba.lcut(run)
        out = [w for w in words if len(w) > 1 or w not in ktext.CJK_STOP_CHARS]
        if mode == "words+unigrams":
            out.extend(ch for ch in run if ch not in ktext.CJK_STOP_CHARS and ch not in out)
        return out

    return cjk_terms


async def chinese_jieba(kdir: Path, queries_file: Path) -> None:
    try:
        t = time.perf_counter()
        import jieba

        jieba.setLogLevel(60)
        jieba.initialize()
        load = time.perf_counter() - t
    except ImportError:
        print("jieba not importable: skipping the jieba comparison", file=sys.stderr)
        return
    emit(figure="jieba-load", seconds=round(load, 3))
    original = ktext._cjk_terms
    try:
        for mode in ("words", "words+unigrams", "search"):
            ktext._cjk_terms = jieba_cjk_terms(mode)
            await quality("zh-paraphrases", kdir, queries_file, None, mode=f"jieba {mode}")
    finally:
        ktext._cjk_terms = original


def synthetic_corpus(src: list, n: int, dest: Path) -> None:
    rng = random.Random(7)
    vocab = [w for e in src for w in words(e.question + " " + e.answer)]
    with (dest / "big.jsonl").open("w") as f:
        for i in range(n):
            base = src[i % len(src)]
            q = base.question + " " + " ".join(rng.choices(vocab, k=4))
            a = base.answer + " " + " ".join(rng.choices(vocab, k=30))
            f.write(json.dumps({"id": f"e{i}", "question": q, "answer": a}) + "\n")


class HashEmbedder(Embedder):
    """In-process stand-in for an embeddings endpoint: deterministic 384-dim unit vectors."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9", "hash-384", query_cache_size=4096)

    async def embed(self, texts):  # type: ignore[override]
        out = []
        for text in texts:
            raw = hashlib.shake_256(text.encode()).digest(384)
            vec = [b - 127.5 for b in raw]
            norm = math.sqrt(sum(v * v for v in vec))
            out.append(array("f", (v / norm for v in vec)))
        return out


async def timed_searches(kb: KnowledgeBase, queries: list[str]) -> list[float]:
    times = []
    for q in queries:
        t = time.perf_counter()
        await kb.search(q, k=5)
        times.append((time.perf_counter() - t) * 1000)
    return sorted(times)


def latency(times: list[float]) -> dict:
    return {
        "searches": len(times),
        "search_p50_ms": round(statistics.median(times), 3),
        "search_p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 3),
    }


async def scale(src_entries, queries) -> None:
    texts = [item["query"] for item in queries[:500]]
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
        times = await timed_searches(kb, texts)
        t = time.perf_counter()
        await kb.refresh()
        noop = (time.perf_counter() - t) * 1000
        await kb.aclose()
        emit(
            figure="scale-10k",
            mode="lexical",
            entries=10_000,
            build_s=round(build, 2),
            reopen_s=round(reopen, 3),
            noop_refresh_ms=round(noop, 2),
            **latency(times),
        )
        # hybrid: the query vectors are in the LRU first, so this is search time without HTTP
        backends = ["numpy", "python"] if kvectors.HAVE_NUMPY else ["python"]
        for backend in backends:
            saved = kvectors.HAVE_NUMPY
            kvectors.HAVE_NUMPY = backend == "numpy"
            try:
                emb = HashEmbedder()
                t = time.perf_counter()
                kb = KnowledgeBase(kdir, index, emb)
                await kb.refresh()
                load = time.perf_counter() - t
                assert kb.dense_backend == backend
                sample = texts if backend == "numpy" else texts[:20]
                await emb.embed_queries(sample)
                times = await timed_searches(kb, sample)
                await kb.aclose()
            finally:
                kvectors.HAVE_NUMPY = saved
            emit(
                figure="scale-10k",
                mode=f"hybrid {backend}",
                entries=10_000,
                dim=384,
                embed_and_load_s=round(load, 2),
                **latency(times),
            )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stackfaq", type=Path, default=ROOT.parent / "shared/datasets/stackfaq")
    parser.add_argument("--embeddings-url", default=None)
    parser.add_argument("--embeddings-model", default="all-MiniLM-L6-v2")
    parser.add_argument("--tune", action="store_true", help="held-out search of hybrid weights")
    args = parser.parse_args()

    zh_queries = ROOT / "tests/data/zh_paraphrases.jsonl"
    zh_entries, _ = load_directory(ROOT / "supportbot/defaults/knowledge")
    zq = read_queries(zh_queries)
    await quality("zh-paraphrases", ROOT / "supportbot/defaults/knowledge", zh_queries, None)
    emit(
        figure="zh-paraphrases",
        mode="fts5-trigram",
        **baseline(zh_entries, zq, "trigram", trigrams),
    )
    await chinese_jieba(ROOT / "supportbot/defaults/knowledge", zh_queries)

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
            await quality("stackfaq", kdir, qfile, None, split=True)
            if args.embeddings_url:
                emb = Embedder(
                    args.embeddings_url, args.embeddings_model, timeout=600, query_cache_size=4096
                )
                await quality("stackfaq", kdir, qfile, emb, split=True)
                if args.tune:
                    await tune(kdir, qfile, emb)
                await emb.aclose()
            await scale(entries, queries)
    else:
        print(f"stackfaq not found at {args.stackfaq}: skipping its figures", file=sys.stderr)

    print()
    print(f"{'figure':<16}{'mode':<24}{'queries':>8}{'hit@1':>8}{'recall@5':>10}{'MRR@10':>8}")
    for r in RESULTS:
        if "hit@1" in r:
            print(
                f"{r['figure']:<16}{r['mode']:<24}{r.get('queries', ''):>8}{r['hit@1']:>8.3f}"
                f"{r['recall@5']:>10.3f}{r['mrr@10']:>8.3f}"
            )
        else:
            print(
                f"{r['figure']:<16}" + "  ".join(f"{k}={v}" for k, v in r.items() if k != "figure")
            )


if __name__ == "__main__":
    asyncio.run(main())
