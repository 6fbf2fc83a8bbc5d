"""engine_overhead: one customer message through ``Engine.handle`` with an instant fake LLM.

The fake LLM runs in its own process, so its CPU time is not charged to the engine; the
plain LLM round trip over loopback is measured separately (``llm_roundtrip_*``) so the engine's
own share can be read off. Measured at an empty database and at a seeded one (100,000 messages
in 10,000 conversations), with 10,000 FAQ entries indexed in both.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.common import ROOT, percentiles, queries_for, seed_history, timer, write_knowledge
from bench.fakeproc import fake_llm_process

NAME = "engine_overhead"


class CountingSink:
    """A ReplySink that keeps nothing but a count, so the sink costs nothing measurable."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, text: str, *, feedback_id: int | None = None) -> str | None:
        self.sent += 1
        return None

    async def send_stream(self, chunks: AsyncIterator[str]) -> str | None:
        async for _ in chunks:
            pass
        self.sent += 1
        return None


def sizes(quick: bool) -> dict[str, int]:
    if quick:
        # smoke-test sizes (tests/test_bench_smoke.py): every path runs, no figure is judged
        return {"faq": 50, "conversations": 20, "messages": 200, "samples": 10, "warmup": 2,
                "throughput": 20, "concurrency": 8}
    return {"faq": 10_000, "conversations": 10_000, "messages": 100_000, "samples": 800,
            "warmup": 50, "throughput": 3000, "concurrency": 32}


def run(quick: bool = False) -> list[dict[str, Any]]:
    return asyncio.run(_run(quick))


async def _run(quick: bool) -> list[dict[str, Any]]:
    from supportbot.config import Settings
    from supportbot.llm import LLMClient

    n = sizes(quick)
    rows: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    try:
        knowledge = tmp / "knowledge"
        entries = write_knowledge(knowledge, n["faq"], files=max(1, n["faq"] // 100))
        queries = queries_for(entries, 1000)
        with fake_llm_process(delay=0.0) as llm_url:

            def settings(data: Path, **kw: Any) -> Settings:
                return Settings(
                    _env_file=None, data_dir=data, knowledge_dir=knowledge,
                    prompts_dir=ROOT / "supportbot/defaults/prompts", llm_base_url=llm_url,
                    llm_api_key="sk-bench",
                    llm_max_retries=0, knowledge_reload_seconds=2.0, **kw,
                )

            # the LLM round trip alone, for reference
            async with LLMClient.from_settings(settings(tmp / "unused")) as client:
                msgs = [{"role": "system", "content": "You are a bot."},
                        {"role": "user", "content": "hello"}]
                for _ in range(n["warmup"]):
                    await client.complete(msgs)
                rt = []
                for _ in range(n["samples"]):
                    started = time.perf_counter()
                    await client.complete(msgs)
                    rt.append(time.perf_counter() - started)
            reference = percentiles(rt, "llm_roundtrip_")

            empty = tmp / "empty"
            row, index_s = await _measure(settings(empty, llm_stream=False), n, queries,
                                          platform="bench", threads=[f"t{i}" for i in range(500)])
            rows.append({"bench": NAME, "db": "empty", "judged": False, "stored_messages": 0,
                         "faq_entries":
                         n["faq"], "stream": False, **row, **reference,
                         "index_build_s": round(index_s, 2)})

            seeded = tmp / "seeded"
            seeded.mkdir()
            for f in empty.glob("knowledge-index.sqlite3*"):  # same FAQ: reuse its index
                if f.is_dir():  # the saved BM25 matrix (bm25s writes a folder)
                    shutil.copytree(f, seeded / f.name)
                else:
                    shutil.copy2(f, seeded / f.name)
            with timer() as t:
                await seed_history(settings(seeded).resolved_database_url, n["conversations"],
                                   n["messages"])
            open_threads = [f"seed-{c}" for c in range(n["conversations"]) if c % 10]
            for stream in (False, True):
                row, _ = await _measure(settings(seeded, llm_stream=stream), n, queries,
                                        platform="seed", threads=open_threads)
                rows.append({"bench": NAME, "db": "seeded", "judged": not quick and not stream,
                             "stored_messages": n["messages"],
                             "conversations": n["conversations"], "faq_entries": n["faq"],
                             "stream": stream, **row, **reference,
                             "seed_s": round(t[0], 2)})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


async def _measure(settings: Any, n: dict[str, int], queries: list[str], *, platform: str,
                   threads: list[str]) -> tuple[dict[str, Any], float]:
    from supportbot.engine import Engine, IncomingMessage, Outcome

    rng = random.Random(5)
    with timer() as t:
        engine = await Engine.open(settings)
    opened = t[0]
    sink = CountingSink()
    ids = iter(range(10**9))
    prefix = f"bench-{time.monotonic_ns()}"
    outcomes: dict[str, int] = {}

    def message(thread: str) -> IncomingMessage:
        return IncomingMessage(platform=platform, thread_key=thread, customer_id=thread,
                               customer_name="Bench", text=rng.choice(queries),
                               message_id=f"{prefix}-{next(ids)}")

    async def one(thread: str) -> float:
        started = time.perf_counter()
        reply = await engine.handle(message(thread), sink)
        elapsed = time.perf_counter() - started
        outcomes[str(reply.outcome)] = outcomes.get(str(reply.outcome), 0) + 1
        return elapsed

    try:
        for _ in range(n["warmup"]):
            await one(rng.choice(threads))
        outcomes.clear()
        latencies = [await one(rng.choice(threads)) for _ in range(n["samples"])]

        # throughput: many customers at once, each thread used by one task at a time
        pending = [threads[i % len(threads)] for i in range(n["throughput"])]
        rng.shuffle(pending)
        queue: asyncio.Queue[str] = asyncio.Queue()
        for thread in pending:
            queue.put_nowait(thread)

        async def worker(k: int) -> None:
            while not queue.empty():
                await one(f"{queue.get_nowait()}-w{k}" if platform == "bench"
                          else queue.get_nowait())

        started, cpu_started = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(k) for k in range(n["concurrency"])))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        await engine.aclose()
    answered = outcomes.get(str(Outcome.LLM), 0)
    return {
        **percentiles(latencies),
        "samples": len(latencies),
        "sequential_msgs_per_s": round(len(latencies) / sum(latencies), 1),
        "msgs_per_s": round(n["throughput"] / wall, 1),
        # this process's CPU per message in the throughput phase (the fake LLM runs elsewhere):
        # steadier than wall-clock figures on a shared machine
        "cpu_ms_per_msg": round(cpu * 1000 / n["throughput"], 2),
        "throughput_concurrency": n["concurrency"],
        "outcomes": outcomes,
        "llm_answered_ratio": round(answered / max(1, sum(outcomes.values())), 3),
        "engine_open_s": round(opened, 2),
    }, opened
