"""Per-thread locks (supportbot/engine/locks.py)."""

from __future__ import annotations

import asyncio

from supportbot.engine.locks import KeyedLocks


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
