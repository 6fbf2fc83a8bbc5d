"""Per-thread locks and burst admission (supportbot/engine/locks.py)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from supportbot.engine import IncomingMessage
from supportbot.engine.locks import Admission, KeyedLocks
from supportbot.testing import OfflineBot
from supportbot.testing.fake_llm import FakeLLM


class Turns:
    """Counts event-loop iterations: a callback that re-schedules itself once per iteration."""

    def __init__(self) -> None:
        self.count = 0
        self._handle: asyncio.Handle | None = None

    def start(self) -> None:
        self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self.count += 1
        self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


async def test_admission_lets_a_few_begin_per_loop_iteration_in_arrival_order() -> None:
    admission, turns = Admission(per_turn=3), Turns()
    admitted: list[tuple[int, int]] = []

    async def message(i: int) -> None:
        await admission.wait()
        admitted.append((i, turns.count))  # no await between admission and the work

    turns.start()
    await asyncio.gather(*(message(i) for i in range(10)))
    turns.stop()
    assert [i for i, _ in admitted] == list(range(10))
    per_turn: dict[int, int] = {}
    for _, turn in admitted:
        per_turn[turn] = per_turn.get(turn, 0) + 1
    assert max(per_turn.values()) == 3
    assert len(per_turn) >= 4  # ten messages, three per iteration


async def test_admission_skips_a_cancelled_waiter_and_serves_the_rest() -> None:
    admission = Admission(per_turn=1)
    admitted: list[int] = []

    async def message(i: int) -> None:
        await admission.wait()
        admitted.append(i)

    tasks = [asyncio.create_task(message(i)) for i in range(4)]
    await asyncio.sleep(0)  # all four have asked; only the first got in
    tasks[1].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert admitted == [0, 2, 3]
    await asyncio.wait_for(admission.wait(), 1)  # idle again: the next one walks in


async def test_a_burst_sends_llm_requests_while_later_messages_are_still_prepared(
    tmp_path, fake_llm: FakeLLM
) -> None:
    """Without admission, every message of a burst is accepted before any LLM request leaves."""
    async with OfflineBot(tmp_path, llm_base_url=fake_llm.url, llm_api_key="k",
                          llm_stream=False) as bot:
        engine = bot.engine
        assert engine is not None
        clock_offset = time.monotonic() - datetime.now(UTC).timestamp()

        async def customer(i: int) -> None:
            await engine.handle(IncomingMessage(
                platform="test", thread_key=f"burst-{i}", customer_id=f"c{i}",
                customer_name="", text=f"question number {i}", message_id=f"m{i}",
            ))

        await asyncio.gather(*(customer(i) for i in range(200)))
        accepted = []
        for i in range(200):
            conv = await engine.store.find_open("test", f"burst-{i}")
            assert conv is not None
            accepted.append(conv.created_at.timestamp() + clock_offset)
    first_request = min(r.at for r in fake_llm.chat_requests())
    assert len(fake_llm.chat_requests()) == 200
    assert first_request < max(accepted)


async def test_keyed_locks_serve_one_key_in_arrival_order_and_forget_idle_keys() -> None:
    locks, order = KeyedLocks(), []

    async def hold(key: str, i: int) -> None:
        async with locks.hold(key):
            await asyncio.sleep(0)
            order.append((key, i))

    await asyncio.gather(*(hold("a" if i % 2 else "b", i) for i in range(8)))
    assert [i for key, i in order if key == "a"] == [1, 3, 5, 7]
    assert [i for key, i in order if key == "b"] == [0, 2, 4, 6]
    assert len(locks) == 0
