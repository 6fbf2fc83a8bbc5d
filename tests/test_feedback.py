"""Feedback on bot answers: the engine API (one vote per reply, customers only touch their own
threads) and ``/feedback`` in the terminal chat (in process and as a real subprocess)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from supportbot import metrics
from supportbot.adapters.terminal import PLATFORM, run_chat
from supportbot.engine import Outcome
from supportbot.storage.reports import feedback_for
from supportbot.testing import OfflineBot, RecordingSink

REPO = Path(__file__).resolve().parents[1]
Q = "How long do refunds take?"


async def test_vote_is_stored_and_a_later_vote_replaces_it(tmp_path):
    async with OfflineBot(tmp_path, platform="web") as bot:
        reply = await bot.ask(Q, customer="alice")
        assert reply.outcome is Outcome.FAQ and reply.message_id
        before = metrics.value("supportbot_feedback_total", {"platform": "web", "helpful": "no"})
        assert await bot.engine.record_feedback(reply.message_id, True, "web:alice")
        assert await bot.engine.record_feedback(reply.message_id, False, "web:alice",
                                                comment="  too vague  ")
        vote = await feedback_for(bot.engine.store, reply.message_id)
        async with bot.engine.store.engine.connect() as conn:
            rows = (await conn.exec_driver_sql("select count(*) from feedback")).scalar()
    assert rows == 1
    assert vote.helpful is False and vote.comment == "too vague"
    assert vote.conversation_id == reply.conversation_id and vote.actor == "web:alice"
    after = metrics.value("supportbot_feedback_total", {"platform": "web", "helpful": "no"})
    assert after - before == 1


async def test_sinks_learn_which_replies_may_be_rated(tmp_path):
    """An answer is sent with its stored id (so buttons can go out with it); the bot's own
    words (don't know, handoff notices) are not rated."""
    async with OfflineBot(tmp_path, platform="web") as bot:
        sink = RecordingSink()
        answered = await bot.ask(Q, sink=sink)
        unsure = await bot.ask("Does the moon run on batteries?", sink=sink)
    assert answered.outcome is Outcome.FAQ and unsure.outcome is Outcome.DONT_KNOW
    assert sink.feedback_ids == [answered.message_id, None]


async def test_customers_cannot_rate_other_peoples_answers(tmp_path):
    async with OfflineBot(tmp_path, platform="web") as bot:
        mine = await bot.ask(Q, customer="alice", thread="a")
        customer_turn = mine.message_id - 1  # the question itself, not a bot answer
        assert not await bot.engine.record_feedback(mine.message_id, False, "web:mallory")
        assert not await bot.engine.record_feedback(mine.message_id, False, "slack:alice")
        assert not await bot.engine.record_feedback(mine.message_id, False, "alice")
        assert not await bot.engine.record_feedback(customer_turn, True, "web:alice")
        assert not await bot.engine.record_feedback(999_999, True, "web:alice")
        assert await feedback_for(bot.engine.store, mine.message_id) is None


class Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


async def test_terminal_feedback_applies_to_the_last_answer(tmp_path):
    stdin = Pipe(
        "/feedback good\n"  # nothing to rate yet
        f"{Q}\n"
        "What is the airspeed velocity of an unladen swallow?\n"
        "/feedback bad it did not answer\n"
        "/feedback maybe\n"
    )
    out = Pipe()
    async with OfflineBot(tmp_path) as bot:
        await run_chat(bot.engine, thread="t1", customer="sam", as_json=True, stdin=stdin,
                       stdout=out)
        rows = [json.loads(line) for line in out.getvalue().splitlines()]
        assert rows[0] == {"feedback": False, "text": "There is no answer to rate yet."}
        dont_know = rows[2]
        assert dont_know["outcome"] == "dont_know"
        assert rows[3]["feedback"] is True and rows[3]["message_id"] == dont_know["message_id"]
        assert rows[4]["feedback"] is False and rows[4]["text"].startswith("Usage:")
        vote = await feedback_for(bot.engine.store, dont_know["message_id"])
        first = await feedback_for(bot.engine.store, rows[1]["message_id"])
    assert vote.helpful is False and vote.comment == "it did not answer"
    assert vote.actor == f"{PLATFORM}:sam"
    assert first is None


def test_terminal_feedback_in_a_real_chat_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTBOT_")} | {
        "SUPPORTBOT_DATA_DIR": str(tmp_path), "SUPPORTBOT_LOG_LEVEL": "WARNING",
    }
    result = subprocess.run(
        [sys.executable, "-m", "supportbot", "chat"],
        input=f"{Q}\n/feedback good thanks!\n", capture_output=True, text=True, cwd=REPO,
        env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "Ada: Thanks for the feedback!"
    import sqlite3

    with sqlite3.connect(tmp_path / "supportbot.db") as db:
        rows = db.execute("select helpful, comment from feedback").fetchall()
    assert rows == [(1, "thanks!")]
