"""A bounded storm (``bench/storm.py`` has the full one): hundreds of conversations through the
Slack Events API and the Telegram webhook at once, ~20% platform redeliveries, ~10% LLM faults.
Every unique message gets exactly one outcome, nothing is duplicated, per-thread order holds."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _storm_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_storm", REPO / "bench" / "storm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_storm"] = module
    spec.loader.exec_module(module)
    return module


storm = _storm_module()


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
