"""memory: peak resident memory (VmHWM) of a running bot, ``supportbot serve`` with the Slack
adapter, 10,000 FAQ entries and 100,000 stored messages, after it has built its FAQ index on
start and answered a few hundred customers through signed Slack events.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench.botproc import serve_process
from bench.common import ROOT, peak_rss_mb, seed_history, status_mb, write_knowledge
from bench.fakeproc import fake_llm_process

NAME = "memory"


def run(quick: bool = False) -> list[dict[str, Any]]:
    from supportbot.testing.fake_slack import FakeSlack

    faq, convs, msgs, customers = (200, 100, 1000, 10) if quick else (10_000, 10_000, 100_000,
                                                                    100)
    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        write_knowledge(tmp / "knowledge", faq, files=max(1, faq // 100))
        data = tmp / "data"
        asyncio.run(seed_history(f"sqlite+aiosqlite:///{data / 'supportbot.db'}", convs, msgs))
        with fake_llm_process() as llm_url, FakeSlack() as slack:
            env = {
                "SUPPORTBOT_DATA_DIR": str(data),
                "SUPPORTBOT_KNOWLEDGE_DIR": str(tmp / "knowledge"),
                "SUPPORTBOT_PROMPTS_DIR": str(ROOT / "supportbot/defaults/prompts"),
                "SUPPORTBOT_LLM_BASE_URL": llm_url,
                "SUPPORTBOT_LLM_API_KEY": "sk-bench",
                "SUPPORTBOT_LLM_STREAM": "false",
                "SUPPORTBOT_SLACK_BOT_TOKEN": slack.bot_token,
                "SUPPORTBOT_SLACK_SIGNING_SECRET": slack.signing_secret,
                "SUPPORTBOT_SLACK_API_URL": slack.api_url,
            }
            with serve_process(env, tmp / "bot.log") as bot:
                after_start = peak_rss_mb(bot.pid)
                with httpx.Client(base_url=bot.url, timeout=30) as http:
                    for i in range(customers):
                        # one customer each: the per-customer rate limit must not cap the run
                        event = slack.message_event(f"how do I reset my password {i}?",
                                                    channel=f"D{i:06d}", user=f"U{i:06d}")
                        headers, body = slack.signed_event(event)
                        http.post("/slack/events", headers=headers, content=body)
                # bounded: report what was answered rather than lose the figure
                with contextlib.suppress(TimeoutError):
                    slack.wait_for(lambda: len(slack.calls("chat.postMessage")) >= customers,
                                   timeout=60)
                answered = len(slack.calls("chat.postMessage"))
                peak = peak_rss_mb(bot.pid)
                current = status_mb(bot.pid, "VmRSS")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [{"bench": NAME, "judged": not quick, "faq_entries": faq, "stored_messages": msgs,
             "customers_sent": customers, "customers_answered": answered, "peak_rss_mb": peak,
             "peak_rss_after_start_mb": after_start, "rss_at_end_mb": current}]

