"""slack_path and telegram_path: a platform event into ``supportbot serve`` (a subprocess:
uvicorn, the Starlette app, the real SlackAdapter / TelegramAdapter and engine) until the reply
reaches the fake platform API.

Slack: signed Events API requests to ``/slack/events``. Telegram: webhook updates with the
secret header to ``/telegram/webhook``. The fake LLM (instant) runs in a third process; the fake
platform and the load generator run here. Streaming is off (``SUPPORTBOT_LLM_STREAM=false``) so
one reply is one ``chat.postMessage`` / ``sendMessage``.

Figures: latency at light load (one message at a time) and throughput (many customers at once,
``msgs_per_s`` = messages / time from the first request to the last reply). Because the machine
is shared, the burst also reports the bot process's own CPU time per message (``bot_cpu_ms``,
user + system, until the process is idle again) and the platform API calls it made per message
(``api_calls_per_msg``, by method): both hold steady when wall-clock figures do not.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.botproc import free_port, repo_path, serve_process
from bench.common import percentiles, process_cpu_seconds
from bench.fakeproc import fake_llm_process

NAME = "platform_paths"
SECRET = "bench-webhook-secret"


def run(quick: bool = False, name: str = "slack_path") -> list[dict[str, Any]]:
    samples, burst, concurrency = (5, 20, 8) if quick else (200, 1000, 32)
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    try:
        with fake_llm_process(delay=0.0) as llm_url:
            env = {
                "SUPPORTBOT_DATA_DIR": str(tmp / "data"),
                "SUPPORTBOT_KNOWLEDGE_DIR": repo_path("supportbot/defaults/knowledge"),
                "SUPPORTBOT_PROMPTS_DIR": repo_path("supportbot/defaults/prompts"),
                "SUPPORTBOT_LLM_BASE_URL": llm_url,
                "SUPPORTBOT_LLM_API_KEY": "sk-bench",
                "SUPPORTBOT_LLM_STREAM": "false",
                "SUPPORTBOT_LOG_FORMAT": "json",
            }
            runner = _slack if name == "slack_path" else _telegram
            row = runner(env, tmp, samples, burst, concurrency)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [{"bench": name, "judged": not quick, **row}]


def _slack(env: dict[str, str], tmp: Path, samples: int, burst: int,
           concurrency: int) -> dict[str, Any]:
    from supportbot.testing.fake_slack import FakeSlack

    with FakeSlack() as slack:
        env |= {
            "SUPPORTBOT_SLACK_BOT_TOKEN": slack.bot_token,
            "SUPPORTBOT_SLACK_SIGNING_SECRET": slack.signing_secret,
            "SUPPORTBOT_SLACK_API_URL": slack.api_url,
        }

        def request(i: int) -> tuple[str, dict[str, str], bytes, str]:
            channel = f"D{i:07d}"
            event = slack.message_event(f"question number {i}: how do refunds work?",
                                        channel=channel, user=f"U{i:07d}")
            headers, body = slack.signed_event(event)
            return "/slack/events", headers, body, channel

        def replies() -> dict[str, float]:
            return {str(c.params.get("channel")): c.at for c in slack.calls("chat.postMessage")}

        def methods() -> list[str]:
            return [c.method for c in slack.calls()]

        with serve_process(env, tmp / "bot.log") as bot:
            return asyncio.run(_drive(bot.url, request, replies, samples, burst, concurrency,
                                      pid=bot.pid, methods=methods))


def _telegram(env: dict[str, str], tmp: Path, samples: int, burst: int,
              concurrency: int) -> dict[str, Any]:
    from supportbot.testing.fake_telegram import FakeTelegram

    with FakeTelegram() as tg:
        port = free_port()
        env |= {
            "SUPPORTBOT_TELEGRAM_BOT_TOKEN": tg.token,
            "SUPPORTBOT_TELEGRAM_API_URL": tg.url,
            "SUPPORTBOT_TELEGRAM_WEBHOOK_URL": f"http://127.0.0.1:{port}/telegram/webhook",
            "SUPPORTBOT_TELEGRAM_WEBHOOK_SECRET": SECRET,
        }
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"}

        def request(i: int) -> tuple[str, dict[str, str], bytes, str]:
            import json

            update = tg.private_message(f"question number {i}: how do refunds work?",
                                        user_id=10_000_000 + i)
            return "/telegram/webhook", headers, json.dumps(update).encode(), str(10_000_000 + i)

        def replies() -> dict[str, float]:
            return {str(c.params.get("chat_id")): c.at for c in tg.calls("sendMessage")
                    if not c.error}

        def methods() -> list[str]:
            return [c.method for c in tg.calls()]

        with serve_process(env, tmp / "bot.log", port=port) as bot:
            return asyncio.run(_drive(bot.url, request, replies, samples, burst, concurrency,
                                      pid=bot.pid, methods=methods))


async def _post(http: httpx.AsyncClient, path: str, headers: dict[str, str],
                body: bytes) -> httpx.Response:
    """Deliver as the platforms do: again when the server closed a kept-alive connection just
    as the request went out (uvicorn drops idle ones after 5 s); the bot dedupes redeliveries."""
    for attempt in range(3):
        try:
            response = await http.post(path, headers=headers, content=body)
        except httpx.RemoteProtocolError:
            if attempt == 2:
                raise
            continue
        response.raise_for_status()
        return response
    raise AssertionError("unreachable")


async def _drive(
    url: str,
    request: Callable[[int], tuple[str, dict[str, str], bytes, str]],
    replies: Callable[[], dict[str, float]],
    samples: int,
    burst: int,
    concurrency: int,
    *,
    pid: int,
    methods: Callable[[], list[str]],
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        # light load: one customer message at a time, each to a new conversation
        latencies = []
        for i in range(samples + 5):
            path, headers, body, key = request(i)
            sent = time.time()
            await _post(http, path, headers, body)
            at = await _wait_for(lambda key=key: replies().get(key), within=30)
            if i >= 5:  # the first few warm the bot up
                latencies.append(at - sent)

        # throughput: many customers at once
        offset = samples + 5
        prepared = [request(offset + i) for i in range(burst)]
        acks: list[float] = []
        queue = list(reversed(prepared))
        await _settle(pid)  # the light-load phase's last follow-up calls
        calls_before = len(methods())
        cpu_before = process_cpu_seconds(pid)
        first_sent = time.time()

        async def poster() -> None:
            while queue:
                path, headers, body, _ = queue.pop()
                started = time.perf_counter()
                await _post(http, path, headers, body)
                acks.append(time.perf_counter() - started)

        await asyncio.gather(*(poster() for _ in range(concurrency)))
        posted = time.time()
        keys = {key for *_, key in prepared}
        done = await _wait_for(
            lambda: (lambda got: got if keys <= got.keys() else None)(replies()),
            within=60, need_all=False,
        )
        got = replies()
        arrived = [got[k] for k in keys if k in got]
        last = max(arrived) if arrived else time.time()
        cpu = await _settle(pid) - cpu_before  # follow-up work (edits) after the last reply too
        per_method: dict[str, int] = {}
        for method in methods()[calls_before:]:
            per_method[method] = per_method.get(method, 0) + 1
        return {
            **percentiles(latencies),
            "samples": len(latencies),
            "burst": burst,
            "post_concurrency": concurrency,
            "delivered": len(arrived),
            "all_delivered": done is not None,
            "msgs_per_s": round(len(arrived) / (last - first_sent), 1),
            "post_phase_s": round(posted - first_sent, 2),
            **percentiles(acks, "ack_"),
            "bot_cpu_ms": round(cpu * 1000 / burst, 2),
            "api_calls_per_msg": round(sum(per_method.values()) / burst, 2),
            "api_calls": {m: round(n / burst, 2) for m, n in sorted(per_method.items())},
        }


async def _settle(pid: int, idle: float = 1.5, within: float = 15.0) -> float:
    """Wait until the process has used no CPU for ``idle`` seconds (Slack's paced follow-up
    calls come up to a second after the reply); return its CPU time then."""
    deadline = time.monotonic() + within
    last = process_cpu_seconds(pid)
    still_since = time.monotonic()
    while time.monotonic() - still_since < idle and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = process_cpu_seconds(pid)
        if now - last > 0.015:  # more than a clock tick or so: still working
            still_since = time.monotonic()
        last = now
    return last


async def _wait_for(probe: Callable[[], Any], within: float, need_all: bool = True) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            if need_all:
                raise TimeoutError("no reply in time")
            return None
        await asyncio.sleep(0.002)
