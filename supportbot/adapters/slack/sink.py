"""Posting to Slack without dropping replies: pacing, 429 back-off, splitting, streaming.

Slack allows about one message per second per channel and answers 429 with ``Retry-After``
when a method's limit is hit; text over its size limit fails with ``msg_too_long``. Every
bot-side write goes through :class:`SlackPoster` so those rules hold for replies and staff
notifications alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from supportbot import metrics
from supportbot.language import detect_language

from .buttons import DEFAULT_LABELS, rated_blocks
from .mrkdwn import split_text, to_mrkdwn

if TYPE_CHECKING:
    from supportbot.prompts import PromptLibrary

log = logging.getLogger(__name__)

#: Slack recommends at most 4,000 characters per message; we stay below it.
MESSAGE_LIMIT = 3_900
MAX_RETRY_AFTER = 60.0
#: pauses (seconds) before trying a call again after a 5xx, a timeout or a dropped connection,
#: within ``SEND_DEADLINE``; after that the engine's sweep answers the message again
TRANSIENT_BACKOFF = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)
SEND_DEADLINE = 20.0
PLACEHOLDER = "…"


class SlackPoster:
    """Rate-aware wrapper around the Web API calls the adapter makes."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        min_interval: float = 1.0,
        max_attempts: int = 5,
        limit: int = MESSAGE_LIMIT,
    ) -> None:
        self.client = client
        self.min_interval = min_interval
        self.max_attempts = max_attempts
        self.limit = limit
        self._channel_locks: dict[str, asyncio.Lock] = {}  # channels with writes waiting
        self._waiting: dict[str, int] = {}
        self._next_at: dict[str, float] = {}
        self._method_blocked_until: dict[str, float] = {}

    async def _pace(self, channel: str) -> None:
        """At most one write per ``min_interval`` per channel, in the order they asked."""
        now = time.monotonic()
        if channel not in self._channel_locks and self._next_at.get(channel, 0.0) <= now:
            # Nobody waits and the channel's turn is free: take it (nothing awaits in between).
            if len(self._next_at) > 10_000:  # a bot sees many DMs over time: forget idle ones
                self._next_at = {c: t for c, t in self._next_at.items() if t > now}
            self._next_at[channel] = now + self.min_interval
            return
        lock = self._channel_locks.get(channel)
        if lock is None:
            lock = self._channel_locks[channel] = asyncio.Lock()
        self._waiting[channel] = self._waiting.get(channel, 0) + 1
        try:
            async with lock:
                now = time.monotonic()
                wait = self._next_at.get(channel, 0.0) - now
                if wait > 0:
                    await asyncio.sleep(wait)
                start = max(now, self._next_at.get(channel, 0.0))
                self._next_at[channel] = start + self.min_interval
        finally:
            self._waiting[channel] -= 1
            if not self._waiting[channel]:  # the last one out: the next may take the fast path
                del self._waiting[channel], self._channel_locks[channel]

    async def call(self, method: str, **kwargs: Any) -> Any:
        """Call ``method``; wait out 429s (``Retry-After``), try again after a transient failure
        (5xx, timeout, dropped connection) with backoff within ``SEND_DEADLINE``, and pace
        writes per channel. (After a timeout Slack may have posted it: a small at-least-once
        window, accepted over a lost reply.)"""
        write = method in _PACED
        deadline = time.monotonic() + SEND_DEADLINE
        transient = iter(TRANSIENT_BACKOFF)
        attempt = 0
        while True:
            blocked = self._method_blocked_until.get(method, 0.0) - time.monotonic()
            if blocked > 0:
                await asyncio.sleep(blocked)
            if write:
                await self._pace(str(kwargs.get("channel", "")))
            try:
                if write:  # write methods take JSON (blocks stay nested)
                    return await self.client.api_call(method, json=kwargs)
                return await self.client.api_call(method, params=kwargs)
            except SlackApiError as exc:
                attempt += 1
                if exc.response.status_code >= 500 and await _pause(transient, deadline, method,
                                                                    exc.response.status_code):
                    continue
                if exc.response.status_code != 429 or attempt >= self.max_attempts:
                    metrics.PLATFORM_ERRORS.labels("slack", method).inc()
                    raise
                delay = _retry_after(exc)
                metrics.RATE_LIMIT_WAITS.labels("slack").inc()
                metrics.RATE_LIMIT_SECONDS.labels("slack").inc(delay)
                log.warning("slack %s rate limited; retrying in %.1fs", method, delay)
                self._method_blocked_until[method] = time.monotonic() + delay
            except (aiohttp.ClientError, TimeoutError) as exc:
                if await _pause(transient, deadline, method, type(exc).__name__):
                    continue
                metrics.PLATFORM_ERRORS.labels("slack", method).inc()
                raise

    async def post(
        self, channel: str, text: str, *, thread_ts: str | None = None, **kwargs: Any
    ) -> list[str]:
        """Post mrkdwn ``text``, split as needed; return the ts of every message posted."""
        stamps: list[str] = []
        for piece in split_text(text, self.limit):
            stamps.extend(await self._post_piece(channel, piece, thread_ts, kwargs))
        return stamps

    async def _post_piece(
        self, channel: str, text: str, thread_ts: str | None, extra: dict[str, Any]
    ) -> list[str]:
        try:
            resp = await self.call(
                "chat.postMessage", channel=channel, text=text, **_thread(thread_ts), **extra
            )
            return [resp["ts"]]
        except SlackApiError as exc:
            if exc.response.get("error") != "msg_too_long" or len(text) < 200:
                raise
        # Slack measured it differently (entities, multi-byte): halve and retry.
        stamps: list[str] = []
        for piece in split_text(text, max(len(text) // 2, 100)):
            stamps.extend(await self._post_piece(channel, piece, thread_ts, extra))
        return stamps

    async def update(self, channel: str, ts: str, text: str, **kwargs: Any) -> None:
        await self.call("chat.update", channel=channel, ts=ts, text=text, **kwargs)

    async def ephemeral(
        self, channel: str, user: str, text: str, thread_ts: str | None = None
    ) -> None:
        await self.call(
            "chat.postEphemeral", channel=channel, user=user, text=text, **_thread(thread_ts)
        )


class SlackSink:
    """Delivers one conversation's replies into its Slack thread (implements ``ReplySink``)."""

    def __init__(
        self,
        poster: SlackPoster,
        channel: str,
        thread_ts: str | None,
        *,
        stream_interval: float = 1.0,
        prompts: PromptLibrary | None = None,
    ) -> None:
        self.poster = poster
        self.channel = channel
        self.thread_ts = thread_ts
        self.stream_interval = stream_interval
        self.prompts = prompts  # the rating buttons' labels, in the customer's language
        self.sent: list[str] = []  # ts of every message this sink posted
        self.rated: int | None = None  # the feedback id whose buttons went out with an answer

    async def send(self, text: str, *, feedback_id: int | None = None) -> str | None:
        """Post a whole reply; with ``feedback_id`` its last message carries the rating buttons,
        so no ``chat.update`` (and no second wait for the channel's pacing) is needed."""
        mrkdwn = to_mrkdwn(text)
        if feedback_id is None:
            stamps = await self.poster.post(self.channel, mrkdwn, thread_ts=self.thread_ts)
        else:
            pieces = split_text(mrkdwn, self.poster.limit)
            stamps = []
            for piece in pieces[:-1]:
                stamps.extend(await self.poster.post(self.channel, piece, thread_ts=self.thread_ts))
            if pieces:
                stamps.extend(await self._post_rated(pieces[-1], feedback_id))
        self.sent.extend(stamps)
        return stamps[0] if stamps else None

    def feedback_labels(self, language: str) -> tuple[str, str]:
        """👍/👎 labels from prompts/messages/<language>.yaml (English without prompts)."""
        return self.prompts.feedback_labels(language) if self.prompts else DEFAULT_LABELS

    async def _post_rated(self, piece: str, feedback_id: int) -> list[str]:
        try:
            resp = await self.poster.call(
                "chat.postMessage", channel=self.channel, text=piece,
                blocks=rated_blocks(piece, feedback_id, self.feedback_labels(
                    detect_language(piece))), **_thread(self.thread_ts),
            )
        except SlackApiError as exc:
            if exc.response.get("error") not in _BLOCK_ERRORS:
                raise  # not about the buttons: a plain post would fail the same way
            # Slack refused the blocks (or measured the text differently): the answer matters
            # more than its buttons, so send it plainly; offer_feedback tries an edit after.
            log.warning("answer with feedback buttons refused (%s); sending it plainly",
                        exc.response.get("error"))
            return await self.poster.post(self.channel, piece, thread_ts=self.thread_ts)
        self.rated = feedback_id
        return [resp["ts"]]

    async def replace(self, ts: str, text: str, *, feedback_id: int | None = None) -> str:
        """Edit message ``ts`` (a reply a crash left half streamed) to the whole ``text``;
        what does not fit follows in new messages."""
        pieces = split_text(to_mrkdwn(text), self.poster.limit) or [PLACEHOLDER]
        extra: dict[str, Any] = {}
        if feedback_id is not None and len(pieces) == 1:
            extra["blocks"] = rated_blocks(pieces[0], feedback_id)
            self.rated = feedback_id
        await self.poster.update(self.channel, ts, pieces[0], **extra)
        self.sent.append(ts)
        for piece in pieces[1:]:
            self.sent.extend(await self.poster.post(self.channel, piece,
                                                    thread_ts=self.thread_ts))
        return ts

    async def send_stream(self, chunks: AsyncIterator[str], *,
                          started: Callable[[str], Awaitable[None]] | None = None) -> str | None:
        """Post a placeholder, edit it as text arrives (at most every ``stream_interval``).
        ``started`` hears the placeholder's ts before any text goes into it."""
        stream = _Stream(self)
        buffer: list[str] = []
        last = 0.0
        # If the producer fails mid-way the error propagates and the partial text stays visible
        # (ending in the placeholder); the engine then sends its apology as a separate message.
        async for chunk in chunks:
            buffer.append(chunk)
            if not stream.stamps:
                await stream.start()
                if started is not None:
                    await started(stream.stamps[0])
                last = time.monotonic()
            elif time.monotonic() - last >= self.stream_interval:
                await stream.show("".join(buffer), final=False)
                last = time.monotonic()
        text = "".join(buffer)
        if text.strip():
            await stream.show(text, final=True)
        elif stream.stamps:
            await stream.discard()
        self.sent.extend(stream.stamps)
        return stream.stamps[0] if stream.stamps else None


class _Stream:
    """The messages one streamed reply occupies; grows into more messages past the limit."""

    def __init__(self, sink: SlackSink) -> None:
        self.sink = sink
        self.stamps: list[str] = []
        self.shown: list[str] = []

    async def start(self) -> None:
        ts = await self._post(PLACEHOLDER)
        self.stamps.append(ts)
        self.shown.append(PLACEHOLDER)

    async def show(self, markdown: str, *, final: bool) -> None:
        limit = self.sink.poster.limit
        for _ in range(4):
            try:
                await self._show(markdown, final=final, limit=limit)
                return
            except SlackApiError as exc:
                if exc.response.get("error") != "msg_too_long":
                    raise
                # Slack counts differently than we do: re-split a quarter smaller (halving
                # would push a long answer past the messages-per-reply cap and cut it short)
                limit = limit * 3 // 4
        raise RuntimeError("could not fit the reply into Slack messages")

    async def _show(self, markdown: str, *, final: bool, limit: int) -> None:
        suffix = "" if final else " " + PLACEHOLDER
        pieces = split_text(to_mrkdwn(markdown), max(limit - len(suffix), 100)) or [PLACEHOLDER]
        pieces[-1] += suffix
        for i, piece in enumerate(pieces):
            if i < len(self.stamps):
                if self.shown[i] != piece:
                    await self._update(i, piece, final=final)
            else:
                self.stamps.append(await self._post(piece))
                self.shown.append(piece)
        for i in range(len(pieces), len(self.stamps)):  # text got shorter after re-splitting
            if self.shown[i] != PLACEHOLDER:
                await self._update(i, PLACEHOLDER)

    async def discard(self) -> None:
        for i in range(len(self.stamps)):
            await self._update(i, "(no answer)")

    async def _post(self, text: str) -> str:
        sink = self.sink
        resp = await sink.poster.call(
            "chat.postMessage", channel=sink.channel, text=text, **_thread(sink.thread_ts)
        )
        return resp["ts"]

    async def _update(self, i: int, text: str, *, final: bool = True) -> None:
        try:
            await self.sink.poster.update(self.sink.channel, self.stamps[i], text)
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error == "msg_too_long" or exc.response.status_code == 429:
                raise
            log.warning("chat.update failed (%s)", error)
            if not final:
                return  # a later edit will carry this text too
            # The placeholder is gone or cannot be edited: deliver in a fresh message instead.
            self.stamps[i] = await self._post(text)
        self.shown[i] = text


_PACED = frozenset({"chat.postMessage", "chat.update", "chat.postEphemeral"})
_BLOCK_ERRORS = frozenset(
    {"invalid_blocks", "invalid_blocks_format", "msg_blocks_too_long", "msg_too_long"}
)


async def _pause(backoff: Iterator[float], deadline: float, method: str, why: object) -> bool:
    """Sleep before the next try of a transient failure; False when out of tries or time."""
    pause = next(backoff, None)
    if pause is None or time.monotonic() + pause >= deadline:
        return False
    log.warning("slack %s failed (%s); trying again in %.1fs", method, why, pause)
    await asyncio.sleep(pause)
    return True


def _thread(thread_ts: str | None) -> dict[str, str]:
    return {"thread_ts": thread_ts} if thread_ts else {}


def _retry_after(exc: SlackApiError) -> float:
    headers = exc.response.headers or {}
    value = headers.get("Retry-After") or headers.get("retry-after")
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        delay = float(value) if value is not None else 1.0
    except ValueError:
        delay = 1.0
    return min(max(delay, 0.0), MAX_RETRY_AFTER)
