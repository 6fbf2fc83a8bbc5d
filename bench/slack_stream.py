"""slack_stream: how long a Slack answer takes to complete, streamed or not (issue 20).

One message at a time, each a mention in its own channel (Slack's pacing is per channel, so a
busy channel's new posts would wait for each other and hide what this measures): a signed Events
API request into the real SlackAdapter behind uvicorn, the engine, FakeLLM answering at once,
until FakeSlack shows the finished answer with its rating buttons. The adapter keeps its
production pacing (one new message per second per channel) and stream interval (1 s).

Modes: ``whole`` (``SUPPORTBOT_LLM_STREAM=false``: one ``chat.postMessage``), ``native``
(``chat.startStream`` / ``appendStream`` / ``stopStream``, then the buttons' ``chat.update``),
``edits`` (the workspace refuses native streaming: a placeholder post and ``chat.update`` edits).
Before issue 20 every ``chat.update`` waited out the channel's one-second pacing: streamed
answers took p50 1,014 ms against 6.8 ms whole.

    python -m bench.slack_stream [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from bench.common import ROOT, percentiles

NAME = "slack_stream"
MODES = ("whole", "native", "edits")
REFUSED: list[str] = []  # events answered 503 and delivered again


def run(quick: bool = False) -> list[dict[str, Any]]:
    samples = 5 if quick else 100
    return [asyncio.run(_mode(mode, samples)) | {"bench": NAME, "judged": not quick}
            for mode in MODES]


@contextlib.asynccontextmanager
async def _serving(mode: str, tmp: Path) -> AsyncIterator[tuple[Any, Any, httpx.AsyncClient]]:
    from supportbot.adapters.slack import SlackAdapter
    from supportbot.config import Settings
    from supportbot.engine import Engine
    from supportbot.server import create_app
    from supportbot.testing.fake_llm import FakeLLM
    from supportbot.testing.fake_slack import FakeSlack

    with FakeSlack() as slack, FakeLLM() as llm:
        if mode == "edits":
            slack.refuse_streaming("unknown_method")
        settings = Settings(
            _env_file=None, data_dir=tmp, prompts_dir=ROOT / "supportbot/defaults/prompts",
            knowledge_dir=ROOT / "supportbot/defaults/knowledge",
            slack_bot_token=slack.bot_token, slack_signing_secret=slack.signing_secret,
            slack_api_url=slack.api_url, llm_base_url=llm.url, llm_api_key="sk-bench",
            llm_max_retries=0, llm_stream=mode != "whole", log_level="WARNING",
        )
        engine = await Engine.open(settings)
        adapter = SlackAdapter(engine, settings)  # production pacing and stream interval
        server = uvicorn.Server(uvicorn.Config(create_app(engine, [adapter]), host="127.0.0.1",
                                               port=0, log_config=None, lifespan="on"))
        task = asyncio.create_task(server.serve())
        try:
            await FakeSlack.async_wait_for(lambda: server.started, within=30)
            port = server.servers[0].sockets[0].getsockname()[1]
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                yield slack, adapter, http
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 30)
            await engine.aclose()


async def _mode(mode: str, samples: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{NAME}-"))
    REFUSED.clear()
    try:
        async with _serving(mode, tmp) as (slack, adapter, http):
            await _ask(slack, http, "CWARMUP")  # first-use costs (the index, connections)
            latencies = [await _ask(slack, http, f"C{i:05d}") for i in range(samples)]
            methods: dict[str, int] = {}
            for call in slack.calls():
                if call.method.startswith("chat."):
                    methods[call.method] = methods.get(call.method, 0) + 1
            answers = samples + 1
            poster = adapter.poster
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "mode": mode, "samples": samples, **percentiles(latencies),
        "redelivered_after_503": len(REFUSED),
        "api_calls_per_msg": {m: round(n / answers, 2) for m, n in sorted(methods.items())},
        "paced": dict(poster.paced), "pace_waits": dict(poster.pace_waits),
    }


async def _send(slack: Any, http: httpx.AsyncClient, channel: str) -> None:
    event = slack.mention_event("How long do refunds take?", channel=channel,
                                user=f"U{channel}")  # a customer per channel: no abuse limits
    for attempt in range(1, 11):  # 503 (not stored in time): Slack delivers it again
        headers, body = slack.signed_event(event, event_id=f"Ev{channel}",
                                           retry_num=attempt - 1 or None)
        response = await http.post("/slack/events", headers=headers, content=body)
        if response.status_code != 503:
            break
        REFUSED.append(channel)
        await asyncio.sleep(0.1 * attempt)
    assert response.status_code == 200, response.status_code


def _finished(slack: Any) -> set[str]:
    """Channels whose answer is complete: text and rating buttons, no stream open."""
    return {m.channel for m in slack.messages() if m.blocks and not m.streaming}


async def _ask(slack: Any, http: httpx.AsyncClient, channel: str) -> float:
    """Seconds from the signed event to the finished answer (text and buttons) in ``channel``."""
    started = time.perf_counter()
    await _send(slack, http, channel)
    await slack.async_wait_for(lambda: channel in _finished(slack), within=30, interval=0.001)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 samples per mode")
    for row in run(parser.parse_args().quick):
        print(json.dumps(row, ensure_ascii=False))


if __name__ == "__main__":
    main()
