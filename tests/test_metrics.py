"""Metrics: every family moves after real traffic through the engine, ``/metrics`` serves them,
and the per-message log line carries tokens and LLM latency (never the text by default).

The registry is per process and shared by all tests, so assertions compare before and after.
"""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from supportbot import metrics
from supportbot.adapters.slack.sink import SlackPoster
from supportbot.engine import Outcome
from supportbot.logs import ContextFilter, JsonFormatter
from supportbot.server import create_app
from supportbot.testing import OfflineBot, RecordingSink
from supportbot.testing.fake_llm import FakeLLM
from supportbot.testing.fake_slack import FakeSlack

UNKNOWN = "What is the airspeed velocity of an unladen swallow?"


class Delta:
    """Sample values now, to compare with later."""

    def __init__(self, *samples: tuple[str, dict[str, str]]) -> None:
        self.samples = samples
        self.before = [metrics.value(n, labels) for n, labels in samples]

    def changes(self) -> list[float]:
        return [metrics.value(n, lb) - b for (n, lb), b in zip(self.samples, self.before,
                                                                 strict=True)]


async def test_outcomes_messages_and_handoffs_without_llm(tmp_path):
    p = {"platform": "mtest1"}
    d = Delta(
        ("supportbot_messages_received_total", p),
        ("supportbot_messages_sent_total", p),
        ("supportbot_replies_total", p | {"outcome": "faq"}),
        ("supportbot_replies_total", p | {"outcome": "dont_know"}),
        ("supportbot_replies_total", p | {"outcome": "handoff"}),
        ("supportbot_replies_total", p | {"outcome": "duplicate"}),
        ("supportbot_replies_total", p | {"outcome": "relayed"}),
        ("supportbot_handoffs_total", {"trigger": "phrase"}),
        ("supportbot_handoffs_total", {"trigger": "repeated_failure:dont_know"}),
    )
    async with OfflineBot(tmp_path, platform="mtest1", failures_before_handoff=2) as bot:
        assert (await bot.ask("How long do refunds take?", message_id="e1")).outcome is Outcome.FAQ
        assert (await bot.ask("How long do refunds take?", message_id="e1")).outcome is (
            Outcome.DUPLICATE
        )
        assert (await bot.ask(UNKNOWN, thread="t2")).outcome is Outcome.DONT_KNOW
        assert (await bot.ask("coconut migration?", thread="t2")).outcome is Outcome.HANDOFF
        assert (await bot.ask("I want to talk to a human", thread="t3")).outcome is (
            Outcome.HANDOFF
        )
        assert (await bot.ask("hello?", thread="t3")).outcome is Outcome.RELAYED
    assert d.changes() == [6, 4, 1, 1, 2, 1, 1, 1, 1]


async def test_llm_latency_tokens_retries_and_errors(tmp_path, fake_llm: FakeLLM):
    d = Delta(
        ("supportbot_replies_total", {"platform": "mtest2", "outcome": "llm"}),
        ("supportbot_replies_total", {"platform": "mtest2", "outcome": "llm_failed"}),
        ("supportbot_llm_latency_seconds_count", {"result": "ok"}),
        ("supportbot_llm_latency_seconds_count", {"result": "error"}),
        ("supportbot_llm_tokens_count", {"kind": "prompt"}),
        ("supportbot_llm_tokens_count", {"kind": "completion"}),
        ("supportbot_llm_retries_total", {"reason": "server_error"}),
        ("supportbot_llm_retries_total", {"reason": "rate_limited"}),
        ("supportbot_llm_errors_total", {"error": "LLMUnavailable"}),
    )
    tokens_before = metrics.value("supportbot_llm_tokens_sum", {"kind": "completion"})
    async with OfflineBot(
        tmp_path, platform="mtest2", llm_base_url=fake_llm.url, llm_max_retries=2,
        llm_base_backoff=0.01, failures_before_handoff=5,
    ) as bot:
        fake_llm.fail_next("500")
        fake_llm.fail_next("429", retry_after=0)
        ok = await bot.ask("How long do refunds take?")
        fake_llm.fail_next("500", times=3)
        failed = await bot.ask("Anything else?", thread="t2")
    assert ok.outcome is Outcome.LLM and failed.outcome is Outcome.LLM_FAILED
    assert d.changes() == [1, 1, 1, 1, 1, 1, 3, 1, 1]
    assert metrics.value("supportbot_llm_tokens_sum", {"kind": "completion"}) > tokens_before


async def test_limited_messages_are_counted(tmp_path):
    d = Delta(
        ("supportbot_limited_total", {"platform": "mtest3", "limit": "rate"}),
        ("supportbot_replies_total", {"platform": "mtest3", "outcome": "limited"}),
    )
    async with OfflineBot(tmp_path, platform="mtest3", rate_limit_per_minute=1) as bot:
        await bot.ask("How long do refunds take?")
        await bot.ask("How long do refunds take?")
        await bot.ask("How long do refunds take?")
    assert d.changes() == [2, 2]


async def test_lock_gauges_show_held_and_queued_conversations(tmp_path):
    held0 = metrics.value("supportbot_conversation_locks_held")
    wait0 = metrics.value("supportbot_conversation_lock_waiters")
    with FakeLLM(delay=0.5) as llm:
        async with OfflineBot(tmp_path, llm_base_url=llm.url, llm_stream=False) as bot:
            first = asyncio.create_task(bot.ask("one"))
            second = asyncio.create_task(bot.ask("two"))
            other = asyncio.create_task(bot.ask("three", thread="other"))

            for _ in range(500):  # at most 5 s
                if (
                    metrics.value("supportbot_conversation_locks_held") - held0 == 2
                    and metrics.value("supportbot_conversation_lock_waiters") - wait0 == 1
                ):
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("never saw 2 held locks and 1 waiter")
            await asyncio.wait_for(asyncio.gather(first, second, other), 10)
    assert metrics.value("supportbot_conversation_locks_held") == held0
    assert metrics.value("supportbot_conversation_lock_waiters") == wait0


async def test_slack_api_errors_and_rate_limit_waits_are_counted():
    d = Delta(
        ("supportbot_platform_rate_limit_waits_total", {"platform": "slack"}),
        ("supportbot_platform_api_errors_total", {"platform": "slack",
                                                  "method": "chat.postMessage"}),
    )
    wait0 = metrics.value("supportbot_platform_rate_limit_wait_seconds_total",
                          {"platform": "slack"})
    with FakeSlack() as slack:
        poster = SlackPoster(AsyncWebClient(token=slack.bot_token, base_url=slack.api_url),
                             min_interval=0)
        slack.rate_limit("chat.postMessage", retry_after=1)
        await poster.post("C1", "hello")
        slack.fail("chat.postMessage", "channel_not_found")
        try:
            await poster.post("C1", "again")
        except SlackApiError:
            pass
        else:
            raise AssertionError("the injected error did not surface")
    assert d.changes() == [1, 1]
    waited = metrics.value("supportbot_platform_rate_limit_wait_seconds_total",
                           {"platform": "slack"}) - wait0
    assert waited == 1.0


async def test_metrics_endpoint_serves_prometheus_text(tmp_path, fake_llm: FakeLLM):
    async with OfflineBot(tmp_path, platform="mtest4", llm_base_url=fake_llm.url) as bot:
        await bot.ask("How long do refunds take?", sink=RecordingSink())
        app = create_app(bot.engine, [])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bot") as http:
            resp = await http.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    body = resp.text
    for family in (
        "supportbot_messages_received_total", "supportbot_messages_sent_total",
        "supportbot_replies_total", "supportbot_handoffs_total",
        "supportbot_llm_latency_seconds_bucket", "supportbot_llm_tokens_bucket",
        "supportbot_llm_retries_total", "supportbot_platform_api_errors_total",
        "supportbot_platform_rate_limit_waits_total", "supportbot_conversation_locks_held",
        "supportbot_conversation_lock_waiters", "supportbot_limited_total",
        "supportbot_feedback_total",
    ):
        assert f"# TYPE {family.removesuffix('_total').removesuffix('_bucket')}" in body, family
    assert 'supportbot_replies_total{outcome="llm",platform="mtest4"} 1.0' in body
    # bounded labels only: nothing per conversation, customer or message
    for label in ("conversation", "customer", "thread", "message_id"):
        assert f"{label}=" not in body
    assert "_created" not in body


async def test_one_log_line_per_message_with_tokens_and_llm_latency(
    tmp_path, fake_llm: FakeLLM, caplog
):
    caplog.set_level(logging.INFO, logger="supportbot.engine")
    caplog.handler.addFilter(ContextFilter())  # what logs.setup installs: adds conversation_id
    secret_question = "How long do refunds take for order 4711?"
    async with OfflineBot(tmp_path, platform="mtest5", llm_base_url=fake_llm.url) as bot:
        reply = await bot.ask(secret_question)
    lines = [r for r in caplog.records if r.getMessage() == "message processed"]
    assert len(lines) == 1
    record = lines[0]
    assert record.conversation_id == reply.conversation_id
    assert record.platform == "mtest5" and record.outcome == "llm"
    assert record.prompt_tokens > 0 and record.completion_tokens > 0
    assert record.llm_ms > 0 and record.latency_ms >= record.llm_ms
    assert not hasattr(record, "text")
    line = json.loads(JsonFormatter().format(record))
    assert "4711" not in json.dumps(line)
    assert line["prompt_tokens"] == record.prompt_tokens


async def test_message_text_is_logged_only_when_enabled(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="supportbot.engine")
    async with OfflineBot(tmp_path, log_message_text=True) as bot:
        await bot.ask("How long do refunds take?")
    [record] = [r for r in caplog.records if r.getMessage() == "message processed"]
    assert record.text == "How long do refunds take?"
