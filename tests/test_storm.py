"""A bounded storm (``bench/storm.py`` has the full one): hundreds of conversations through the
Slack Events API and the Telegram webhook at once, ~20% platform redeliveries, ~10% LLM faults.
Every unique message gets exactly one outcome, nothing is duplicated, per-thread order holds."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _storm_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_storm", REPO / "bench" / "storm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_storm"] = module
    spec.loader.exec_module(module)
    return module


storm = _storm_module()


# A door's store that waits past the ack budget gets 503 and is delivered again (as Slack and
# Telegram do), so refusals are not failures here; the harness reports how many ("refused") and
# the ack latency. On SQLite a door's store goes before queued answering work (PriorityGate).
async def test_storm_every_message_gets_exactly_one_outcome(tmp_path: Path) -> None:
    report = await storm.run_storm(
        tmp_path, conversations=150, messages=4, redeliver=0.2, faults=0.1, seed=7
    )
    print(json.dumps(report.as_dict()))  # the figures, with -s
    assert report.problems == []
    assert report.unique_messages == 600
    assert report.http_errors == 0
    assert report.duplicates == 0 and report.missing == 0 and report.out_of_order_threads == 0
    # the faults really happened and really reached customers as apologies
    assert report.redeliveries >= 60
    assert sum(report.faults_injected.values()) >= 30
    assert report.outcomes.get("llm_failed", 0) >= 1
    assert sum(report.outcomes.values()) == 600  # one stored outcome per message
    assert report.answered_on_platform + report.apologies_on_platform == 600
    assert report.answered_on_platform == report.outcomes["llm"]


async def test_a_doors_store_goes_before_queued_answering_work_on_sqlite(tmp_path: Path) -> None:
    """The storm's acks on SQLite: 50 turns' queries are waiting for the one connection when a
    message arrives; its store (what the platform's "OK" waits for) is served next, not after
    all of them."""
    from supportbot.config import Settings
    from supportbot.storage import Store

    settings = Settings(_env_file=None, data_dir=tmp_path)
    if not settings.resolved_database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL has a pool of connections, not one")
    store = await Store.open(settings.resolved_database_url)
    done: list[str] = []

    async def answering(n: int) -> None:
        await store.list_conversations(limit=10)
        done.append(f"turn {n}")

    async def door() -> None:
        await store.accept(platform="telegram", event_id="u1", thread_key="1", customer_id="1",
                           customer_name="", language="en", text="hello")
        done.append("door")

    try:
        turns = [asyncio.create_task(answering(n)) for n in range(50)]
        await asyncio.sleep(0)  # the turns are in line
        await asyncio.gather(door(), *turns)
    finally:
        await store.close()
    assert done.index("door") <= 2, done
