"""retrieval: FAQ query latency at 100 / 1,000 / 10,000 entries, index build time, and the
reload after one file is edited (``KnowledgeBase.refresh``), lexical search as shipped.
``cpu_ms_per_query`` is the process CPU time over all queries: unlike the latencies, it hardly
moves when other jobs share the machine; ``reload_one_file_cpu_ms`` is the same for the reload
(the median of ``RELOADS`` edits of different files, all threads of the process).

The FAQ is spread over files of 100 entries each, as a team's knowledge folder would be, so
"edit one file" re-indexes one file; the reload of a single 10,000-entry JSONL file is
reported too (``reload_whole_file_ms``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import percentiles, queries_for, timer, write_knowledge

NAME = "retrieval"
WHOLE_FILE_ENTRIES = 3000  # ~1.5 MB of synthetic entries, under the loader's 2 MB cap
RELOADS = 5  # one-file edits timed, each of another file; the median is reported


def run(quick: bool = False) -> list[dict[str, Any]]:
    return asyncio.run(_run(quick))


async def _run(quick: bool) -> list[dict[str, Any]]:
    sizes = (100, 500) if quick else (100, 1_000, 10_000)
    n_queries = 50 if quick else 2000
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    try:
        for size in sizes:
            rows.append(await _one(tmp / str(size), size, n_queries))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


async def _one(base: Path, size: int, n_queries: int) -> dict[str, Any]:
    from supportbot.knowledge import KnowledgeBase

    knowledge = base / "knowledge"
    entries = write_knowledge(knowledge, size, files=max(1, size // 100))
    queries = queries_for(entries, n_queries)
    kb = KnowledgeBase(knowledge, base / "index.sqlite3")
    with timer() as build:
        await kb.refresh()
    assert len(kb.entries) == size, (len(kb.entries), kb.problems[:3])

    for q in queries[:20]:  # warm caches
        await kb.search(q, k=3)
    latencies, hits = [], 0
    cpu_started = time.process_time()
    for q in queries:
        started = time.perf_counter()
        found = await kb.search(q, k=3)
        latencies.append(time.perf_counter() - started)
        hits += bool(found)
    cpu_ms = (time.process_time() - cpu_started) * 1000 / len(queries)

    with timer() as noop:  # nothing changed: one stat per file
        await kb.refresh()

    reload_wall, reload_cpu = [], []
    for victim in sorted(knowledge.glob("*.jsonl"))[:RELOADS]:
        _edit(victim)
        cpu_started = time.process_time()
        with timer() as reload_one:
            await kb.refresh()
        reload_cpu.append(time.process_time() - cpu_started)
        reload_wall.append(reload_one[0])
        assert kb.last_reindexed == [victim.name], kb.last_reindexed

    # one big file (as big as the loader takes: 2 MB, ~3,000 entries): an edit re-indexes it all
    single = base / "single"
    whole = min(size, WHOLE_FILE_ENTRIES)
    write_knowledge(single, whole, files=1)
    kb_single = KnowledgeBase(single, base / "single.sqlite3")
    await kb_single.refresh()
    _edit(single / "faq.jsonl")
    with timer() as reload_whole:
        await kb_single.refresh()

    # a restart over an existing index: nothing re-indexed
    with timer() as reopen:
        kb2 = KnowledgeBase(knowledge, base / "index.sqlite3")
        await kb2.refresh()
    return {
        "bench": NAME, "entries": size, "judged": size == 10_000, "files": max(1, size // 100),
        "queries": len(queries),
        **percentiles(latencies), "cpu_ms_per_query": round(cpu_ms, 3),
        "answered_ratio": round(hits / len(queries), 3),
        "index_build_s": round(build[0], 3),
        "reload_one_file_ms": round(statistics.median(reload_wall) * 1000, 1),
        "reload_one_file_cpu_ms": round(statistics.median(reload_cpu) * 1000, 1),
        "reload_whole_file_ms": round(reload_whole[0] * 1000, 1), "whole_file_entries": whole,
        "refresh_unchanged_ms": round(noop[0] * 1000, 2),
        "reopen_existing_index_ms": round(reopen[0] * 1000, 1),
    }


def _edit(path: Path) -> None:
    """Change one entry's answer and bump the mtime, as an editor saving the file would."""
    lines = path.read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    first["answer"] += " (edited)"
    lines[0] = json.dumps(first)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
