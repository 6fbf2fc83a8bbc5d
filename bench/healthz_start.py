"""Time to ``/healthz``: seconds from spawning ``supportbot serve`` to its first ``/healthz``
200, and to ``"status": "ok"`` (engine open, adapters connected), with a backlog to recover.

    .venv/bin/python bench/healthz_start.py [--backlog 200] [--rounds 5] [--load 0]

Each round stores ``backlog`` unanswered customer messages (as a crash leaves them), starts the
real command line against loopback Slack, Telegram and a slow LLM (so recovery is still busy
when the figures are taken), waits for ``/healthz``, then kills it with SIGKILL. ``--load N``
runs N busy-looping processes beside it (a loaded 2-core host). Prints one JSON object: every
round's figures and their median. The README's bar is 2 s to the first ``/healthz`` answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supportbot.config import Settings  # noqa: E402
from supportbot.storage import Store  # noqa: E402
from supportbot.testing.fake_llm import FakeLLM  # noqa: E402
from supportbot.testing.fake_slack import FakeSlack  # noqa: E402
from supportbot.testing.fake_telegram import FakeTelegram  # noqa: E402
from supportbot.testing.serve import ServeProcess  # noqa: E402

WEBHOOK_SECRET = "healthz-bench-secret"


async def store_backlog(data_dir: Path, count: int, round_no: int) -> None:
    settings = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    store = await Store.open(settings.resolved_database_url)
    try:
        for i in range(count):
            await store.accept(platform="telegram", event_id=f"r{round_no}-{i}",
                               thread_key=str(7000 + i), customer_id=str(7000 + i),
                               customer_name="", language="en", text=f"backlog question {i}")
    finally:
        await store.close()


def burn(stop: Any) -> None:
    while not stop.is_set():
        sum(range(10_000))


def run(backlog: int, rounds: int, load: int) -> dict[str, Any]:
    stop = multiprocessing.Event()
    burners = [multiprocessing.Process(target=burn, args=(stop,), daemon=True)
               for _ in range(load)]
    for p in burners:
        p.start()
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp, FakeSlack() as slack, \
                FakeTelegram() as tg, FakeLLM(delay=30) as llm:
            work = Path(tmp)
            env = {
                "SUPPORTBOT_SLACK_BOT_TOKEN": slack.bot_token,
                "SUPPORTBOT_SLACK_SIGNING_SECRET": slack.signing_secret,
                "SUPPORTBOT_SLACK_API_URL": slack.api_url,
                "SUPPORTBOT_TELEGRAM_BOT_TOKEN": tg.token,
                "SUPPORTBOT_TELEGRAM_API_URL": tg.url,
                "SUPPORTBOT_TELEGRAM_WEBHOOK_URL": "https://bot.example.com/telegram/webhook",
                "SUPPORTBOT_TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "SUPPORTBOT_LLM_BASE_URL": llm.url,
                "SUPPORTBOT_LLM_API_KEY": "sk-bench",
                "SUPPORTBOT_LLM_TIMEOUT": "120",
                "SUPPORTBOT_LLM_DEADLINE": "120",
            }
            serve = ServeProcess(work, env)
            for round_no in range(rounds):
                asyncio.run(store_backlog(work / "data", backlog, round_no))
                serve.start(within=120)
                start = serve.starts[-1]
                rows.append({"healthz_s": round(start.seconds, 3),
                             "ready_s": round(start.ready_seconds or 0, 3),
                             "backlog_seen": (start.ready_health or {}).get("backlog")})
                serve.kill()
    finally:
        stop.set()
        for p in burners:
            p.join(5)
    return {
        "backlog": backlog, "rounds": rounds, "load_processes": load,
        "healthz_s_median": statistics.median(r["healthz_s"] for r in rows),
        "healthz_s_max": max(r["healthz_s"] for r in rows),
        "ready_s_median": statistics.median(r["ready_s"] for r in rows),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backlog", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--load", type=int, default=0, help="busy processes beside it")
    args = parser.parse_args()
    started = time.monotonic()
    result = run(args.backlog, args.rounds, args.load)
    result["bench_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
