"""A failed send is tried again (5xx, timeouts, dropped connections), and a reply that still
could not go out is answered again by the running process's sweep, never lost, never twice."""

from __future__ import annotations

from datetime import timedelta

from test_slack_adapter import Env, texts
from test_slack_adapter import env as env
from test_telegram_adapter import ALICE
from test_telegram_adapter import bot as bot
from test_telegram_adapter import fake as fake
from test_telegram_adapter import llm as llm

from supportbot.engine import IncomingMessage, Outcome
from supportbot.testing import OfflineBot
from supportbot.testing.bot import RecordingSink
from supportbot.testing.fake_telegram import FakeTelegram


async def test_telegram_send_answered_502_is_tried_again(fake: FakeTelegram, bot) -> None:
    fake.fail("sendMessage", code=502, description="Bad Gateway", times=2)
    fake.push(fake.private_message("are you there?"))
    await fake.wait_for(lambda: fake.texts(ALICE) == ["Answer: are you there?"], within=10)
    assert len(fake.calls("sendMessage")) == 3


async def test_slack_post_answered_500_is_tried_again(env: Env) -> None:
    env.llm.responder = lambda messages: "short answer"
    env.slack.fail("chat.postMessage", "internal_error", status=500, times=2)
    await env.post_event(env.slack.message_event("hello?", channel="D3"))
    await env.wait(lambda: texts(env.slack, "D3") == ["short answer"], within=10)
    await env.settle()
    assert texts(env.slack, "D3") == ["short answer"]


class BrokenSink(RecordingSink):
    """The platform refuses every send until ``fixed``."""

    def __init__(self) -> None:
        super().__init__()
        self.fixed = False

    async def send(self, text: str, *, feedback_id: int | None = None) -> str | None:
        if not self.fixed:
            raise ConnectionError("platform down")
        return await super().send(text, feedback_id=feedback_id)


async def test_a_reply_that_could_not_be_sent_is_answered_by_the_sweep(tmp_path) -> None:
    async with OfflineBot(tmp_path) as bot:
        engine = bot.engine
        sink = BrokenSink()
        engine.register_sink_factory("test", lambda view: sink)
        failed = None
        try:
            await bot.ask("How long do refunds take?", sink=sink)
        except ConnectionError as exc:
            failed = exc
        assert failed is not None
        conv = await engine.find_conversation("test", "thread-1")
        assert conv is not None
        listed = await engine.store.list_conversations()
        assert listed[0].bot_failed  # staff see it in `conversations list`
        sink.fixed = True
        items = await engine.recovery.queue(older_than=timedelta(0))  # what the sweep does
        [reply] = [await item.job.future for item in items]
        again = await engine.recovery.queue(older_than=timedelta(0))
        stored = await engine.store.messages(conv.id)
    assert reply.outcome is Outcome.FAQ and len(sink.sent) == 1
    assert again == []  # answered once
    assert [m.state for m in stored if m.role == "user"] == ["answered"]
    assert sorted(m.state for m in stored if m.role == "assistant") == ["failed", "sent"]


async def test_a_reply_a_crash_cut_mid_stream_is_finished_in_place(tmp_path, fake_llm) -> None:
    async with OfflineBot(tmp_path, llm_base_url=fake_llm.url, llm_api_key="k") as bot:
        engine = bot.engine
        live = RecordingSink()
        await bot.ask("first question", sink=live)  # streamed: its placeholder row is closed
        # the process dies after the stream began: its message id was stored first
        accepted = await engine.accept(IncomingMessage(
            platform="test", thread_key="thread-1", customer_id="customer-1",
            text="second question", message_id="m-crash"))
        await engine.store.stage_stream(accepted.conversation_id, accepted.message_id, "p-7")
        after_restart = RecordingSink()
        engine.register_sink_factory("test", lambda view: after_restart)
        counts = await engine.recover()
        stored = await engine.store.messages(accepted.conversation_id)
    assert counts == {"answered": 1, "expired": 0, "skipped": 0}
    assert after_restart.sent == []  # no second copy
    answer = "Thanks for reaching out! You asked: second question"
    assert after_restart.replaced == [("p-7", answer)]
    assert sorted(m.state for m in stored if m.role == "assistant") == [
        "sent", "sent", "streamed", "streamed"]
