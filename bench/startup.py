"""startup: wall time from starting ``supportbot chat`` to its first reply line, with one
question piped in and offline defaults (no LLM: the FAQ answers), in a fresh working directory
holding ``knowledge/`` and ``prompts/``.

``cold`` is the first run (creates the database, applies migrations, builds the FAQ index);
``warm`` runs reuse them. ``python_only`` is the interpreter's own start, for reference.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, bench_env

NAME = "startup"
QUESTION = "How long do refunds take?\n"


def first_line_after(cmd: list[str], cwd: Path, stdin: str = QUESTION) -> tuple[float, str]:
    env = bench_env()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(stdin)
    proc.stdin.close()
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - started
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    if not line and proc.stderr is not None:
        raise RuntimeError(f"no reply from {' '.join(cmd)}: {proc.stderr.read()[-500:]}")
    return elapsed, line.strip()


def run(quick: bool = False) -> list[dict[str, Any]]:
    runs = 1 if quick else 7
    tmp = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    try:
        shutil.copytree(ROOT / "supportbot/defaults/knowledge", tmp / "knowledge")
        shutil.copytree(ROOT / "supportbot/defaults/prompts", tmp / "prompts")
        cmd = [PYTHON, "-m", "supportbot", "chat"]
        cold, reply = first_line_after(cmd, tmp)
        warm = [first_line_after(cmd, tmp)[0] for _ in range(runs)]
        bare = [first_line_after([PYTHON, "-c", "print('hi')"], tmp)[0] for _ in range(runs)]
        imports = [first_line_after([PYTHON, "-c", "import supportbot.cli, supportbot.engine;"
                                     "print('hi')"], tmp)[0] for _ in range(runs)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [
        {"bench": NAME, "case": "warm", "judged": not quick,
         "first_reply_s": round(statistics.median(warm), 3), "min_s": round(min(warm), 3),
         "max_s": round(max(warm), 3), "runs": runs, "reply": reply[:80],
         "python_only_s": round(statistics.median(bare), 3),
         "imports_only_s": round(statistics.median(imports), 3)},
        {"bench": NAME, "case": "cold", "judged": False, "first_reply_s": round(cold, 3),
         "runs": 1},
    ]
    return rows
