"""Shared pieces of the benchmark suite: percentiles, synthetic FAQ and history, the machine.

Everything is generated locally and seeded, so two runs on the same machine measure the same
work; nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def _words(text: str, sep: str = " ") -> tuple[str, ...]:
    return tuple(text.split(sep))


# A small support-flavoured vocabulary: common words make FTS candidate lists realistically long.
_VERBS = _words(
    "reset change cancel renew upgrade downgrade export import share delete restore recover "
    "install update connect sync verify enable disable transfer merge rename download upload "
    "invite remove configure pay refund invoice track activate deactivate"
)
_NOUNS = _words(
    "password account plan subscription invoice payment card folder file device phone laptop "
    "backup team member admin workspace email address profile photo link storage quota key "
    "token integration calendar report receipt order license seat region language"
)
_QUALIFIERS = _words(
    "after a failed payment|on a new phone|without the app|for my whole team|when I travel|"
    "before the renewal date|from another provider|on the free plan|after two-factor setup|"
    "if I forgot my email|in bulk|automatically|for a shared folder|on Linux|on Windows|"
    "on an iPad|while offline|for an old invoice|in another currency|for tax purposes",
    "|",
)
_FILLER = _words(
    "you can do this under settings in the web app and the change applies on every device "
    "within a few minutes if it does not contact support with your account email and the time "
    "it happened we usually answer within two business hours and never ask for your password"
    
)


def product_word(rng: random.Random) -> str:
    """A made-up product or feature name: the rare terms that make entries distinguishable."""
    consonants, vowels = "bcdfghklmnprstvz", "aeiou"
    return "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(2, 4)))


def faq_entries(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` synthetic FAQ entries (JSONL-shaped dicts) with a question, two alternatives and a
    paragraph of answer, each mentioning a feature name of its own."""
    rng = random.Random(seed)
    entries = []
    for i in range(n):
        verb, noun, qual = rng.choice(_VERBS), rng.choice(_NOUNS), rng.choice(_QUALIFIERS)
        feature = product_word(rng)
        answer = " ".join(rng.choice(_FILLER) for _ in range(rng.randint(30, 60)))
        entries.append(
            {
                "id": f"faq-{i:05d}",
                "question": f"How do I {verb} my {noun} in {feature} {qual}?",
                "questions": [
                    f"Can I {verb} the {noun} of {feature}?",
                    f"{feature} {noun} {verb} not working",
                ],
                "answer": f"To {verb} your {noun} in {feature}: {answer}.",
                "tags": [noun, verb],
                "lang": "en",
            }
        )
    return entries


def queries_for(entries: Sequence[dict[str, Any]], n: int, seed: int = 11) -> list[str]:
    """Customer-style questions: paraphrases of random entries, plus some that match nothing."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 10 == 9:
            out.append(f"why is {product_word(rng)} so {rng.choice(['slow', 'odd', 'blue'])} today")
            continue
        e = rng.choice(entries)
        words = e["question"].rstrip("?").split()
        rng.shuffle(words)
        out.append(" ".join(words[: max(3, len(words) - 2)]) + "?")
    return out


def write_knowledge(directory: Path, n: int, *, files: int = 1, seed: int = 7) -> list[dict]:
    """Write ``n`` entries as JSONL spread over ``files`` files; returns the entries."""
    directory.mkdir(parents=True, exist_ok=True)
    entries = faq_entries(n, seed)
    per_file = -(-n // files)
    for f in range(files):
        chunk = entries[f * per_file : (f + 1) * per_file]
        name = "faq.jsonl" if files == 1 else f"faq-{f:03d}.jsonl"
        with (directory / name).open("w", encoding="utf-8") as fh:
            for e in chunk:
                fh.write(json.dumps(e) + "\n")
    return entries


async def seed_history(database_url: str, conversations: int, messages: int,
                       platform_name: str = "seed") -> None:
    """Migrate the database with ``Store.open``, then bulk-insert conversations, their turns
    (alternating customer/bot, ``messages / conversations`` each), event ids and transitions
    through SQLAlchemy core: seconds instead of minutes through the engine."""
    from sqlalchemy import insert

    from supportbot.storage import Store
    from supportbot.storage.models import Conversation, HandledEvent, Message, Transition

    store = await Store.open(database_url)
    rng = random.Random(3)
    start = datetime.now(UTC) - timedelta(days=30)
    per = max(1, messages // max(1, conversations))
    try:
        async with store.engine.begin() as conn:
            batch = 5000
            convs = [
                {
                    "id": c + 1, "platform": platform_name, "thread_key": f"seed-{c}",
                    "customer_id": f"cust-{c}", "customer_name": f"Customer {c}",
                    "status": "bot" if c % 10 else "closed", "language": "en", "failures": 0,
                    "bot_failed": False, "wait_notices": 0,
                    "created_at": start + timedelta(seconds=c),
                    "updated_at": start + timedelta(seconds=c),
                }
                for c in range(conversations)
            ]
            for i in range(0, len(convs), batch):
                await conn.execute(insert(Conversation.__table__), convs[i : i + batch])
            await conn.execute(
                insert(Transition.__table__),
                [{"conversation_id": c + 1, "from_status": "new", "to_status": "bot",
                  "actor": f"customer:cust-{c}", "reason": "first message",
                  "created_at": start} for c in range(conversations)],
            )
            rows: list[dict[str, Any]] = []
            events: list[dict[str, Any]] = []
            for c in range(conversations):
                for m in range(per):
                    user = m % 2 == 0
                    words = " ".join(rng.choice(_FILLER) for _ in range(rng.randint(8, 40)))
                    rows.append({
                        "conversation_id": c + 1, "role": "user" if user else "assistant",
                        "text": words, "state": "answered" if user else "sent",
                        "platform_message_id": f"seed-{c}-{m}" if user else None,
                        "outcome": None if user else "llm", "usage_estimated": False,
                        "created_at": start + timedelta(seconds=c, milliseconds=m),
                    })
                    if user:
                        events.append({"platform": platform_name, "event_id": f"seed-{c}-{m}",
                                       "created_at": start})
                if len(rows) >= batch:
                    await conn.execute(insert(Message.__table__), rows)
                    rows = []
            if rows:
                await conn.execute(insert(Message.__table__), rows)
            for i in range(0, len(events), batch):
                await conn.execute(insert(HandledEvent.__table__), events[i : i + batch])
    finally:
        await store.close()


def percentiles(samples: Sequence[float], prefix: str = "") -> dict[str, float]:
    """p50/p95/p99/mean/max in milliseconds from samples in seconds (nearest-rank)."""
    if not samples:
        return {}
    ordered = sorted(samples)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered) - 1e-9) - 1))]

    ms = 1000.0
    return {
        f"{prefix}p50_ms": round(rank(0.50) * ms, 3),
        f"{prefix}p95_ms": round(rank(0.95) * ms, 3),
        f"{prefix}p99_ms": round(rank(0.99) * ms, 3),
        f"{prefix}mean_ms": round(statistics.fmean(ordered) * ms, 3),
        f"{prefix}max_ms": round(ordered[-1] * ms, 3),
    }


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    """``with timer() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    out: list[float] = []
    started = time.perf_counter()
    try:
        yield out
    finally:
        out.append(time.perf_counter() - started)


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True,
                                   timeout=5).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    ram_mb = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_mb = int(line.split()[1]) // 1024
    return {
        "nproc": os.cpu_count(), "cpu": model, "ram_mb": ram_mb,
        "python": platform.python_version(), "platform": platform.platform(),
    }


def bench_env(**extra: str) -> dict[str, str]:
    """The environment for a bot subprocess: ours minus any SUPPORTBOT_* the caller had set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTBOT_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the most resident memory the process ever had (Linux)."""
    return status_mb(pid, "VmHWM")


def status_mb(pid: int, field: str) -> float:
    """One memory figure of ``/proc/PID/status`` (VmRSS, VmHWM, ...) in MB; 0 if absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (Linux ``/proc``), to tell one
    process's share of a benchmark from another's."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
