"""Calling the Bot API through python-telegram-bot: flood control (RetryAfter) waits, retries of
transient failures within a deadline, and counting failures for ``/metrics``.

Everything here takes a coroutine or a callable around ``telegram.Bot``, so the desk and the
customer sink share one way to call Telegram.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError

from supportbot import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")


def retry_seconds(exc: RetryAfter) -> float:
    """``RetryAfter.retry_after`` is int or timedelta depending on PTB_TIMEDELTA; accept both."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def is_parse_error(exc: BadRequest) -> bool:
    return "can't parse entities" in exc.message.lower()


def is_not_modified(exc: BadRequest) -> bool:
    return "message is not modified" in exc.message.lower()


class ThreadNotFound(Exception):
    """The forum topic we tried to post into no longer exists (staff deleted it)."""


class TopicClosed(Exception):
    """The forum topic exists but is closed."""


#: a send failing with a server error, a timeout or a broken connection is tried again after
#: these pauses (seconds), within ``SEND_DEADLINE``; then the engine's sweep takes over
TRANSIENT_BACKOFF = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)
SEND_DEADLINE = 20.0


def is_transient(exc: TelegramError) -> bool:
    """5xx, timeouts, connection errors: worth trying again. (PTB's BadRequest is a
    NetworkError subclass, but a 400 will not get better.)"""
    return isinstance(exc, NetworkError) and not isinstance(exc, BadRequest)


async def with_flood_retry(
    call: Callable[[], Awaitable[T]],
    *,
    method: str = "unknown",
    attempts: int = 5,
    max_wait: float = 120.0,
) -> T:
    """Run ``call`` (Bot API ``method``), sleeping through Telegram's flood control so the message
    is not lost, and trying again after a transient failure (a 5xx, a timeout, a dropped
    connection) with backoff, within ``SEND_DEADLINE``; count the waits and the calls that
    finally fail for ``/metrics``.

    A 429 means Telegram did not accept the request, so repeating it cannot duplicate anything;
    after a timeout it may have, a small at-least-once window we accept over a lost reply.
    With ``attempts=1`` the caller handles flood control and failures itself (and counts them).
    """
    deadline = time.monotonic() + SEND_DEADLINE
    transient = iter(TRANSIENT_BACKOFF if attempts > 1 else ())
    attempt = 0
    while True:
        try:
            return await call()
        except RetryAfter as exc:
            attempt += 1
            wait = min(retry_seconds(exc), max_wait)
            if attempt >= attempts:
                if attempts > 1:
                    metrics.PLATFORM_ERRORS.labels("telegram", method).inc()
                raise
            log.warning("telegram flood control: waiting %.1fs", wait)
            count_flood_wait(wait)
            await asyncio.sleep(wait + 0.05)
        except TelegramError as exc:
            pause = next(transient, None) if is_transient(exc) else None
            if pause is not None and time.monotonic() + pause < deadline:
                log.warning("telegram %s failed (%s); trying again in %.1fs",
                            method, type(exc).__name__, pause)
                await asyncio.sleep(pause)
                continue
            if not (isinstance(exc, BadRequest) and is_not_modified(exc)):
                metrics.PLATFORM_ERRORS.labels("telegram", method).inc()
            raise


def count_flood_wait(seconds: float) -> None:
    """Telegram told us to slow down and we wait ``seconds`` (metrics only)."""
    metrics.RATE_LIMIT_WAITS.labels("telegram").inc()
    metrics.RATE_LIMIT_SECONDS.labels("telegram").inc(seconds)


async def counted(method: str, call: Awaitable[T]) -> T:
    """Await one Bot API call without retries, counting it in ``/metrics`` if it fails."""
    try:
        return await call
    except TelegramError as exc:
        if isinstance(exc, RetryAfter):
            count_flood_wait(retry_seconds(exc))
        if not (isinstance(exc, BadRequest) and is_not_modified(exc)):
            metrics.PLATFORM_ERRORS.labels("telegram", method).inc()
        raise
