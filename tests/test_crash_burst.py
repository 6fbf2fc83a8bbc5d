"""kill -9 under load, five times over: nothing acknowledged is lost, nothing is answered twice.

The real ``supportbot serve`` runs as a child process against loopback Slack (Events API over
HTTP), Telegram (webhook) and a streaming LLM. Customers write in bursts (40 Slack messages in
20 DMs, 100 Telegram messages from 50 people, two per thread), platforms redeliver (some
messages again and again, and every one the bot never acknowledged), and the process is killed
with SIGKILL at a different moment each round: right after the acks, in the middle of streamed
answers, during the burst itself, at a random point. The rounds run once (a module fixture);
two tests judge the outcome:

- nothing acknowledged is lost: every message is acknowledged at last, stored, marked answered,
  and its full answer reached the customer, in its thread's order; ``/healthz`` answered while
  the backlog a kill left was still being answered;
- each message is answered exactly once and whole: no second copy, no half-streamed reply left
  (Slack's "…" placeholder, Telegram's first words) - the engine must finish such a reply in
  place, including one the platform accepted a moment before the kill, before the database
  row saying where it went was written (the reply journal, ``supportbot.engine.streams``).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from supportbot.config import Settings
from supportbot.storage import Store
from supportbot.testing.fake_llm import FakeLLM
from supportbot.testing.fake_slack import FakeSlack
from supportbot.testing.fake_telegram import FakeTelegram
from supportbot.testing.serve import ServeProcess

WEBHOOK_SECRET = "crash-burst-webhook-secret"
SLACK_THREADS, TELEGRAM_THREADS, PER_THREAD = 20, 50, 2
ROUNDS = 5
# Threads allowed a second copy or a dangling first message: replies the platform had accepted
# but whose answer the process had not yet read when it was killed (README Guarantees: no bot
# can close that window without reading the channel's history). Measured: 9 to 12 of 70 before
# the reply journal, 0 to 2 of 70 since.
IN_FLIGHT_AT_KILL = 3


@dataclass(eq=False)
class Msg:
    platform: str
    thread: str  # Slack channel, or Telegram chat id
    text: str
    payload: dict[str, Any]
    event_id: str
    acked: bool = False
    deliveries: int = 0

    @property
    def answer(self) -> str:
        return f"Thanks for reaching out! You asked: {self.text}"


class Customers:
    """Every message, per thread in the order customers wrote them; a thread's next message
    is delivered only once the previous one was acknowledged (as the platforms do)."""

    def __init__(self, slack: FakeSlack, tg: FakeTelegram, rng: random.Random) -> None:
        self.slack, self.tg, self.rng = slack, tg, rng
        self.threads: dict[tuple[str, str], list[Msg]] = {}
        for i in range(SLACK_THREADS):
            channel = f"D{i:03d}"
            self.threads[("slack", channel)] = [
                self._slack(channel, f"slack question {i}-{n} about zebras")
                for n in range(PER_THREAD)
            ]
        for i in range(TELEGRAM_THREADS):
            user = 5000 + i
            self.threads[("telegram", str(user))] = [
                self._telegram(user, f"telegram question {i}-{n} about giraffes")
                for n in range(PER_THREAD)
            ]

    def _slack(self, channel: str, text: str) -> Msg:
        event = self.slack.message_event(text, channel=channel, user=f"U{channel[1:]}")
        return Msg("slack", channel, text, event, f"Ev{channel}{event['ts']}")

    def _telegram(self, user: int, text: str) -> Msg:
        update = self.tg.private_message(text, user_id=user, first_name=f"Cust{user}")
        return Msg("telegram", str(user), text, update, str(update["update_id"]))

    @property
    def messages(self) -> list[Msg]:
        return [m for msgs in self.threads.values() for m in msgs]

    def due(self, round_no: int) -> dict[tuple[str, str], list[Msg]]:
        """What each thread delivers this round: unacknowledged messages (oldest first, up to
        the round's share), plus redeliveries of acknowledged ones."""
        plan: dict[tuple[str, str], list[Msg]] = {}
        for key, msgs in self.threads.items():
            share = min(PER_THREAD, 1 + round_no // 2)  # first messages early, seconds later
            todo = [m for m in msgs[:share] if not m.acked]
            again = [m for m in msgs if m.acked and self.rng.random() < 0.25]
            if todo or again:
                plan[key] = again + todo  # a redelivery of an acked message first, any order
        return plan


async def deliver(serve: ServeProcess, customers: Customers, plan: dict[Any, list[Msg]]) -> None:
    async with httpx.AsyncClient(base_url=serve.url, timeout=10,
                                 limits=httpx.Limits(max_connections=200)) as http:
        async def thread(msgs: list[Msg]) -> None:
            for msg in msgs:
                if not await send(http, customers, msg):
                    return  # the rest wait for this one, as a platform's redelivery would

        await asyncio.gather(*(thread(msgs) for msgs in plan.values()))


async def send(http: httpx.AsyncClient, customers: Customers, msg: Msg) -> bool:
    retry = msg.deliveries or None
    msg.deliveries += 1
    try:
        if msg.platform == "slack":
            headers, body = customers.slack.signed_event(msg.payload, event_id=msg.event_id,
                                                         retry_num=retry)
            r = await http.post("/slack/events", headers=headers, content=body)
        else:
            r = await http.post("/telegram/webhook", json=msg.payload,
                                headers={"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET})
    except httpx.HTTPError:
        return False  # killed mid-request: not acknowledged, delivered again later
    if r.status_code == 200:
        msg.acked = True
        return True
    return False


def platform_answers(slack: FakeSlack, tg: FakeTelegram, key: tuple[str, str]) -> list[str]:
    platform, thread = key
    if platform == "slack":
        return [m.text for m in slack.messages(channel=thread)]
    return tg.texts(int(thread))


def all_answered(customers: Customers) -> bool:
    """Every answer shows, in order (a thread may also show a second copy: the exactly-once
    test judges those; waiting for none would wait the full bound whenever one exists)."""
    def whole(shown: list[str], msgs: list[Msg]) -> bool:
        wanted = [m.answer for m in msgs]
        return [a for a in dict.fromkeys(shown) if a in set(wanted)] == wanted

    return all(whole(platform_answers(customers.slack, customers.tg, key), msgs)
               for key, msgs in customers.threads.items())


async def stored_states(data_dir: Path, database_url: str | None) -> dict[str, int]:
    settings = Settings(_env_file=None, data_dir=data_dir, database_url=database_url)
    store = await Store.open(settings.resolved_database_url)
    try:
        counts: dict[str, int] = {}
        for conv in await store.list_conversations(limit=1000):
            for m in await store.messages(conv.id):
                if m.role == "user":
                    counts[m.state] = counts.get(m.state, 0) + 1
        return counts
    finally:
        await store.close()


def wait(predicate: Any, within: float) -> bool:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@dataclass
class Outcome:
    customers: Customers
    answers: dict[tuple[str, str], list[str]]  # what each thread shows, after the last round
    states: dict[str, int]
    report: dict[str, Any]
    recovering_seen: bool
    tracebacks: list[str]


def _backlog_within(serve: ServeProcess, seconds: float) -> bool:
    """Does /healthz report answers waiting (recovery lists them in the background)?"""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (serve.health().get("backlog") or 0) > 0:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def burst(tmp_path_factory: pytest.TempPathFactory, postgres_admin: Any) -> Outcome:
    """Run the rounds once; the tests below judge the outcome."""
    tmp_path = tmp_path_factory.mktemp("crash-burst")
    database_url = None
    if postgres_admin is not None:  # the PostgreSQL pass: a database of its own
        database_url = postgres_admin.database_url(postgres_admin.create())
    rng = random.Random(15)
    with FakeSlack() as slack, FakeTelegram() as tg, FakeLLM() as llm:
        llm.delay = 0.2
        llm.delta_delay = 0.04  # ~0.5 s of streaming per answer: kills land mid-stream
        env = {
            "SUPPORTBOT_SLACK_BOT_TOKEN": slack.bot_token,
            "SUPPORTBOT_SLACK_SIGNING_SECRET": slack.signing_secret,
            "SUPPORTBOT_SLACK_API_URL": slack.api_url,
            "SUPPORTBOT_TELEGRAM_BOT_TOKEN": tg.token,
            "SUPPORTBOT_TELEGRAM_API_URL": tg.url,
            "SUPPORTBOT_TELEGRAM_WEBHOOK_URL": "https://bot.example.com/telegram/webhook",
            "SUPPORTBOT_TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "SUPPORTBOT_LLM_BASE_URL": llm.url,
            "SUPPORTBOT_LLM_API_KEY": "sk-crash-test",
            "SUPPORTBOT_LLM_STREAM": "true",
            "SUPPORTBOT_LLM_MAX_RETRIES": "0",
        }
        if database_url is not None:
            env["SUPPORTBOT_DATABASE_URL"] = database_url
        customers = Customers(slack, tg, rng)
        serve = ServeProcess(tmp_path, env)
        kills: list[str] = []
        recovering_seen = False
        settled = False
        try:
            for round_no in range(ROUNDS):
                looking = round_no > 0 and not recovering_seen
                if looking:  # recovered answers take a while, so /healthz can be seen meanwhile
                    llm.delay = 0.5
                serve.start()
                if looking:
                    # serving while the backlog a kill left is still being answered
                    ready = serve.starts[-1].ready_health or {}
                    recovering_seen = (ready.get("backlog") or 0) > 0 or _backlog_within(serve, 3)
                    llm.delay = 0.0
                plan = customers.due(round_no)
                if round_no == 3:  # killed during the burst itself
                    async def burst_then_kill(plan: dict[Any, list[Msg]] = plan) -> None:
                        sending = asyncio.create_task(deliver(serve, customers, plan))
                        await asyncio.sleep(rng.uniform(0.02, 0.15))
                        serve.kill()
                        await sending

                    asyncio.run(burst_then_kill())
                    kills.append("during the burst")
                    continue
                edits = len(slack.calls("chat.update")) + 3
                asyncio.run(deliver(serve, customers, plan))
                if round_no == 0:
                    kills.append("right after the acks")
                elif round_no == 1:
                    # mid-stream: answers' words are being edited into their Slack messages.
                    # (Killed in the instant Slack accepts a placeholder, before the process has
                    # read Slack's answer, a placeholder is left whatever the bot does: README
                    # Guarantees, the window that remains.)
                    wait(lambda e=edits: len(slack.calls("chat.update")) > e, 20)
                    kills.append("mid-stream")
                else:
                    time.sleep(rng.uniform(0.0, 1.5))
                    kills.append("at a random point")
                serve.kill()

            # the last start: platforms redeliver everything never acknowledged, then wait
            serve.start()
            for _ in range(3):
                asyncio.run(deliver(serve, customers, customers.due(ROUNDS)))
                if all(m.acked for m in customers.messages):
                    break
            # a liveness bound, not a speed check: xdist workers share two cores here
            settled = wait(lambda: all_answered(customers), 120)
            # late redeliveries change nothing: each is judged a duplicate before its 200
            asyncio.run(deliver(serve, customers, {
                ("late", str(i)): [m] for i, m in enumerate(customers.messages[::7])
            }))
            serve.stop()
        finally:
            serve.stop()
        answers = {key: platform_answers(slack, tg, key) for key in customers.threads}
        llm_calls = len(llm.chat_requests())
    states = asyncio.run(stored_states(tmp_path / "data", database_url))
    report = {
        "kills": kills,
        "bound_s": [round(s.seconds, 2) for s in serve.starts],
        "ready_s": [round(s.ready_seconds or 0, 2) for s in serve.starts],
        "messages": len(customers.messages),
        "deliveries": sum(m.deliveries for m in customers.messages),
        "llm_calls": llm_calls,
        "states": states,
        "all_answered_within_120_s": settled,
    }
    print(json.dumps(report))  # the figures, with -s
    return Outcome(customers, answers, states, report, recovering_seen, serve.tracebacks())


def test_kill_9_under_load_loses_no_acknowledged_message(burst: Outcome) -> None:
    """Every message was acknowledged at last (platforms redeliver until it is), stored,
    and its full answer reached the customer, in its thread's order."""
    assert all(m.acked for m in burst.customers.messages)
    assert burst.states == {"answered": len(burst.customers.messages)}, burst.report
    lost = {}
    for key, msgs in burst.customers.threads.items():
        whole = [a for a in burst.answers[key] if a in {m.answer for m in msgs}]
        if list(dict.fromkeys(whole)) != [m.answer for m in msgs]:  # each, in order
            lost[f"{key[0]}:{key[1]}"] = burst.answers[key]
    assert lost == {}, lost
    assert burst.recovering_seen, burst.report  # /healthz answered while recovery ran
    # no error line at all (the PostgreSQL pass once left asyncpg's "Future exception was
    # never retrieved ... connection_lost": a stream's status read cancelled mid-query)
    assert burst.tracebacks == []


def test_kill_9_under_load_answers_each_message_once_and_whole(burst: Outcome) -> None:
    """No answer twice, none left half streamed (Slack's "…" placeholder, Telegram's first
    words): exactly the answers, in order, in every thread but at most ``IN_FLIGHT_AT_KILL``,
    those whose reply was on the wire when the process died."""
    wrong = {
        f"{key[0]}:{key[1]}": burst.answers[key]
        for key, msgs in burst.customers.threads.items()
        if burst.answers[key] != [m.answer for m in msgs]
    }
    for platform in ("slack", "telegram"):
        keys = [k for k in wrong if k.startswith(platform)]
        print(platform, len(keys), json.dumps({k: wrong[k] for k in keys[:3]}))
    assert len(wrong) <= IN_FLIGHT_AT_KILL, wrong
