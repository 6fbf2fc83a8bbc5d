"""Prometheus metrics for ``/metrics``: one registry per process, bounded labels only.

Labels never carry conversation, customer or message ids (that would grow without bound);
per-conversation detail lives in the logs and the database. Everything here is cheap to call on
the hot path and safe to call when nobody scrapes.
"""

from __future__ import annotations

import contextlib
import contextvars
import hmac
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response

# ``*_created`` timestamps double the output and no dashboard needs them
disable_created_metrics()

REGISTRY = CollectorRegistry(auto_describe=True)
R = TypeVar("R", bound=Any)

MESSAGES_IN = Counter(
    "supportbot_messages_received", "Customer messages received", ["platform"], registry=REGISTRY
)
MESSAGES_OUT = Counter(
    "supportbot_messages_sent", "Bot messages delivered to customers", ["platform"],
    registry=REGISTRY,
)
REPLIES = Counter(
    "supportbot_replies", "Customer messages by how the engine dealt with them",
    ["platform", "outcome"], registry=REGISTRY,
)
HANDOFFS = Counter(
    "supportbot_handoffs", "Threads handed to staff, by trigger", ["trigger"], registry=REGISTRY
)
LIMITED = Counter(
    "supportbot_limited", "Customer messages refused by an abuse limit",
    ["platform", "limit"], registry=REGISTRY,
)
FEEDBACK = Counter(
    "supportbot_feedback", "Customer votes on bot answers", ["platform", "helpful"],
    registry=REGISTRY,
)
LLM_LATENCY = Histogram(
    "supportbot_llm_latency_seconds", "Time for one LLM answer, retries included", ["result"],
    buckets=(0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120), registry=REGISTRY,
)
LLM_TOKENS = Histogram(
    "supportbot_llm_tokens", "Tokens per LLM call", ["kind"],
    buckets=(50, 100, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000), registry=REGISTRY,
)
LLM_RETRIES = Counter(
    "supportbot_llm_retries", "LLM attempts retried, by cause", ["reason"], registry=REGISTRY
)
LLM_ERRORS = Counter(
    "supportbot_llm_errors", "LLM calls that finally failed, by error", ["error"],
    registry=REGISTRY,
)
PLATFORM_ERRORS = Counter(
    "supportbot_platform_api_errors", "Failed platform API calls", ["platform", "method"],
    registry=REGISTRY,
)
RATE_LIMIT_WAITS = Counter(
    "supportbot_platform_rate_limit_waits", "Times a platform told us to slow down",
    ["platform"], registry=REGISTRY,
)
RATE_LIMIT_SECONDS = Counter(
    "supportbot_platform_rate_limit_wait_seconds", "Seconds spent waiting out platform limits",
    ["platform"], registry=REGISTRY,
)
LOCKS_HELD = Gauge(
    "supportbot_conversation_locks_held", "Conversations being processed right now",
    registry=REGISTRY,
)
LOCK_WAITERS = Gauge(
    "supportbot_conversation_lock_waiters",
    "Messages queued behind another message of the same conversation", registry=REGISTRY,
)


@dataclass(slots=True)
class TurnStats:
    """What the LLM cost for the message being handled, for its one log line."""

    llm_ms: float = 0.0
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


current_turn: contextvars.ContextVar[TurnStats | None] = contextvars.ContextVar(
    "supportbot_turn", default=None
)


@contextlib.contextmanager
def turn() -> Iterator[TurnStats]:
    """Collect LLM figures for one customer message (the engine wraps ``handle`` in it)."""
    stats = TurnStats()
    token = current_turn.set(stats)
    try:
        yield stats
    finally:
        current_turn.reset(token)


def observe_llm(seconds: float, *, prompt_tokens: int | None = None,
                completion_tokens: int | None = None, error: str | None = None) -> None:
    """One finished ``LLMClient.complete`` call (success or final failure)."""
    LLM_LATENCY.labels("error" if error else "ok").observe(seconds)
    if error:
        LLM_ERRORS.labels(error).inc()
    if prompt_tokens is not None:
        LLM_TOKENS.labels("prompt").observe(prompt_tokens)
    if completion_tokens is not None:
        LLM_TOKENS.labels("completion").observe(completion_tokens)
    stats = current_turn.get()
    if stats is not None:
        stats.llm_ms += seconds * 1000
        stats.llm_calls += 1
        stats.prompt_tokens += prompt_tokens or 0
        stats.completion_tokens += completion_tokens or 0


def retry_reason(status: int | None, message: str) -> str:
    """A bounded label for why an LLM attempt is retried."""
    if status == 429:
        return "rate_limited"
    if status is not None and status >= 500:
        return "server_error"
    if status is not None:
        return f"http_{status}"
    lowered = message.lower()
    if "did not answer" in lowered or "deadline" in lowered:
        return "timeout"
    if "connect" in lowered:
        return "connection"
    return "bad_response"


def handoff_trigger(reason: str) -> str:
    """``phrase:en:"..."`` -> ``phrase``; ``repeated_failure:dont_know`` stays as it is."""
    head, _, rest = reason.partition(":")
    if head == "repeated_failure" and rest:
        return f"{head}:{rest[:20]}"
    return head[:40] or "unknown"


class LockSlot:
    """One message's place in its conversation's queue (see :func:`lock_queue`)."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = False

    def acquired(self) -> None:
        if not self.held:
            self.held = True
            LOCK_WAITERS.dec()
            LOCKS_HELD.inc()


@contextlib.contextmanager
def lock_queue() -> Iterator[LockSlot]:
    """Count a task as waiting until it calls ``slot.acquired()``, then as holding."""
    slot = LockSlot()
    LOCK_WAITERS.inc()
    try:
        yield slot
    finally:
        if slot.held:
            LOCKS_HELD.dec()
        else:
            LOCK_WAITERS.dec()


def exposition() -> tuple[bytes, str]:
    """The body and content type for a ``/metrics`` response."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def endpoint(token: str | None) -> Callable[[Request], Awaitable[Response]]:
    """The ``/metrics`` route. With a token (``SUPPORTBOT_METRICS_TOKEN``) a scrape must send
    ``Authorization: Bearer <token>`` (else 401): the port is public because the platforms
    call it, and the figures say how busy the bot is and how it fails."""
    expected = f"Bearer {token}".encode() if token else None

    async def metrics_endpoint(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, expected):
                return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
        body, content_type = exposition()
        return Response(body, media_type=content_type)

    return metrics_endpoint


def value(name: str, labels: dict[str, str] | None = None) -> float:
    """Current value of one sample (0 when absent); handy for tests and health checks."""
    found = REGISTRY.get_sample_value(name, labels or {})
    return float(found or 0.0)


def count_reply(platform: str, reply: R) -> R:
    """Count one ``Engine.handle`` result (by outcome, and as sent when it was delivered)."""
    REPLIES.labels(platform, str(reply.outcome)).inc()
    if reply.message_id is not None:
        MESSAGES_OUT.labels(platform).inc()
    return reply
