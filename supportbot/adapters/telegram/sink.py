"""Sending text to Telegram: a reply whole or streamed (throttled edits of one message that grows
into more past 4096 units), with a plain-text fallback when Telegram cannot parse our HTML, and
the typing indicator. Text conversion lives in ``text.py``, Bot API retries in ``bot_api.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from telegram import Bot, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, RetryAfter, TelegramError

from supportbot import metrics
from supportbot.adapters.telegram.bot_api import (
    ThreadNotFound,
    TopicClosed,
    count_flood_wait,
    is_not_modified,
    is_parse_error,
    is_transient,
    retry_seconds,
    with_flood_retry,
)
from supportbot.adapters.telegram.buttons import feedback_keyboard
from supportbot.adapters.telegram.text import (
    FENCE,
    MAX_UNITS,
    markdown_to_html,
    split_once,
    split_text,
    utf16_len,
)

log = logging.getLogger(__name__)

#: "typing…" only for an answer slower than this: a quick answer ends the indicator at once
#: anyway, so the call would only cost a Bot API request per message.
TYPING_AFTER = 1.0


def _reply_params(reply_to: int | None) -> ReplyParameters | None:
    if reply_to is None:
        return None
    return ReplyParameters(message_id=reply_to, allow_sending_without_reply=True)


def _translate(exc: BadRequest) -> Exception:
    msg = exc.message.lower()
    if "thread not found" in msg:
        return ThreadNotFound(exc.message)
    if "topic_closed" in msg:
        return TopicClosed(exc.message)
    return exc


async def send_part(
    bot: Bot,
    chat_id: int,
    text: str,
    *,
    thread_id: int | None = None,
    reply_to: int | None = None,
    markdown: bool = True,
    attempts: int = 5,
    reply_markup: InlineKeyboardMarkup | None = None,
) -> Message:
    """Send one part (already within the limit): HTML first, plain text if Telegram rejects it."""

    async def attempt(rendered: bool) -> Message:
        kwargs: dict[str, Any] = {"message_thread_id": thread_id}
        if reply_to is not None:
            kwargs["reply_parameters"] = _reply_params(reply_to)
        if reply_markup is not None:
            kwargs["reply_markup"] = reply_markup
        if rendered:
            kwargs.update(text=markdown_to_html(text), parse_mode=ParseMode.HTML)
        else:
            kwargs["text"] = text
        return await with_flood_retry(
            lambda: bot.send_message(chat_id, **kwargs), method="sendMessage", attempts=attempts
        )

    try:
        return await attempt(markdown)
    except BadRequest as exc:
        if markdown and is_parse_error(exc):
            log.info("telegram rejected markup; sending plain text")
            try:
                return await attempt(False)
            except BadRequest as exc2:
                raise _translate(exc2) from exc2
        raise _translate(exc) from exc


async def send_text(
    bot: Bot,
    chat_id: int,
    text: str,
    *,
    thread_id: int | None = None,
    reply_to: int | None = None,
    markdown: bool = True,
    reply_markup: InlineKeyboardMarkup | None = None,
) -> list[Message]:
    """Send ``text`` as as many messages as it needs; only the first one is a reply, only the
    last one carries ``reply_markup`` (buttons go under the end of the answer)."""
    sent: list[Message] = []
    parts = split_text(text)
    for i, part in enumerate(parts, 1):
        sent.append(
            await send_part(
                bot,
                chat_id,
                part,
                thread_id=thread_id,
                reply_to=reply_to if not sent else None,
                markdown=markdown,
                reply_markup=reply_markup if i == len(parts) else None,
            )
        )
    return sent


async def edit_part(
    bot: Bot, chat_id: int, message_id: int, text: str, *, final: bool, attempts: int = 5
) -> None:
    """Edit a streamed message; the final edit renders Markdown (plain text on parse errors)."""

    async def attempt(rendered: bool) -> None:
        kwargs: dict[str, Any] = {"chat_id": chat_id, "message_id": message_id}
        if rendered:
            kwargs.update(text=markdown_to_html(text), parse_mode=ParseMode.HTML)
        else:
            kwargs["text"] = text
        await with_flood_retry(
            lambda: bot.edit_message_text(**kwargs), method="editMessageText", attempts=attempts
        )

    try:
        await attempt(final)
    except BadRequest as exc:
        if is_not_modified(exc):
            return
        if final and is_parse_error(exc):
            try:
                await attempt(False)
            except BadRequest as exc2:
                if not is_not_modified(exc2):
                    raise
            return
        raise


class EditThrottle:
    """About one edit per second per chat, shared by every stream in that chat."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._next: dict[int, float] = {}
        self._flood: dict[int, float] = {}

    def ready(self, chat_id: int) -> bool:
        return time.monotonic() >= self._next.get(chat_id, 0.0)

    def used(self, chat_id: int, delay: float | None = None) -> None:
        now = time.monotonic()
        if len(self._next) > 10_000:
            self._next = {k: v for k, v in self._next.items() if v > now}
            self._flood = {k: v for k, v in self._flood.items() if v > now}
        self._next[chat_id] = now + (self.interval if delay is None else delay)

    def flooded(self, chat_id: int, seconds: float) -> None:
        """Telegram said "retry after": nothing more for this chat until then."""
        self._flood[chat_id] = time.monotonic() + seconds
        self.used(chat_id, seconds)

    async def wait_flood(self, chat_id: int) -> None:
        remaining = self._flood.get(chat_id, 0.0) - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)


class Typing:
    """Show "typing…" while the block runs, once it has run ``after`` seconds (Telegram clears
    the indicator after ~5 s, so it is repeated every 4 s): ``async with Typing(bot, chat):``.

    A quick answer sends no ``sendChatAction`` at all: nothing but a timer is started unless
    the answer is slow to come. ``wanted`` is asked then (not before every message) whether
    the indicator should be shown at all.
    """

    __slots__ = ("_task", "_timer", "after", "bot", "chat_id", "thread_id", "wanted")

    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        thread_id: int | None = None,
        *,
        after: float = TYPING_AFTER,
        wanted: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.bot, self.chat_id, self.thread_id, self.after = bot, chat_id, thread_id, after
        self.wanted = wanted
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.after, self._start, loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._task = loop.create_task(self._loop())

    async def __aexit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        try:
            if self.wanted is not None and not await self.wanted():
                return
        except Exception as exc:  # cosmetic: never let it break the reply
            log.debug("typing indicator check failed: %s", type(exc).__name__)
            return
        while True:
            try:
                await self.bot.send_chat_action(
                    self.chat_id, ChatAction.TYPING, message_thread_id=self.thread_id
                )
            except RetryAfter as exc:
                count_flood_wait(retry_seconds(exc))
                await asyncio.sleep(retry_seconds(exc))
                continue
            except Exception as exc:  # cosmetic: never let it break the reply
                if isinstance(exc, TelegramError):
                    metrics.PLATFORM_ERRORS.labels("telegram", "sendChatAction").inc()
                log.debug("typing indicator failed: %s", type(exc).__name__)
                return
            await asyncio.sleep(4.0)


class TelegramSink:
    """The engine's ReplySink for one Telegram chat (and forum topic)."""

    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        *,
        thread_id: int | None = None,
        reply_to: int | None = None,
        throttle: EditThrottle | None = None,
    ) -> None:
        self.bot, self.chat_id, self.thread_id, self.reply_to = bot, chat_id, thread_id, reply_to
        self.throttle = throttle or EditThrottle()
        self.sent: list[int] = []  # message ids, for tests and relay mapping
        self.rated: int | None = None  # the feedback id whose buttons went out with an answer

    async def send(self, text: str, *, feedback_id: int | None = None) -> str | None:
        """Send a whole reply; with ``feedback_id`` its last message carries the 👍/👎 buttons,
        so rating an answer costs no second Bot API call."""
        markup = feedback_keyboard(feedback_id) if feedback_id is not None else None
        messages = await send_text(
            self.bot, self.chat_id, text, thread_id=self.thread_id, reply_to=self.reply_to,
            reply_markup=markup,
        )
        self.sent.extend(m.message_id for m in messages)
        if markup is not None and messages:
            self.rated = feedback_id
        return str(messages[0].message_id) if messages else None

    async def replace(self, message_id: str, text: str, *,
                      feedback_id: int | None = None) -> str:
        """Edit message ``message_id`` (a reply a crash left half streamed) to the whole
        ``text``; what does not fit follows in new messages."""
        parts = split_text(text) or [text]
        await edit_part(self.bot, self.chat_id, int(message_id), parts[0], final=True)
        self.sent.append(int(message_id))
        for part in parts[1:]:
            sent = await send_part(self.bot, self.chat_id, part, thread_id=self.thread_id)
            self.sent.append(sent.message_id)
        return message_id

    async def send_stream(self, chunks: AsyncIterator[str], *,
                          started: Callable[[str], Awaitable[None]] | None = None) -> str | None:
        """Post the first words, then edit the message as text arrives (throttled per chat).
        ``started`` hears the first message's id as soon as it exists."""
        stream = _Stream(self, started)
        async for chunk in chunks:
            stream.buffer += chunk
            if self.throttle.ready(self.chat_id):
                await stream.flush(final=False)
        await stream.flush(final=True)
        return str(self.sent[0]) if self.sent else None


class _Stream:
    """State of one streamed reply: finished messages plus the one being edited."""

    def __init__(self, sink: TelegramSink,
                 started: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.sink = sink
        self.started = started
        self.buffer = ""
        self.done = 0  # chars of buffer already in finished messages
        self.prefix = ""  # reopens a code fence the previous message had to close
        self.current: int | None = None  # message id being edited
        self.shown = ""

    async def _post(self, text: str, *, final: bool) -> None:
        s = self.sink
        attempts = 5 if final else 1  # a skipped intermediate edit is caught up by the next
        if final:
            await s.throttle.wait_flood(s.chat_id)
        if self.current is None:
            msg = await send_part(
                s.bot,
                s.chat_id,
                text,
                thread_id=s.thread_id,
                reply_to=s.reply_to if not s.sent else None,
                markdown=final,
                attempts=attempts,
            )
            self.current = msg.message_id
            s.sent.append(msg.message_id)
            if self.started is not None:
                started, self.started = self.started, None
                await started(str(msg.message_id))
        elif text != self.shown or final:
            await edit_part(s.bot, s.chat_id, self.current, text, final=final, attempts=attempts)
        self.shown = text
        s.throttle.used(s.chat_id)

    async def flush(self, *, final: bool) -> None:
        while True:
            live = self.prefix + self.buffer[self.done :].lstrip()
            if not live.strip():
                return
            if utf16_len(live) <= MAX_UNITS:
                break
            # Too long for one message: finish this one and continue in a new message.
            head, rest_at, fence_open = split_once(live, MAX_UNITS)
            skipped = len(self.buffer[self.done :]) - len(self.buffer[self.done :].lstrip())
            await self._post(head, final=True)
            self.done += skipped + rest_at - len(self.prefix)
            self.prefix = f"{FENCE}\n" if fence_open else ""
            self.current, self.shown = None, ""
        try:
            await self._post(live.strip(), final=final)
        except RetryAfter as exc:
            if final:
                raise
            count_flood_wait(retry_seconds(exc))
            self.sink.throttle.flooded(self.sink.chat_id, retry_seconds(exc))
        except TelegramError as exc:
            if final or not is_transient(exc):
                raise
            log.info("telegram: a streaming update failed (%s); the next one catches up",
                     type(exc).__name__)
