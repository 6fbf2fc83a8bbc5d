"""Wait for something the code under test does in the background: the one poll helper.

A test that talks to a loopback fake cannot be told when a reply has gone out, so it asks until
the answer is yes. ``within`` is an upper bound that only a broken test reaches; a passing test
returns as soon as the condition holds, so there is nothing to tune for speed.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def eventually(
    predicate: Callable[[], Any], *, within: float = 5.0, interval: float = 0.01,
    what: str | Callable[[], str] = "the condition",
) -> Any:
    """Poll ``predicate`` (a function, or a coroutine function) without blocking the event loop
    until it returns something truthy, and return that; ``TimeoutError`` after ``within``
    seconds, naming ``what`` (a string, or a function that describes the state then)."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{_describe(what)} did not happen within {within:g} s")
        await asyncio.sleep(interval)


def eventually_sync(
    predicate: Callable[[], Any], *, within: float = 5.0, interval: float = 0.02,
    what: str | Callable[[], str] = "the condition",
) -> Any:
    """:func:`eventually` for a test without an event loop (the fakes run on threads)."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{_describe(what)} did not happen within {within:g} s")
        time.sleep(interval)


def _describe(what: str | Callable[[], str]) -> str:
    return what if isinstance(what, str) else what()
