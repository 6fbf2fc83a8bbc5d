"""Posting to Slack without dropping replies: pacing, 429 back-off, splitting, streaming.

Slack allows about one new message per second per channel and answers 429 with ``Retry-After``
when a method's limit is hit; text over its size limit fails with ``msg_too_long``. Every
bot-side write goes through :class:`SlackPoster` so those rules hold for replies and staff
notifications alike. Only writes that create a message are paced; edits of our own message
(``chat.update``, ``chat.appendStream``, ``chat.stopStream``) obey 429s alone, so the last edit
of a streamed answer never waits out a second meant for new posts.

Answers stream with Slack's native streaming (``chat.startStream`` / ``appendStream`` /
``stopStream``) where the workspace allows it, else into a placeholder edited with
``chat.update``. A refusal is remembered per workspace for the life of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from supportbot import metrics
from supportbot.language import detect_language
from supportbot.textflow import reflow

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
#: chat.appendStream takes at most 12,000 characters a call; one streamed message holds no more
#: than a posted one, so the answer moves on to a new streamed message past ``SlackPoster.limit``
APPEND_LIMIT = 12_000
#: a streamed line is held back until it is this long: its first characters decide whether it
#: joins the paragraph above (re-flow) or starts a list item, heading or code block
_SETTLED_LINE = 16


class SlackPoster:
    """Rate-aware wrapper around the Web API calls the adapter makes."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        min_interval: float = 1.0,
        max_attempts: int = 5,
        limit: int = MESSAGE_LIMIT,
        native_streaming: bool = True,
    ) -> None:
        self.client = client
        self.min_interval = min_interval
        self.max_attempts = max_attempts
        self.limit = limit
        self.native_streaming = native_streaming  # SUPPORTBOT_SLACK_NATIVE_STREAMING
        #: workspaces (team ids; "" when unknown) whose chat.startStream was refused: they
        #: stream by chat.update edits until the process restarts
        self.stream_refused: dict[str, str] = {}
        #: methods that took a pacing turn, and those that had to wait for it (tests, bench)
        self.paced: Counter[str] = Counter()
        self.pace_waits: Counter[str] = Counter()
        self._channel_locks: dict[str, asyncio.Lock] = {}  # channels with writes waiting
        self._waiting: dict[str, int] = {}
        self._next_at: dict[str, float] = {}
        self._method_blocked_until: dict[str, float] = {}

    def native_stream_allowed(self, team: str) -> bool:
        return self.native_streaming and team not in self.stream_refused

    def refuse_native_stream(self, team: str, error: str) -> None:
        """The workspace refused ``chat.startStream``: stream by edits there from now on."""
        if team not in self.stream_refused:
            log.warning("slack native streaming refused (%s); streaming by chat.update edits",
                        error, extra={"team": team})
        self.stream_refused[team] = error

    def give_back_turn(self, channel: str) -> None:
        """A paced call created no message (``chat.startStream`` refused): the next post in
        ``channel`` need not wait for it (unless others already queue behind it)."""
        if channel not in self._channel_locks:
            self._next_at.pop(channel, None)

    async def _pace(self, channel: str, method: str = "") -> None:
        """At most one new message per ``min_interval`` per channel, in the order they asked."""
        self.paced[method] += 1
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
                    self.pace_waits[method] += 1
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
        paced = method in _PACED
        write = paced or method in _EDITS
        deadline = time.monotonic() + SEND_DEADLINE
        transient = iter(TRANSIENT_BACKOFF)
        attempt = 0
        while True:
            blocked = self._method_blocked_until.get(method, 0.0) - time.monotonic()
            if blocked > 0:
                await asyncio.sleep(blocked)
            if paced:
                await self._pace(str(kwargs.get("channel", "")), method)
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
        recipient: tuple[str, str] | None = None,
    ) -> None:
        self.poster = poster
        self.channel = channel
        self.thread_ts = thread_ts
        self.stream_interval = stream_interval
        self.prompts = prompts  # the rating buttons' labels, in the customer's language
        # (team id, user id) of the customer: Slack needs them to stream into a channel
        self.recipient = recipient
        self.sent: list[str] = []  # ts of every message this sink posted
        self.rated: int | None = None  # the feedback id whose buttons went out with an answer
        #: mrkdwn of the last message of a natively streamed answer (its split differs from
        #: ``split_text``'s, so the buttons' edit repeats what that message really shows)
        self.last_text: str | None = None

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
        what does not fit follows in new messages. A native stream the crash left open is
        stopped first (Slack answers an error for a message that is not one: ignored)."""
        if self.thread_ts and self.poster.native_streaming:
            with contextlib.suppress(SlackApiError):  # not a stream, or already stopped
                await self.poster.call("chat.stopStream", channel=self.channel, ts=ts)
        pieces = split_text(to_mrkdwn(text), self.poster.limit) or [PLACEHOLDER]
        extra: dict[str, Any] = {}
        if feedback_id is not None and len(pieces) == 1:
            extra["blocks"] = rated_blocks(pieces[0], feedback_id,
                                           self.feedback_labels(detect_language(text)))
            self.rated = feedback_id
        await self.poster.update(self.channel, ts, pieces[0], **extra)
        self.sent.append(ts)
        for piece in pieces[1:]:
            self.sent.extend(await self.poster.post(self.channel, piece,
                                                    thread_ts=self.thread_ts))
        return ts

    async def send_stream(self, chunks: AsyncIterator[str], *,
                          started: Callable[[str], Awaitable[None]] | None = None) -> str | None:
        """Stream a reply as text arrives, natively (``chat.startStream``) where Slack allows,
        else into a placeholder edited at most every ``stream_interval``. ``started`` hears the
        message's ts before any text goes into it. When ``chunks`` ends early (a takeover) the
        message is finished at once with what was shown."""
        stream: _Stream | _NativeStream | None = None
        buffer: list[str] = []
        last = 0.0
        # If the producer fails mid-way the error propagates and the partial text stays visible
        # (ending in the placeholder); the engine then sends its apology as a separate message.
        try:
            async for chunk in chunks:
                buffer.append(chunk)
                if stream is None:
                    stream = await self._open_stream()
                    if started is not None:
                        await started(stream.stamps[0])
                    last = time.monotonic()
                elif time.monotonic() - last >= self.stream_interval:
                    await stream.show("".join(buffer), final=False)
                    last = time.monotonic()
        except BaseException:
            if isinstance(stream, _NativeStream):  # never leave a stream open in Slack
                await stream.abandon("".join(buffer))
            raise
        if stream is None:
            return None
        text = "".join(buffer)
        if text.strip():
            await stream.show(text, final=True)
        else:
            await stream.discard()
        self.sent.extend(stream.stamps)
        return stream.stamps[0]

    def _native_team(self) -> str | None:
        """The workspace to stream natively in, or ``None`` where native streaming cannot be
        used: turned off or refused, a flat DM (Slack streams only into threads), or a channel
        without the recipient Slack requires there."""
        team = self.recipient[0] if self.recipient else ""
        if not self.thread_ts or not self.poster.native_stream_allowed(team):
            return None
        if self.recipient is None and not self.channel.startswith("D"):
            return None
        return team

    async def _open_stream(self) -> _Stream | _NativeStream:
        team = self._native_team()
        if team is not None:
            native = _NativeStream(self)
            try:
                await native.start()
                return native
            except SlackApiError as exc:
                self.poster.give_back_turn(self.channel)
                error = str(exc.response.get("error") or exc.response.status_code)
                if exc.response.status_code < 500 and error not in _NOT_ABOUT_STREAMING:
                    self.poster.refuse_native_stream(team, error)
                else:  # about this call or channel: edits this time, native again next time
                    log.warning("chat.startStream failed (%s); streaming by edits", error)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("chat.startStream failed (%s); streaming by edits",
                            type(exc).__name__)
        stream = _Stream(self)
        await stream.start()
        return stream


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


class _NativeStream:
    """One answer streamed with ``chat.startStream`` / ``appendStream`` / ``stopStream``.

    Slack only appends, so what goes out must never need taking back: the answer is re-flowed
    (:func:`supportbot.textflow.reflow`) from its whole raw Markdown each time, and only the part
    later text can no longer change is appended (the last line waits until its start is
    known). Past the message size the stream is stopped and the answer goes on in a new one.
    If Slack stops taking the stream (an append or the stop fails), the answer is finished by
    editing the message once it is complete, so the customer still gets all of it.
    """

    def __init__(self, sink: SlackSink) -> None:
        self.sink = sink
        self.stamps: list[str] = []
        self.sent = ""  # re-flowed Markdown appended so far, over all messages
        self.in_message = 0  # characters of ``sent`` in the current message
        self.open = False
        self.broken = False  # Slack refused an append: the rest comes by an edit at the end

    async def start(self) -> None:
        sink = self.sink
        extra: dict[str, str] = {}
        if sink.recipient is not None:
            extra = {"recipient_team_id": sink.recipient[0],
                     "recipient_user_id": sink.recipient[1]}
        resp = await sink.poster.call("chat.startStream", channel=sink.channel,
                                      thread_ts=sink.thread_ts, **extra)
        self.stamps.append(resp["ts"])
        self.in_message = 0
        self.open = True

    async def show(self, markdown: str, *, final: bool) -> None:
        flowed = _defuse(reflow(markdown))
        target = flowed.rstrip() if final else _settled(markdown)
        if self.broken or not target.startswith(self.sent):
            # broken, or the re-flow changed its mind near the end: wait for the whole text
            if final:
                await self._close_quietly()
                await self._repair(flowed)
            return
        rest = target[len(self.sent):]
        if not final:
            await self._append(rest)
            return
        room = min(self.sink.poster.limit - self.in_message, APPEND_LIMIT)
        try:
            if len(rest) <= room:  # the last text goes with the stop: one call fewer
                await self._stop(rest)
                self.sent += rest
                self.in_message += len(rest)
            else:
                await self._append(rest)
                await self._stop()
        except SlackApiError as exc:
            log.warning("chat.stopStream failed (%s); finishing the answer by an edit",
                        exc.response.get("error"))
            self.broken = True
        if self.broken:
            await self._close_quietly()
            await self._repair(flowed)
            return
        self.sink.last_text = to_mrkdwn(self._current_message(flowed))

    async def discard(self) -> None:
        await self._stop("(no answer)" if not self.sent.strip() else "")

    async def abandon(self, markdown: str) -> None:
        """The producer failed or was cancelled: close the stream with what is settled."""
        try:
            await self.show(markdown, final=False)
        except Exception as exc:
            log.warning("could not append the last text (%s)", type(exc).__name__)
        try:
            await self._stop()
        except Exception as exc:
            log.warning("chat.stopStream failed (%s)", type(exc).__name__)

    async def _append(self, text: str) -> None:
        limit = self.sink.poster.limit
        while text and not self.broken:
            room = limit - self.in_message
            if len(text) > room:
                cut = _cut(text, room)
                head, text = text[:cut], text[cut:]
                await self._write(head)
                await self._stop()
                await self.start()
                continue
            await self._write(text)
            return

    async def _write(self, text: str) -> None:
        if not text:
            return
        sink = self.sink
        for start in range(0, len(text), APPEND_LIMIT):
            piece = text[start:start + APPEND_LIMIT]
            try:
                await sink.poster.call("chat.appendStream", channel=sink.channel,
                                       ts=self.stamps[-1], markdown_text=piece)
            except SlackApiError as exc:  # e.g. Slack ended the stream itself
                log.warning("chat.appendStream failed (%s); the answer ends by an edit",
                            exc.response.get("error"))
                self.broken = True
                return
            self.sent += piece
            self.in_message += len(piece)

    async def _stop(self, markdown: str = "") -> None:
        if not self.open:
            return
        sink = self.sink
        self.open = False
        extra = {"markdown_text": markdown} if markdown else {}
        await sink.poster.call("chat.stopStream", channel=sink.channel, ts=self.stamps[-1],
                               **extra)

    async def _close_quietly(self) -> None:
        with contextlib.suppress(SlackApiError):  # already ended: the edit below still works
            await self._stop()

    def _current_message(self, flowed: str) -> str:
        return self.sent[len(self.sent) - self.in_message:] if self.in_message else flowed

    async def _repair(self, flowed: str) -> None:
        """The finished text does not continue what was appended (a rare re-flow at the very
        end): edit the last message to its proper text. Edits are not paced."""
        sink = self.sink
        start = len(self.sent) - self.in_message
        text = to_mrkdwn(flowed[start:]) or PLACEHOLDER
        pieces = split_text(text, sink.poster.limit) or [PLACEHOLDER]
        try:
            await sink.poster.update(sink.channel, self.stamps[-1], pieces[0])
        except SlackApiError as exc:  # the message cannot be edited: the text comes anew
            log.warning("chat.update after a stream failed (%s)", exc.response.get("error"))
            self.stamps.extend(await sink.poster.post(sink.channel, pieces[0],
                                                      thread_ts=sink.thread_ts))
        for piece in pieces[1:]:
            self.stamps.extend(await sink.poster.post(sink.channel, piece,
                                                      thread_ts=sink.thread_ts))
        sink.last_text = pieces[-1]


def _settled(markdown: str) -> str:
    """The re-flowed part of a growing Markdown text that more text cannot change: all of it
    once its last line is long enough to tell what kind of line it is (``1`` may become
    ``1. item``, a line of its own, or join the paragraph), else all but that line; never the
    trailing spaces or backslash that may turn into a hard break."""
    head, newline, line = markdown.rpartition("\n")
    if len(line.strip()) < _SETTLED_LINE:
        markdown = head if newline else ""
    settled = _defuse(reflow(markdown)).rstrip().rstrip("\\").rstrip()
    opened = settled.rfind("<")  # "<!chan" may yet become a mention: wait until it is known
    if opened >= 0 and ">" not in settled[opened:] and len(settled) - opened < _SETTLED_LINE:
        settled = settled[:opened].rstrip()
    return settled


#: Slack's own control sequences: mentions that would ping (@channel, @here, a user, a group)
_PINGS = re.compile(r"<(?=!(?:channel|here|everyone|subteam\^)|@[UWB][A-Z0-9]|#[CGD][A-Z0-9])",
                    re.IGNORECASE)


def _defuse(markdown: str) -> str:
    """The mrkdwn path escapes ``<``; Markdown must keep it (code, comparisons), so only the
    sequences Slack turns into pings get an invisible word joiner after the ``<``. The joiner
    goes in after the ``<``, so a text appended up to a ``<`` stays a prefix of the result."""
    return _PINGS.sub("<\u2060", markdown)


def _cut(text: str, room: int) -> int:
    """Where to end a message that has ``room`` characters left: after a line or a word."""
    if room <= 0:
        return 0
    window = text[:room]
    for mark in ("\n\n", "\n", " "):
        at = window.rfind(mark)
        if at > room // 2:
            return at + len(mark)
    return room


#: methods that create a message: paced per channel (Slack allows about one a second)
_PACED = frozenset({"chat.postMessage", "chat.postEphemeral", "chat.startStream"})
#: edits of our own message: JSON bodies, no pacing (429s are still waited out)
_EDITS = frozenset({"chat.update", "chat.appendStream", "chat.stopStream"})
#: chat.startStream errors that say nothing about the workspace's streaming (the channel, a
#: passing limit): not remembered, so the next answer tries native streaming again
_NOT_ABOUT_STREAMING = frozenset(
    {"ratelimited", "channel_not_found", "not_in_channel", "is_archived", "thread_not_found",
     "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
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
