"""Keep the benchmark suite from rotting: every benchmark at ``--quick`` sizes, end to end.

No timing assertions (figures depend on the machine); the checks are that each benchmark runs,
reports its figures and that the properties it proves (replies delivered, order held) hold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is a top-level folder, not part of the package
    sys.path.insert(0, str(ROOT))

from bench.common import percentiles  # noqa: E402
from bench.run import BENCHMARKS, check_targets, main, table  # noqa: E402


def test_percentiles_nearest_rank() -> None:
    samples = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    p = percentiles(samples)
    assert (p["p50_ms"], p["p95_ms"], p["p99_ms"], p["max_ms"]) == (50.0, 95.0, 99.0, 100.0)
    assert percentiles([]) == {}


def test_targets_are_judged_only_at_the_target_sizes() -> None:
    row = {"bench": "retrieval", "p50_ms": 1.0, "p99_ms": 12.0}
    assert check_targets(row) == {"p50_ms": True, "p99_ms": False}
    assert check_targets({**row, "judged": False}) == {}


def test_unknown_benchmark_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["no_such_bench"])
    assert "unknown benchmark" in capsys.readouterr().err


@pytest.mark.sqlite_only  # the benchmarks seed SQLite with PRAGMAs
def test_every_benchmark_runs_quick() -> None:
    """``python -m bench --quick``: one JSON line per figure row, then the table."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"], cwd=ROOT, capture_output=True, text=True,
        timeout=900,  # a guard against a hang only: the suite runs beside others on a busy CI box
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    rows = [json.loads(line) for line in lines]
    assert rows[0]["bench"] == "machine" and rows[0]["nproc"] >= 1
    by_bench: dict[str, list[dict]] = {}
    for row in rows[1:]:
        by_bench.setdefault(row["bench"], []).append(row)
    assert set(by_bench) == set(BENCHMARKS)
    assert not [r for r in rows if "error" in r]

    for row in by_bench["engine_overhead"]:
        assert row["p50_ms"] <= row["p99_ms"] and row["msgs_per_s"] > 0
        assert row["llm_answered_ratio"] == 1.0, row["outcomes"]  # no duplicates, no failures
    assert {r["db"] for r in by_bench["engine_overhead"]} == {"empty", "seeded"}
    for row in by_bench["concurrency"]:
        assert row["all_delivered"] and row["order_held"], row
    for name in ("slack_path", "telegram_path"):
        [row] = by_bench[name]
        assert row["all_delivered"] and row["delivered"] == row["burst"], row
    for row in by_bench["retrieval"]:
        assert row["answered_ratio"] > 0.5 and row["index_build_s"] > 0
    [memory] = by_bench["memory"]
    assert memory["peak_rss_mb"] >= memory["peak_rss_after_start_mb"] > 0
    assert memory["customers_answered"] == memory["customers_sent"]
    warm = next(r for r in by_bench["startup"] if r["case"] == "warm")
    assert warm["reply"].startswith("Ada:")  # the FAQ answered, offline
    assert "bench" in proc.stdout.splitlines()[-len(rows)]  # the table's header follows
    assert table(rows[1:]).count("\n") == len(rows) - 1
