"""concurrency: 1,000 conversations each send one message at the same moment while the fake
LLM takes 1 s per reply. Wall time until every reply is delivered, and proof that per-thread
order holds (a few threads send several messages in the same burst).

The LLM client is the one ``Engine.open`` builds: httpx's own pool of
``SUPPORTBOT_LLM_MAX_CONNECTIONS`` connections. Two cases: ``as_shipped`` (the default of 100,
so the burst needs ten waves of the 1 s LLM: not judged) and ``pool_1000`` (the setting a
deployment expecting such bursts uses; the one judged against the 5 s target).
``engine_cpu_s`` (this process) and ``fake_llm_cpu_s`` (the fake's process) show where the
wall time goes.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.common import ROOT
from bench.fakeproc import fake_llm_child

NAME = "concurrency"
LLM_DELAY = 1.0
CASE_TIMEOUT = 50.0  # keeps the whole benchmark under two minutes


class TimedSink:
    """Records each delivered reply with the time it reached the (fake) customer."""

    def __init__(self, log: list[tuple[float, str, str]], thread: str) -> None:
        self.log, self.thread = log, thread

    async def send(self, text: str, *, feedback_id: int | None = None) -> str | None:
        self.log.append((time.perf_counter(), self.thread, text))
        return None

    async def send_stream(self, chunks: AsyncIterator[str]) -> str | None:
        return await self.send("".join([c async for c in chunks]))


def run(quick: bool = False) -> list[dict[str, Any]]:
    return asyncio.run(_run(quick))


async def _run(quick: bool) -> list[dict[str, Any]]:
    from supportbot.config import Settings

    conversations = 40 if quick else 1000
    delay = 0.2 if quick else LLM_DELAY
    ordered_threads, per_thread = (3, 3) if quick else (10, 5)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-concurrency-"))
    try:
        with fake_llm_child(delay=delay) as fake:
            for case, pool in (("as_shipped", {}), ("pool_1000", {"llm_max_connections": 1000})):
                settings = Settings(
                    _env_file=None, data_dir=tmp / case,
                    knowledge_dir=ROOT / "supportbot/defaults/knowledge",
                    prompts_dir=ROOT / "supportbot/defaults/prompts", llm_base_url=fake.url,
                    llm_api_key="sk-bench", llm_stream=False, llm_max_retries=0, **pool,
                )
                fake_before = fake.cpu_seconds()
                row = await _burst(settings, conversations, ordered_threads, per_thread)
                fake_after = fake.cpu_seconds()
                if fake_before is not None and fake_after is not None:
                    row["fake_llm_cpu_s"] = round(fake_after - fake_before, 2)
                row["llm_delay_s"] = delay
                judged = not quick and case == "pool_1000"
                rows.append({"bench": NAME, "case": case, "judged": judged, **row})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


async def _burst(settings: Any, conversations: int, ordered_threads: int,
                 per_thread: int) -> dict[str, Any]:
    from supportbot.engine import Engine, IncomingMessage

    engine = await Engine.open(settings)
    delivered: list[tuple[float, str, str]] = []
    outcomes: dict[str, int] = {}

    async def send(thread: str, text: str, mid: str) -> None:
        msg = IncomingMessage(platform="bench", thread_key=thread, customer_id=thread,
                              customer_name="Bench", text=text, message_id=mid)
        reply = await engine.handle(msg, TimedSink(delivered, thread))
        outcomes[str(reply.outcome)] = outcomes.get(str(reply.outcome), 0) + 1

    try:
        tasks = []
        cpu_started = time.process_time()
        started = time.perf_counter()
        for k in range(per_thread):  # interleave, so order must come from the per-thread lock
            for t in range(ordered_threads):
                tasks.append(asyncio.create_task(
                    send(f"ordered-{t}", f"ordered {t} message {k}", f"o-{t}-{k}")))
            if k == 0:
                for c in range(conversations):
                    tasks.append(asyncio.create_task(
                        send(f"burst-{c}", f"burst question {c}", f"b-{c}")))
        done, pending = await asyncio.wait(tasks, timeout=CASE_TIMEOUT)
        engine_cpu = time.process_time() - cpu_started
        for task in pending:
            task.cancel()
        errors = [t.exception() for t in done if t.exception() is not None]
        singles = [at for at, thread, _ in delivered if thread.startswith("burst-")]
        wall = (max(singles) - started) if len(singles) else None

        order_ok = True
        for t in range(ordered_threads):
            got = [text for _, thread, text in delivered if thread == f"ordered-{t}"]
            want = [f"ordered {t} message {k}" for k in range(per_thread)]
            seen = [next((w for w in want if w in g), "?") for g in got]
            stored = await engine.store.find_open("bench", f"ordered-{t}")
            turns = [m.text for m in await engine.store.messages(stored.id)
                     if m.role == "user"] if stored else []
            order_ok = order_ok and seen == want and turns == want
        llm_failed = outcomes.get("llm_failed", 0) + outcomes.get("handoff", 0)
        return {
            "conversations": conversations,
            "llm_pool": settings.llm_max_connections,
            "wall_s": round(wall, 2) if wall is not None else None,
            "engine_cpu_s": round(engine_cpu, 2),
            "replies_delivered": len(singles),
            "all_delivered": len(singles) == conversations and not pending,
            "ordered_threads": ordered_threads,
            "messages_per_ordered_thread": per_thread,
            "order_held": order_ok,
            "outcomes": outcomes,
            "llm_failures": llm_failed,
            "task_errors": [repr(e) for e in errors[:3]],
            "timed_out_tasks": len(pending),
        }
    finally:
        await engine.aclose()
