"""No message lost, none answered twice, across crashes.

A real ``supportbot serve`` subprocess (Slack Events API over HTTP, Telegram webhook) is killed
with SIGKILL while the model is still thinking, then restarted on the same database: every message
accepted before the kill is answered exactly once (or, when it is older than
``SUPPORTBOT_RECOVER_MAX_AGE_SECONDS``, handed to staff instead of being answered late), and
redeliveries after the restart change nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from supportbot.config import Settings
from supportbot.engine import Status
from supportbot.storage import Store
from supportbot.testing.fake_llm import FakeLLM
from supportbot.testing.fake_slack import FakeSlack
from supportbot.testing.fake_telegram import FakeTelegram
from supportbot.testing.serve import ServeProcess
from supportbot.testing.waiting import eventually_sync

STAFF_CHANNEL = "CSTAFF"
WEBHOOK_SECRET = "crash-test-webhook-secret"


def wait_for(predicate: Any) -> Any:
    return eventually_sync(predicate, within=15.0, interval=0.05)


async def stored(tmp: Path) -> tuple[list[Any], list[Any]]:
    """Every conversation and message in the database the subprocess used."""
    settings = Settings(_env_file=None, data_dir=tmp / "data")
    store = await Store.open(settings.resolved_database_url)
    try:
        convs = await store.list_conversations(limit=1000)
        messages = [m for c in convs for m in await store.messages(c.id)]
        return list(convs), messages
    finally:
        await store.close()


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    with FakeLLM(delay=60) as fake:  # "thinking" until we pull the plug
        yield fake


def slack_env(slack: FakeSlack, llm: FakeLLM) -> dict[str, str]:
    return {
        "SUPPORTBOT_SLACK_BOT_TOKEN": slack.bot_token,
        "SUPPORTBOT_SLACK_SIGNING_SECRET": slack.signing_secret,
        "SUPPORTBOT_SLACK_API_URL": slack.api_url,
        "SUPPORTBOT_SLACK_STAFF_CHANNEL": STAFF_CHANNEL,
        "SUPPORTBOT_SLACK_STAFF_USER_IDS": '["USTAFF"]',
        "SUPPORTBOT_LLM_BASE_URL": llm.url,
        "SUPPORTBOT_LLM_API_KEY": "sk-crash-test",
        "SUPPORTBOT_LLM_TIMEOUT": "120",
        "SUPPORTBOT_LLM_DEADLINE": "120",
        "SUPPORTBOT_LLM_MAX_RETRIES": "0",
    }


def telegram_env(tg: FakeTelegram, llm: FakeLLM, **extra: str) -> dict[str, str]:
    return {
        "SUPPORTBOT_TELEGRAM_BOT_TOKEN": tg.token,
        "SUPPORTBOT_TELEGRAM_API_URL": tg.url,
        "SUPPORTBOT_TELEGRAM_WEBHOOK_URL": "https://bot.example.com/telegram/webhook",
        "SUPPORTBOT_TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "SUPPORTBOT_LLM_BASE_URL": llm.url,
        "SUPPORTBOT_LLM_API_KEY": "sk-crash-test",
        "SUPPORTBOT_LLM_MAX_RETRIES": "0",
        **extra,
    }


def post_slack(serve: ServeProcess, slack: FakeSlack, event: dict[str, Any], event_id: str,
               retry: int | None = None) -> int:
    headers, body = slack.signed_event(event, event_id=event_id, retry_num=retry)
    return httpx.post(serve.url + "/slack/events", headers=headers, content=body,
                      timeout=10).status_code


def bot_replies(slack: FakeSlack, channel: str) -> list[str]:
    return [m.text for m in slack.messages(channel=channel) if m.user != "UCUSTOMER"]


def test_kill_9_mid_llm_call_then_restart_answers_each_message_exactly_once(
    tmp_path: Path, slack: FakeSlack, llm: FakeLLM
) -> None:
    serve = ServeProcess(tmp_path, slack_env(slack, llm)).start(within=90)
    threads = {  # three conversations: two DMs and a channel mention
        "D1": slack.message_event("where is my invoice?", channel="D1"),
        "D2": slack.message_event("how do I reset my password?", channel="D2"),
        "C1": slack.mention_event("can I change my plan?", channel="C1"),
    }
    try:
        for i, event in enumerate(threads.values()):
            assert post_slack(serve, slack, event, f"Ev{i}") == 200
        wait_for(lambda: len(llm.chat_requests()) == 3)  # all three are mid-call
        serve.kill()
        assert slack.messages(channel="D1") == [] and slack.messages(channel="C1") == []

        llm.delay = 0.0
        serve.start(within=90)  # recovery runs before the server accepts requests
        for channel in threads:
            wait_for(lambda c=channel: bot_replies(slack, c))
        # Slack retries the events it never saw acknowledged; the restart must not re-answer
        for i, event in enumerate(threads.values()):
            assert post_slack(serve, slack, event, f"Ev{i}", retry=1) == 200
        # a fresh message after the restart is answered as usual (and proves the retries ran)
        post_slack(serve, slack, slack.message_event("and one more thing", channel="D1"), "EvN")
        wait_for(lambda: len(bot_replies(slack, "D1")) == 2)
        serve.stop()
        serve.start(within=90)  # a clean restart recovers nothing more
        time.sleep(0.5)
    finally:
        serve.stop()

    assert bot_replies(slack, "D1") == [
        "Thanks for reaching out! You asked: where is my invoice?",
        "Thanks for reaching out! You asked: and one more thing",
    ]
    assert bot_replies(slack, "D2") == [
        "Thanks for reaching out! You asked: how do I reset my password?"
    ]
    [c1] = slack.messages(channel="C1")
    assert c1.thread_ts == threads["C1"]["ts"] and "can I change my plan?" in c1.text
    assert len(llm.chat_requests()) == 3 + 3 + 1  # killed calls, recovered calls, the new one
    convs, messages = asyncio.run(stored(tmp_path))
    assert len(convs) == 3 and all(c.status == Status.BOT for c in convs)
    users = [m for m in messages if m.role == "user"]
    assert sorted(m.state for m in users) == ["answered"] * 4
    assert sum(1 for m in messages if m.role == "assistant" and m.state == "sent") == 4
    assert '"recovered unanswered messages"' in serve.logs()


@pytest.mark.parametrize("grace", ["10", "0"])
def test_sigterm_lets_a_recovered_answer_in_progress_finish(
    tmp_path: Path, slack: FakeSlack, llm: FakeLLM, grace: str
) -> None:
    """A deploy's SIGTERM while the model is answering a message recovered after a crash (the
    engine's own queue, no platform request waiting on it): with the grace period the answer
    still goes out and is stored as answered; with none, it is left for the next start."""
    env = {**slack_env(slack, llm), "SUPPORTBOT_SHUTDOWN_GRACE_SECONDS": grace}
    serve = ServeProcess(tmp_path, env).start(within=90)
    try:
        event = slack.message_event("where is my invoice?", channel="D1")
        assert post_slack(serve, slack, event, "Ev1") == 200
        wait_for(lambda: llm.chat_requests())
        serve.kill()
        llm.delay = 4.0
        serve.start(within=90)  # recovery asks the model again
        wait_for(lambda: len(llm.chat_requests()) == 2)
        serve.stop()  # SIGTERM, mid-call
    finally:
        serve.stop()
    _, messages = asyncio.run(stored(tmp_path))
    [question] = [m for m in messages if m.role == "user"]
    if grace == "0":
        assert bot_replies(slack, "D1") == [] and question.state == "received"
        return
    assert bot_replies(slack, "D1") == ["Thanks for reaching out! You asked: where is my invoice?"]
    assert question.state == "answered"


def test_message_older_than_the_limit_goes_to_staff_not_answered_late(
    tmp_path: Path, slack: FakeSlack, llm: FakeLLM
) -> None:
    serve = ServeProcess(tmp_path, slack_env(slack, llm)).start(within=90)
    try:
        event = slack.message_event("my server is down", channel="D9")
        assert post_slack(serve, slack, event, "EvOld") == 200
        wait_for(lambda: llm.chat_requests())
        serve.kill()
        llm.delay = 0.0
        time.sleep(1.2)
        serve.start(within=90, SUPPORTBOT_RECOVER_MAX_AGE_SECONDS="1")
        [note] = wait_for(lambda: slack.messages(channel=STAFF_CHANNEL))
        assert post_slack(serve, slack, event, "EvOld", retry=2) == 200
        time.sleep(0.5)
    finally:
        serve.stop()
    assert "my server is down" in note.text  # staff see what was left unanswered
    assert slack.messages(channel="D9") == []  # not answered late
    assert len(llm.chat_requests()) == 1
    [conv], messages = asyncio.run(stored(tmp_path))
    assert conv.status == Status.WAITING and conv.handoff_reason == "unanswered_after_restart"
    assert conv.bot_failed
    assert [m.state for m in messages if m.role == "user"] == ["expired"]


def test_telegram_webhook_kill_9_then_restart_answers_once(tmp_path: Path, llm: FakeLLM) -> None:
    with FakeTelegram() as tg:
        env = telegram_env(tg, llm, SUPPORTBOT_LLM_TIMEOUT="120", SUPPORTBOT_LLM_DEADLINE="120")
        serve = ServeProcess(tmp_path, env).start(within=90)
        headers = {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET}
        updates = [
            tg.private_message("question one", user_id=501),
            tg.private_message("question two", user_id=502),
        ]
        try:
            for update in updates:
                r = httpx.post(serve.url + "/telegram/webhook", json=update, headers=headers)
                assert r.status_code == 200
            wait_for(lambda: len(llm.chat_requests()) == 2)
            serve.kill()
            assert tg.texts(501) == [] and tg.texts(502) == []
            llm.delay = 0.0
            serve.start(within=90)
            wait_for(lambda: tg.texts(501) and tg.texts(502))
            for update in updates:  # Telegram redelivers updates it never saw acknowledged
                r = httpx.post(serve.url + "/telegram/webhook", json=update, headers=headers)
                assert r.status_code == 200
            later = tg.private_message("question three", user_id=501)
            httpx.post(serve.url + "/telegram/webhook", json=later, headers=headers)
            wait_for(lambda: len(tg.texts(501)) == 2)
            time.sleep(0.3)
        finally:
            serve.stop()
        assert tg.texts(501) == [
            "Thanks for reaching out! You asked: question one",
            "Thanks for reaching out! You asked: question three",
        ]
        assert tg.texts(502) == ["Thanks for reaching out! You asked: question two"]
        assert len(llm.chat_requests()) == 2 + 2 + 1


def test_a_reply_the_platform_took_but_the_database_never_heard_of_is_finished_in_place(
    tmp_path: Path, llm: FakeLLM
) -> None:
    """The at-least-once window: Telegram accepted the reply's first words, the process died
    before the database recorded where they went. The reply journal (written the instant the
    platform answered) lets recovery edit that message to the whole answer: one message, not a
    frozen "Thanks" followed by a second copy."""
    with FakeTelegram() as tg:
        # streamed by edits (not drafts): the first words stay in the chat
        env = telegram_env(tg, llm, SUPPORTBOT_LLM_STREAM="true",
                           SUPPORTBOT_TELEGRAM_DRAFTS="false")
        llm.delay, llm.delta_delay = 0.0, 60.0  # the first words, then "still writing"
        serve = ServeProcess(tmp_path, env).start(within=90)
        update = tg.private_message("question one", user_id=601)
        try:
            r = httpx.post(serve.url + "/telegram/webhook", json=update,
                           headers={"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET})
            assert r.status_code == 200
            wait_for(lambda: tg.texts(601) == ["Thanks"])
            wait_for(lambda: asyncio.run(streaming_rows(tmp_path)) == 1)
            serve.kill()
            # as if killed a moment earlier: the platform has the message, the database not
            asyncio.run(forget_streaming_rows(tmp_path))
            llm.delta_delay = 0.0
            serve.start(within=90)
            # answered means delivered: a second message would have gone out before this
            wait_for(lambda: asyncio.run(user_states(tmp_path)) == ["answered"])
        finally:
            serve.stop()
        assert tg.texts(601) == ["Thanks for reaching out! You asked: question one"]


async def streaming_rows(tmp: Path) -> int:
    _convs, messages = await stored(tmp)
    return sum(1 for m in messages if m.state == "streaming")


async def user_states(tmp: Path) -> list[str]:
    _convs, messages = await stored(tmp)
    return [m.state for m in messages if m.role == "user"]


async def forget_streaming_rows(tmp: Path) -> None:
    from sqlalchemy import delete

    from supportbot.storage.models import Message

    settings = Settings(_env_file=None, data_dir=tmp / "data")
    store = await Store.open(settings.resolved_database_url)
    try:
        async with store.sessions.begin() as session:
            await session.execute(delete(Message).where(Message.state == "streaming"))
    finally:
        await store.close()


async def test_a_status_read_in_flight_is_let_finish_when_a_stream_ends() -> None:
    """A stream re-reads its conversation's status while it runs (a takeover in another
    process). When the stream ends during such a read, the read is let finish: cancelled
    mid-query, SQLAlchemy closes the asyncpg connection under it and asyncpg leaves a "Future
    exception was never retrieved ... connection_lost" behind (seen in the PostgreSQL pass of
    the crash burst)."""
    from supportbot.engine.streams import Streams

    streams = Streams(poll=0.001)
    reading, release = asyncio.Event(), asyncio.Event()
    reads: list[str] = []

    async def bot_owns() -> bool:
        reading.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            reads.append("cancelled")
            raise
        reads.append("finished")
        return True

    async def stream() -> None:
        async with streams.watch(1, bot_owns):
            await reading.wait()  # the stream ends while a status read is in flight

    ending = asyncio.create_task(stream())
    await reading.wait()
    for _ in range(5):  # the stream reaches its end
        await asyncio.sleep(0)
    release.set()
    await ending
    assert reads == ["finished"]
