"""Store first, answer later: Engine.accept / dispatch / start / backlog and the thread queues."""

from __future__ import annotations

import asyncio

from supportbot.engine import Accepted, IncomingMessage, Intake, Outcome
from supportbot.engine.queues import ThreadQueues
from supportbot.testing import OfflineBot
from supportbot.testing.bot import RecordingSink
from supportbot.testing.fake_llm import FakeLLM, Gate


def _msg(text: str, message_id: str, thread: str = "t1", customer: str = "c1") -> IncomingMessage:
    return IncomingMessage(platform="test", thread_key=thread, customer_id=customer,
                           text=text, message_id=message_id)


async def test_accept_only_stores_and_a_redelivery_is_a_duplicate(tmp_path, fake_llm: FakeLLM):
    async with OfflineBot(tmp_path, llm_base_url=fake_llm.url, llm_api_key="k") as bot:
        engine = bot.engine
        first = await engine.accept(_msg("How do refunds work?", "e1"))
        again = await engine.accept(_msg("How do refunds work?", "e1"))
        empty = await engine.accept(_msg(" \x00 ", "e2"))
        stored = await engine.store.message(first.message_id)
    assert isinstance(first, Accepted) and first.intake is Intake.STORED
    assert again.duplicate and not again.stored
    assert empty.intake is Intake.IGNORED
    assert stored is not None and stored.state == "received"
    assert fake_llm.chat_requests() == []  # nothing but the store happened


class GatedSink(RecordingSink):
    """Holds every reply until ``opened`` is set, so a test sees what is in flight."""

    def __init__(self, opened: asyncio.Event) -> None:
        super().__init__()
        self.opened, self.waiting = opened, 0

    async def send(self, text: str, *, feedback_id: int | None = None) -> str | None:
        self.waiting += 1
        await self.opened.wait()
        return await super().send(text, feedback_id=feedback_id)


async def test_dispatch_answers_one_thread_in_order_and_other_threads_alongside(tmp_path):
    opened = asyncio.Event()
    async with OfflineBot(tmp_path) as bot:
        engine = bot.engine
        sink_a, sink_b = GatedSink(opened), GatedSink(opened)
        a1 = engine.dispatch(await engine.accept(_msg("How do refunds work?", "a1", "A")), sink_a)
        a2 = engine.dispatch(await engine.accept(_msg("How do I reset my password?", "a2", "A")),
                             sink_a)
        b1 = engine.dispatch(await engine.accept(_msg("What plans are there?", "b1", "B", "c2")),
                             sink_b)
        # both threads are answering at once; A's second message waits for its first
        while sink_a.waiting + sink_b.waiting < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        assert (sink_a.waiting, sink_b.waiting) == (1, 1)
        assert engine.backlog() == 3
        opened.set()
        replies = await asyncio.gather(a1, a2, b1)
        assert engine.backlog() == 0
    assert all(r.message_id is not None for r in replies)  # each answered
    assert replies[0].message_id < replies[1].message_id  # thread A in order
    assert len(sink_a.sent) == 2 and len(sink_b.sent) == 1


async def test_start_recovers_in_the_background_and_new_messages_wait_behind_it(tmp_path):
    gate = Gate()
    with FakeLLM(responder=gate) as llm:
        async with OfflineBot(tmp_path, llm_base_url=llm.url, llm_api_key="k",
                              llm_stream=False) as bot:
            engine = bot.engine
            # stored before a "crash": never answered
            await engine.accept(_msg("left over", "old", "A"))
            sink = RecordingSink()
            engine.register_sink_factory("test", lambda view: sink)
            engine.start()  # returns at once
            fresh = engine.dispatch(await engine.accept(_msg("new one", "new", "A")), sink)
            while not llm.chat_requests():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            assert engine.backlog() == 2
            assert llm.chat_requests()[0].messages[-1]["content"] == "left over"
            gate.opened.set()
            reply = await fresh
    assert reply.outcome is Outcome.LLM
    assert sink.sent == ["Answer: left over", "Answer: new one"]


async def test_a_redelivered_message_recovery_queued_gets_the_live_sink(tmp_path):
    async with OfflineBot(tmp_path) as bot:
        engine = bot.engine
        accepted = await engine.accept(_msg("How long do refunds take?", "e1"))
        factory_sink, live_sink = RecordingSink(), RecordingSink()
        engine.register_sink_factory("test", lambda view: factory_sink)
        engine.queues.pause()
        await engine.recovery.queue()
        reply_future = engine.dispatch(accepted, live_sink)
        engine.queues.resume()
        reply = await reply_future
    assert reply.outcome is Outcome.FAQ
    assert factory_sink.sent == [] and len(live_sink.sent) == 1


async def test_thread_queues_bound_the_work_in_flight() -> None:
    queues, running, peak = ThreadQueues(limit=2), 0, 0
    release = asyncio.Event()

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    jobs = [queues.submit(f"thread-{i}", work) for i in range(5)]
    await asyncio.sleep(0.05)
    assert peak == 2 and queues.backlog == 5
    release.set()
    await asyncio.gather(*(j.future for j in jobs))
    assert queues.backlog == 0 and peak == 2
    await queues.aclose()
