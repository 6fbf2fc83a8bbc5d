"""Storm: thousands of customer messages through the Slack Events API and the Telegram webhook,
with platform redeliveries and LLM faults, then proof that each message got exactly one outcome.

    .venv/bin/python bench/storm.py [--conversations 600] [--messages 5] [--seed 1]

The real server (Starlette + uvicorn on loopback), Slack and Telegram adapters, engine and SQLite
store run against FakeSlack, FakeTelegram and FakeLLM. ``redeliver`` of the messages are sent a
second time (Slack retries with ``X-Slack-Retry-Num``, Telegram the same ``update_id``), and
``faults`` of the model calls fail: 429 with Retry-After, 500, a timeout, or a stream cut
mid-answer. Checks, per unique message: stored once on arrival (in its thread's order), one
stored final reply naming it (an answer, or an apology offering a human), that outcome visible on
the platform once, and per-thread order.
``tests/test_storm.py`` runs a bounded version; this prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supportbot.adapters.slack import SlackAdapter  # noqa: E402
from supportbot.adapters.telegram import TelegramAdapter  # noqa: E402
from supportbot.config import Settings  # noqa: E402
from supportbot.engine import Engine  # noqa: E402
from supportbot.server import create_app  # noqa: E402
from supportbot.testing.fake_llm import FakeLLM  # noqa: E402
from supportbot.testing.fake_slack import FakeSlack  # noqa: E402
from supportbot.testing.fake_telegram import FakeTelegram  # noqa: E402

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
WEBHOOK_SECRET = "storm-webhook-secret"
FAULTS = (  # (kind, options): what a failing model call looks like
    ("429", {"retry_after": 0.05}),
    ("500", {}),
    ("slow", {"seconds": 3.0}),  # longer than llm_timeout: a timeout
    ("cut", {"after": 2}),
)
ASKED = re.compile(r"You asked: (storm \S+)")


class StormLLM(FakeLLM):
    """FakeLLM that queues a random fault (with ``fail_next``) before a share of chat calls."""

    def __init__(self, fault_rate: float, seed: int) -> None:
        super().__init__()
        self.fault_rate = fault_rate
        self.injected: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()

    def _take_fault(self, endpoint: str):  # type: ignore[no-untyped-def]
        with self._rng_lock:
            if endpoint == "chat" and self._rng.random() < self.fault_rate:
                kind, options = self._rng.choice(FAULTS)
                self.injected[kind] += 1
                self.fail_next(kind, **options)
        return super()._take_fault(endpoint)


@dataclass
class Sent:
    platform: str
    thread: str  # Slack channel or Telegram chat id
    event_id: str
    text: str
    seq: int  # position in its thread


@dataclass
class StormReport:
    conversations: int = 0
    unique_messages: int = 0
    deliveries: int = 0  # HTTP requests carrying a customer message, redeliveries included
    redeliveries: int = 0
    refused: int = 0  # 503: not stored within the ack budget (delivered again)
    ack_ms: dict[str, float] = field(default_factory=dict)  # door answer latency p50/p99/max
    http_errors: int = 0
    llm_calls: int = 0
    faults_injected: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    answered_on_platform: int = 0
    apologies_on_platform: int = 0
    partial_streams_left: int = 0  # a cut stream's partial text, followed by the apology
    duplicates: int = 0
    missing: int = 0
    out_of_order_threads: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["problems"] = self.problems[:20]
        return data


def settings_for(tmp: Path, slack: FakeSlack, tg: FakeTelegram, llm: FakeLLM) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp,
        prompts_dir=ROOT / "supportbot/defaults/prompts",
        knowledge_dir=ROOT / "supportbot/defaults/knowledge",
        slack_bot_token=slack.bot_token,
        slack_signing_secret=slack.signing_secret,
        slack_api_url=slack.api_url,
        telegram_bot_token=tg.token,
        telegram_api_url=tg.url,
        telegram_webhook_url="https://bot.example.com/telegram/webhook",
        telegram_webhook_secret=WEBHOOK_SECRET,
        llm_base_url=llm.url,
        llm_api_key="sk-storm",
        llm_timeout=1.0,
        llm_deadline=5.0,
        llm_max_retries=1,
        llm_base_backoff=0.01,
        failures_before_handoff=1_000_000,  # every failure is answered with an apology
        rate_limit_per_minute=0,
        daily_token_budget=0,
    )


async def run_storm(
    tmp: Path,
    *,
    conversations: int = 200,
    messages: int = 3,
    redeliver: float = 0.2,
    faults: float = 0.1,
    seed: int = 1,
    concurrency: int = 64,
) -> StormReport:
    rng = random.Random(seed)
    report = StormReport(conversations=conversations)
    started = time.monotonic()
    with FakeSlack() as slack, FakeTelegram() as tg, StormLLM(faults, seed) as llm:
        llm.delay = 0.0
        settings = settings_for(tmp, slack, tg, llm)
        engine = await Engine.open(settings)
        slack_adapter = SlackAdapter(engine, settings, min_interval=0.0, stream_interval=0.05)
        tg_adapter = TelegramAdapter(engine, settings)
        server = uvicorn.Server(uvicorn.Config(
            create_app(engine, [slack_adapter, tg_adapter]), host="127.0.0.1", port=0,
            log_config=None, lifespan="on", access_log=False,
        ))  # fmt: skip
        serving = asyncio.create_task(server.serve())
        sent: list[Sent] = []
        acks: list[float] = []
        try:
            while not server.started:
                if serving.done():
                    serving.result()
                await asyncio.sleep(0.02)
            port = server.servers[0].sockets[0].getsockname()[1]
            limits = httpx.Limits(max_connections=concurrency)
            gate = asyncio.Semaphore(concurrency)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits
            ) as http:

                async def post(path: str, **kw: Any) -> None:
                    async with gate:
                        for attempt in range(20):
                            try:
                                began = time.monotonic()
                                r = await http.post(path, **kw)
                                acks.append(time.monotonic() - began)
                            except httpx.TransportError:
                                # a kept-alive connection the server just closed; platforms
                                # redeliver what got no answer, and so do we
                                if attempt == 19:
                                    raise
                                continue
                            if r.status_code != 503 or attempt == 19:
                                break
                            # refused, not stored (the store was slower than the ack budget):
                            # platforms deliver it again later, and so do we
                            report.redeliveries += 1
                            report.refused += 1
                            await asyncio.sleep(0.5)
                    report.deliveries += 1
                    if r.status_code != 200:
                        report.http_errors += 1
                        report.problems.append(f"{path} answered {r.status_code}")

                async def later(delay: float, path: str, **kw: Any) -> None:
                    await asyncio.sleep(delay)
                    report.redeliveries += 1
                    await post(path, **kw)

                redeliveries: list[asyncio.Task[None]] = []

                async def customer(n: int) -> None:
                    crng = random.Random(seed * 100_003 + n)
                    on_slack = n % 2 == 0
                    thread = f"D{n:05d}" if on_slack else str(10_000 + n)
                    for i in range(messages):
                        text = f"storm {n}-{i} how do invoices work?"
                        if on_slack:
                            event = slack.message_event(text, channel=thread, user=f"U{n:05d}")
                            envelope_id = f"Ev{n:05d}x{i}"
                            event_id = f"{thread}:{event['ts']}"  # the engine's message id
                            headers, body = slack.signed_event(event, event_id=envelope_id)
                            kw: dict[str, Any] = {"headers": headers, "content": body}
                            path = "/slack/events"
                        else:
                            update = tg.private_message(text, user_id=int(thread),
                                                        first_name=f"C{n}")
                            event_id = str(update["update_id"])
                            kw = {"json": update, "headers": {SECRET_HEADER: WEBHOOK_SECRET}}
                            path = "/telegram/webhook"
                        sent.append(Sent("slack" if on_slack else "telegram", thread, event_id,
                                         text, i))
                        await post(path, **kw)
                        if crng.random() < redeliver:
                            again = dict(kw)
                            if on_slack:  # Slack re-signs each retry and says it is one
                                headers, body = slack.signed_event(
                                    event, event_id=envelope_id, retry_num=1
                                )
                                again = {"headers": headers, "content": body}
                            redeliveries.append(asyncio.create_task(
                                later(crng.uniform(0, 0.5), path, **again)
                            ))  # fmt: skip
                        await asyncio.sleep(crng.uniform(0.0, 0.05))

                order = list(range(conversations))
                rng.shuffle(order)
                await asyncio.gather(*(customer(n) for n in order))
                await asyncio.gather(*redeliveries)
                await settle(engine, len(sent), within=120)
                await slack_adapter.drain(within=30)
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, 30)
            await verify(engine, slack, tg, sent, report)
            await engine.aclose()
        report.llm_calls = len(llm.chat_requests())
        if acks:
            acks.sort()
            report.ack_ms = {name: round(acks[min(len(acks) - 1, int(q * len(acks)))] * 1000, 1)
                             for name, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))}
        report.faults_injected = dict(llm.injected)
    report.unique_messages = len(sent)
    report.seconds = round(time.monotonic() - started, 1)
    return report


async def settle(engine: Engine, expected: int, within: float) -> None:
    """Wait until every accepted customer message left the ``received`` state."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        users = await engine.store.count_messages()
        if users >= expected * 2 and not await engine.store.unanswered():
            await asyncio.sleep(0.3)  # let the last sends reach the fakes
            return
        await asyncio.sleep(0.1)


async def verify(engine: Engine, slack: FakeSlack, tg: FakeTelegram, sent: list[Sent],
                 report: StormReport) -> None:
    store = engine.store
    apology = engine.prompts.message("llm_failed", "en")
    dont_know = engine.prompts.message("dont_know", "en")
    outcomes: Counter[str] = Counter()
    by_thread: dict[tuple[str, str], list[Sent]] = {}
    for s in sent:
        by_thread.setdefault((s.platform, s.thread), []).append(s)
    for (platform, thread), items in by_thread.items():
        key = f"T0001:{thread}" if platform == "slack" else thread
        conv = await store.find_open(platform, key)
        if conv is None:
            report.missing += len(items)
            report.problems.append(f"{platform}:{thread}: no conversation")
            continue
        stored = list(await store.messages(conv.id))
        users = [m for m in stored if m.role == "user"]
        ids = [m.platform_message_id for m in users]
        if len(ids) != len(set(ids)):
            report.duplicates += len(ids) - len(set(ids))
            report.problems.append(f"{platform}:{thread}: a message stored twice")
        missing = {s.event_id for s in items} - set(ids)
        report.missing += len(missing)
        if missing:
            report.problems.append(f"{platform}:{thread}: never stored {sorted(missing)}")
        # questions are stored on arrival (before the ack), answers later: each question
        # stored once (above), in the thread's order, with exactly one final reply that names
        # it (``answers``), the replies in the questions' order. A streamed reply also leaves
        # its marker row ('streamed', no text), which is not a reply.
        if [m.text for m in users] != [s.text for s in items]:
            report.out_of_order_threads += 1
            report.problems.append(f"{platform}:{thread}: stored out of order")
        for m in users:
            if m.state != "answered":
                report.problems.append(f"{platform}:{thread}: message left {m.state}")
        markers = [m for m in stored if m.role == "assistant" and m.state == "streamed"]
        replies = [m for m in stored if m.role == "assistant" and m.state != "streamed"]
        for m in replies:
            outcomes[m.outcome or "?"] += 1
            if m.state != "sent":
                report.problems.append(f"{platform}:{thread}: reply left {m.state}")
        for m in markers:
            if m.answers not in {u.id for u in users}:
                report.problems.append(f"{platform}:{thread}: stream marker answers nothing")
        reply_of: dict[int, Any] = {}
        for r in replies:
            if r.answers in reply_of:
                report.problems.append(f"{platform}:{thread}: question {r.answers} "
                                       "answered twice in the store")
            reply_of[r.answers] = r
        if set(reply_of) != {u.id for u in users} or len(replies) != len(users):
            report.problems.append(f"{platform}:{thread}: {len(replies)} replies stored for "
                                   f"{len(users)} questions")
        if [r.answers for r in replies] != [u.id for u in users if u.id in reply_of]:
            report.problems.append(f"{platform}:{thread}: replies stored out of order")
        # what the customer saw
        if platform == "slack":
            seen = [m.text for m in slack.messages(channel=thread)]
        else:
            seen = tg.texts(int(thread))
        # each question's stored outcome, through the reply that names it
        outcome_of = {ASKED.search(f"You asked: {u.text}").group(1):  # type: ignore[union-attr]
                      reply_of[u.id].outcome for u in users if u.id in reply_of}
        answers = [ASKED.search(t).group(1) for t in seen if ASKED.search(t)]  # type: ignore[union-attr]
        # a stream that failed after its text went out stays visible, followed by the apology
        streamed_then_failed = [a for a in answers if outcome_of.get(a) == "llm_failed"]
        answers = [a for a in answers if outcome_of.get(a) != "llm_failed"]
        report.partial_streams_left += len(streamed_then_failed)
        expected_answers = [q for q, o in outcome_of.items() if o == "llm"]
        if answers != expected_answers:
            report.problems.append(f"{platform}:{thread}: saw {answers}, stored "
                                   f"{expected_answers}")
        report.duplicates += len(answers) - len(set(answers))
        report.answered_on_platform += len(answers)
        sorry = [t for t in seen if _same(t, apology) or _same(t, dont_know)]
        report.apologies_on_platform += len(sorry)
        failed = sum(1 for m in replies if m.outcome in ("llm_failed", "dont_know"))
        if len(sorry) != failed:
            report.problems.append(f"{platform}:{thread}: {len(sorry)} apologies seen, "
                                   f"{failed} stored")
        # what is left: cut streams whose partial text never reached the question
        report.partial_streams_left += (
            len(seen) - len(answers) - len(sorry) - len(streamed_then_failed)
        )
        if [a.split()[1] for a in answers] != sorted(
            (a.split()[1] for a in answers), key=lambda x: int(x.split("-")[1])
        ):
            report.out_of_order_threads += 1
            report.problems.append(f"{platform}:{thread}: answers out of order {answers}")
    report.outcomes = dict(outcomes)


def _same(seen: str, words: str) -> bool:
    """Platform formatting (mrkdwn, HTML) aside, is this the bot's stock sentence?"""
    def norm(s: str) -> str:
        return re.sub(r"\W+", "", s).lower()

    return norm(words)[:40] in norm(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=600)
    parser.add_argument("--messages", type=int, default=5, help="per conversation")
    parser.add_argument("--redeliver", type=float, default=0.2)
    parser.add_argument("--faults", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = asyncio.run(run_storm(
            Path(tmp), conversations=args.conversations, messages=args.messages,
            redeliver=args.redeliver, faults=args.faults, seed=args.seed,
        ))  # fmt: skip
    print(json.dumps(report.as_dict(), indent=2))
    sys.exit(1 if report.problems else 0)


if __name__ == "__main__":
    main()
