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


def _engine_overhead(rows: list[dict]) -> None:
    for row in rows:
        assert row["p50_ms"] <= row["p99_ms"] and row["msgs_per_s"] > 0
        assert row["llm_answered_ratio"] == 1.0, row["outcomes"]  # no duplicates, no failures
    assert {r["db"] for r in rows} == {"empty", "seeded"}


def _concurrency(rows: list[dict]) -> None:
    for row in rows:
        assert row["all_delivered"] and row["order_held"], row


def _platform_path(rows: list[dict]) -> None:
    [row] = rows
    assert row["all_delivered"] and row["delivered"] == row["burst"], row


def _retrieval(rows: list[dict]) -> None:
    for row in rows:
        assert row["answered_ratio"] > 0.5 and row["index_build_s"] > 0


def _memory(rows: list[dict]) -> None:
    [memory] = rows
    assert memory["peak_rss_mb"] >= memory["peak_rss_after_start_mb"] > 0
    assert memory["customers_answered"] == memory["customers_sent"]


def _startup(rows: list[dict]) -> None:
    warm = next(r for r in rows if r["case"] == "warm")
    assert warm["reply"].startswith("Ada:")  # the FAQ answered, offline


# what each benchmark's rows must show
CHECKS = {
    "engine_overhead": _engine_overhead,
    "retrieval": _retrieval,
    "concurrency": _concurrency,
    "memory": _memory,
    "startup": _startup,
    "slack_path": _platform_path,
    "telegram_path": _platform_path,
}


def test_every_benchmark_has_its_checks() -> None:
    """A benchmark added to ``bench.run`` without checks here would go unchecked."""
    assert list(CHECKS) == list(BENCHMARKS)


@pytest.mark.sqlite_only  # the benchmarks seed SQLite with PRAGMAs
def test_every_benchmark_runs_quick() -> None:
    """``python -m bench --quick``: one JSON line per figure row, then the table. One process
    for all (each would pay the imports again); tests/conftest.py starts it early, beside the
    crash-burst and storm tests rather than after them (at smoke sizes it is a few processes)."""
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
    for name, check in CHECKS.items():
        check(by_bench[name])
    assert "bench" in proc.stdout.splitlines()[-len(rows)]  # the table's header follows
    assert table(rows[1:]).count("\n") == len(rows) - 1
