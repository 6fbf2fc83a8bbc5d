"""The one poll helper: returns what the condition gave, names what did not happen, and polls
less often once a wait goes on (CPU for the tests that work, with four workers on two cores)."""

from __future__ import annotations

import itertools

import pytest

from supportbot.testing.waiting import (
    FAST_FOR,
    SLOW_INTERVAL,
    eventually,
    eventually_sync,
    poll_pause,
)


def test_polls_at_the_callers_interval_first_then_less_often_up_to_a_bound() -> None:
    assert poll_pause(0.01, 0.0, FAST_FOR) == 0.01
    later = [poll_pause(0.01, 0.0, FAST_FOR + t / 10) for t in range(1, 40)]
    assert later == sorted(later) and later[0] > 0.01 and later[-1] == SLOW_INTERVAL
    assert poll_pause(0.5, 0.0, 30.0) == 0.5  # a caller's longer interval is kept


async def test_eventually_returns_the_truthy_value_after_some_polls() -> None:
    polls = itertools.count(1)
    assert await eventually(lambda: next(polls) >= 3 and "ready", interval=0) == "ready"

    async def coroutine_predicate() -> list[int]:
        return [1]

    assert await eventually(coroutine_predicate) == [1]


async def test_eventually_names_what_did_not_happen() -> None:
    with pytest.raises(TimeoutError, match=r"the reply did not happen within 0\.05 s"):
        await eventually(lambda: False, within=0.05, what=lambda: "the reply")


def test_eventually_sync_returns_or_names_what_did_not_happen() -> None:
    polls = itertools.count(1)
    assert eventually_sync(lambda: next(polls) >= 3 and 42, interval=0) == 42
    with pytest.raises(TimeoutError, match="the server did not happen"):
        eventually_sync(lambda: None, within=0.05, what="the server")
