"""The one entry point: run benchmarks, print one JSON object per line, then a table.

    python -m bench                      # everything, full sizes (a few minutes on 2 cores)
    python -m bench retrieval startup    # some of them
    python -m bench --quick              # tiny sizes: seconds, for smoke tests
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from typing import Any

from bench.common import machine

# name -> module; the order is the run order (the platform paths last: they need the adapters)
BENCHMARKS = {
    "engine_overhead": "bench.engine_overhead",
    "retrieval": "bench.retrieval",
    "concurrency": "bench.concurrency",
    "memory": "bench.memory",
    "startup": "bench.startup",
    "slack_path": "bench.platform_paths",
    "telegram_path": "bench.platform_paths",
}

# figure -> (target, "max" if the figure must stay at or below it, "min" if at or above)
# (issue 18: on 2 cores with the stock libraries)
TARGETS: dict[str, dict[str, tuple[float, str]]] = {
    "engine_overhead": {"p50_ms": (10, "max"), "p99_ms": (30, "max")},
    "slack_path": {"msgs_per_s": (100, "min")},
    "telegram_path": {"msgs_per_s": (100, "min")},
    "concurrency": {"wall_s": (5, "max")},
    "retrieval": {"p50_ms": (2, "max"), "p99_ms": (10, "max"), "index_build_s": (10, "max"),
                  "reload_one_file_ms": (200, "max")},
    "memory": {"peak_rss_mb": (200, "max")},
    "startup": {"first_reply_s": (1.5, "max")},
}


def check_targets(row: dict[str, Any]) -> dict[str, bool]:
    """Which targets a row meets; only rows at the sizes the targets speak of are judged."""
    if row.get("judged") is False:
        return {}
    out = {}
    for key, (target, kind) in TARGETS.get(row.get("bench", ""), {}).items():
        value = row.get(key)
        if isinstance(value, int | float):
            out[key] = value <= target if kind == "max" else value >= target
    return out


def run_one(name: str, quick: bool) -> list[dict[str, Any]]:
    module = importlib.import_module(BENCHMARKS[name])
    load = os.getloadavg()[0]
    started = time.perf_counter()
    try:
        rows = module.run(quick) if name == module.NAME else module.run(quick, name)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        rows = [{"bench": name, "error": f"{type(exc).__name__}: {exc}"}]
    elapsed = round(time.perf_counter() - started, 1)
    for row in rows:
        row.setdefault("bench", name)
        row["quick"] = quick
        row["bench_s"] = elapsed
        row["loadavg_1m_before"] = round(load, 2)
        met = check_targets(row) if not quick else {}
        if met:
            row["targets_met"] = met
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """A readable summary: the headline figures of each row."""
    keys = ("p50_ms", "p95_ms", "p99_ms", "msgs_per_s", "wall_s", "index_build_s",
            "reload_one_file_ms", "peak_rss_mb", "first_reply_s")
    lines = [f"{'bench':16} {'case':28} " + " ".join(f"{k:>12}" for k in keys) + "  targets"]
    for row in rows:
        case = row.get("case") or row.get("db") or row.get("entries") or ""
        if "error" in row:
            lines.append(f"{row['bench']:16} ERROR {row['error']}")
            continue
        if "stream" in row:
            case = f"{case} stream={row['stream']}"
        cells = []
        for k in keys:
            v = row.get(k)
            cells.append(f"{v:>12}" if v is not None else f"{'-':>12}")
        met = row.get("targets_met") or {}
        verdict = ", ".join(f"{k} {'ok' if ok else 'MISSED'}" for k, ok in met.items())
        lines.append(f"{row['bench']:16} {str(case)[:28]:28} " + " ".join(cells) + "  " + verdict)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for smoke tests")
    parser.add_argument("--no-table", action="store_true", help="JSON lines only")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    names = args.names or list(BENCHMARKS)
    print(json.dumps({"bench": "machine", **machine()}), flush=True)
    rows: list[dict[str, Any]] = []
    for name in names:
        for row in run_one(name, args.quick):
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    if not args.no_table:
        print()
        print(table(rows))
    return 1 if any("error" in r for r in rows) else 0
