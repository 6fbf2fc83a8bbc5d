"""Wait for something the code under test does in the background: the one poll helper.

A test that talks to a loopback fake cannot be told when a reply has gone out, so it asks until
the answer is yes. ``within`` is an upper bound that only a broken test reaches; a passing test
returns as soon as the condition holds, so there is nothing to tune for speed.

A wait that goes on (a server starting, a subprocess, a slow fake) polls less often after its
first second, up to ``SLOW_INTERVAL``: with four test workers on two cores, a hundred polls a
second per waiting test was CPU taken from the tests doing the work. Conditions that hold soon
are still seen within ``interval``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

FAST_FOR = 1.0  # seconds of polling at the caller's interval
SLOW_INTERVAL = 0.1  # the longest pause between two polls after that


def poll_pause(interval: float, started: float, now: float) -> float:
    """The caller's ``interval`` for the first ``FAST_FOR`` seconds, then doubling up to
    ``SLOW_INTERVAL`` (never shorter than ``interval``)."""
    waited = now - started
    if waited <= FAST_FOR:
        return interval
    return max(interval, min(SLOW_INTERVAL, interval * 2 ** ((waited - FAST_FOR) / FAST_FOR * 4)))


async def eventually(
    predicate: Callable[[], Any], *, within: float = 5.0, interval: float = 0.01,
    what: str | Callable[[], str] = "the condition",
) -> Any:
    """Poll ``predicate`` (a function, or a coroutine function) without blocking the event loop
    until it returns something truthy, and return that; ``TimeoutError`` after ``within``
    seconds, naming ``what`` (a string, or a function that describes the state then)."""
    started = time.monotonic()
    deadline = started + within
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"{_describe(what)} did not happen within {within:g} s")
        await asyncio.sleep(poll_pause(interval, started, now))


def eventually_sync(
    predicate: Callable[[], Any], *, within: float = 5.0, interval: float = 0.02,
    what: str | Callable[[], str] = "the condition",
) -> Any:
    """:func:`eventually` for a test without an event loop (the fakes run on threads)."""
    started = time.monotonic()
    deadline = started + within
    while True:
        value = predicate()
        if value:
            return value
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"{_describe(what)} did not happen within {within:g} s")
        time.sleep(poll_pause(interval, started, now))


def _describe(what: str | Callable[[], str]) -> str:
    return what if isinstance(what, str) else what()
