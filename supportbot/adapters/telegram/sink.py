"""Sending text to Telegram: a reply whole or streamed, with a plain-text fallback when Telegram
cannot parse our HTML, and the typing indicator. Text conversion lives in ``text.py``, Bot API
retries in ``bot_api.py``.

A streamed reply in a private chat is shown as a draft (``sendMessageDraft``, Bot API 9.3+:
animated, ephemeral, nothing in the chat history) and finished with one ``sendMessage`` per
4096-unit piece. Where drafts are refused (groups, an older Bot API) it is one message edited
about once a second instead, growing into more past 4096 units.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from telegram import Bot, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, InvalidToken, RetryAfter, TelegramError

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

#: "typing…" goes out this long after the engine starts preparing an answer (0: at once, before
#: the model's first token; tests raise it to keep a quick answer to one Bot API call)
TYPING_AFTER = 0.0
#: Telegram shows "typing…" for about 5 s, so it is sent again this often while still wanted
TYPING_EVERY = 4.0
#: the text waits at most this long for a "typing…" already on its way, so the indicator never
#: lands after the text (it would then linger for 5 s under the answer)
TYPING_SETTLE = 2.0


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


class DraftSupport:
    """Whether a streamed answer may go out as a ``sendMessageDraft`` draft, shared by every sink
    of one process.

    Telegram takes drafts in private chats only, so other chats stream by edits without asking.
    When Telegram refuses a draft in a private chat (a Bot API server older than 9.3 says
    "method not found", a peer it will not draft to), that is remembered for the rest of the
    process: one refused call, not one per answer.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.refused: dict[str, str] = {}  # chat kind -> Telegram's reason

    @staticmethod
    def kind(chat_id: int) -> str:
        return "private" if chat_id > 0 else "group"  # Telegram: users > 0, groups < 0

    def usable(self, chat_id: int) -> bool:
        kind = self.kind(chat_id)
        return self.enabled and kind == "private" and kind not in self.refused

    def refuse(self, chat_id: int, reason: str) -> None:
        kind = self.kind(chat_id)
        if kind not in self.refused:
            log.info("telegram refused a draft; streaming by edits from now on",
                     extra={"chat_kind": kind, "reason": reason})
        self.refused[kind] = reason


def _draft_id() -> int:
    """A non-zero id; one per message being drafted (the same id animates one draft)."""
    return secrets.randbelow(2**31 - 2) + 1


class Typing:
    """Show "typing…" while the block runs, once it has run ``after`` seconds (Telegram clears
    the indicator after ~5 s, so it is repeated every ``every`` s): ``async with Typing(bot,
    chat):``, or until :meth:`stop` (the first words are about to show).

    With ``after`` > 0 a quick answer sends no ``sendChatAction`` at all: nothing but a timer is
    started unless the answer is slow to come. ``wanted`` is asked then (not before every
    message) whether the indicator should be shown at all.
    """

    __slots__ = ("_idle", "_task", "_timer", "after", "bot", "chat_id", "every", "thread_id",
                 "wanted")

    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        thread_id: int | None = None,
        *,
        after: float = TYPING_AFTER,
        wanted: Callable[[], Awaitable[bool]] | None = None,
        every: float = TYPING_EVERY,
    ) -> None:
        self.bot, self.chat_id, self.thread_id, self.after = bot, chat_id, thread_id, after
        self.wanted, self.every = wanted, every
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()  # no sendChatAction on its way
        self._idle.set()

    async def __aenter__(self) -> None:
        loop = asyncio.get_running_loop()
        if self.after <= 0:
            self._start(loop)
        else:
            self._timer = loop.call_later(self.after, self._start, loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._task = loop.create_task(self._loop())

    async def __aexit__(self, *exc: object) -> None:
        await self.stop(settle=False)

    async def stop(self, *, settle: bool = True) -> None:
        """No more "typing…". With ``settle``, a call already on its way is let through first
        (at most ``TYPING_SETTLE`` s), so the indicator cannot arrive after the text."""
        if self._timer is not None:
            self._timer.cancel()
        task, self._task = self._task, None
        if task is None:
            return
        if settle and not self._idle.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), TYPING_SETTLE)
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
            self._idle.clear()
            try:
                await self.bot.send_chat_action(
                    self.chat_id, ChatAction.TYPING, message_thread_id=self.thread_id
                )
            except RetryAfter as exc:
                self._idle.set()
                count_flood_wait(retry_seconds(exc))
                await asyncio.sleep(retry_seconds(exc))
                continue
            except Exception as exc:  # cosmetic: never let it break the reply
                if isinstance(exc, TelegramError):
                    metrics.PLATFORM_ERRORS.labels("telegram", "sendChatAction").inc()
                log.debug("typing indicator failed: %s", type(exc).__name__)
                return
            finally:
                self._idle.set()
            await asyncio.sleep(self.every)


class TelegramSink:
    """The engine's ReplySink for one Telegram chat (and forum topic).

    ``drafts`` (shared per process) says whether a stream may be shown as a draft here; without
    it streams are edits, as before Bot API 9.3. ``typing_after``: see :meth:`preparing`.
    """

    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        *,
        thread_id: int | None = None,
        reply_to: int | None = None,
        throttle: EditThrottle | None = None,
        drafts: DraftSupport | None = None,
        typing_after: float = TYPING_AFTER,
    ) -> None:
        self.bot, self.chat_id, self.thread_id, self.reply_to = bot, chat_id, thread_id, reply_to
        self.throttle = throttle or EditThrottle()
        self.drafts = drafts or DraftSupport(enabled=False)
        self.typing_after = typing_after
        self.typing_every = TYPING_EVERY
        self.sent: list[int] = []  # message ids, for tests and relay mapping
        self.rated: int | None = None  # the feedback id whose buttons went out with an answer
        self._typing: Typing | None = None

    @contextlib.asynccontextmanager
    async def preparing(self) -> AsyncIterator[None]:
        """The engine is preparing an answer (it enters this before the model is asked):
        "typing…" in the customer's chat and topic, ``typing_after`` s from now (at once by
        default), again every ``typing_every`` s, until the first words show (a draft or a
        message) or the block ends. Before it the customer saw nothing until the first token."""
        typing = Typing(self.bot, self.chat_id, self.thread_id, after=self.typing_after,
                        every=self.typing_every)
        self._typing = typing
        try:
            async with typing:
                yield
        finally:
            if self._typing is typing:
                self._typing = None

    async def _quiet(self) -> None:
        """Words are about to show: the indicator ends (and cannot land after them)."""
        typing, self._typing = self._typing, None
        if typing is not None:
            await typing.stop()

    async def send(self, text: str, *, feedback_id: int | None = None) -> str | None:
        """Send a whole reply; with ``feedback_id`` its last message carries the 👍/👎 buttons,
        so rating an answer costs no second Bot API call."""
        await self._quiet()
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
        await self._quiet()
        parts = split_text(text) or [text]
        await edit_part(self.bot, self.chat_id, int(message_id), parts[0], final=True)
        self.sent.append(int(message_id))
        for part in parts[1:]:
            sent = await send_part(self.bot, self.chat_id, part, thread_id=self.thread_id)
            self.sent.append(sent.message_id)
        return message_id

    async def send_stream(self, chunks: AsyncIterator[str], *,
                          started: Callable[[str], Awaitable[None]] | None = None) -> str | None:
        """Show the answer as it arrives (throttled per chat): as a draft finished by one
        ``sendMessage`` per piece where drafts work, else a message edited as it grows.
        ``started`` hears the first message's id as soon as it exists (for a draft: once the
        finished message is sent, as a draft leaves nothing in the chat to finish later).

        When the chunks end early (a takeover), what was shown so far is finished as the
        message, exactly as an edited stream keeps its words: the customer keeps what they
        read and the engine stores that same text as the interrupted reply."""
        stream = _Stream(self, started)
        async for chunk in chunks:
            stream.buffer += chunk
            if self.throttle.ready(self.chat_id):
                await stream.flush(final=False)
        await stream.flush(final=True)
        return str(stream.first) if stream.first is not None else None


def _refusal(exc: TelegramError) -> bool:
    """Telegram will not take drafts here: a 400 (``TEXTDRAFT_PEER_INVALID``, a chat type it
    does not draft in) or a 404 ("method not found" from a Bot API server before 9.3, which
    python-telegram-bot raises as ``InvalidToken``)."""
    return isinstance(exc, BadRequest | InvalidToken)


class _Stream:
    """State of one streamed reply: finished messages plus the one being drafted or edited."""

    def __init__(self, sink: TelegramSink,
                 started: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.sink = sink
        self.started = started
        self.buffer = ""
        self.done = 0  # chars of buffer already in finished messages
        self.prefix = ""  # reopens a code fence the previous message had to close
        self.current: int | None = None  # message id being edited
        self.shown = ""
        self.first: int | None = None  # this stream's first message id
        # drafting: the id of the draft being animated (None: streaming by edits)
        self.draft_id: int | None = _draft_id() if sink.drafts.usable(sink.chat_id) else None

    async def _draft(self, text: str) -> bool:
        """Show ``text`` as the draft; False when Telegram refuses drafts (remembered)."""
        s = self.sink
        assert self.draft_id is not None
        try:
            await s.bot.send_message_draft(s.chat_id, self.draft_id, text,
                                           message_thread_id=s.thread_id)
        except TelegramError as exc:
            if not _refusal(exc):
                raise  # flood control and transient failures: flush() skips this one
            metrics.PLATFORM_ERRORS.labels("telegram", "sendMessageDraft").inc()
            s.drafts.refuse(s.chat_id, exc.message)
            self.draft_id = None
            return False
        return True

    async def _post(self, text: str, *, final: bool) -> None:
        s = self.sink
        await s._quiet()
        attempts = 5 if final else 1  # a skipped intermediate update is caught up by the next
        if final:
            await s.throttle.wait_flood(s.chat_id)
        elif (self.draft_id is not None and self.current is None
              and (text == self.shown or await self._draft(text))):
            self.shown = text
            s.throttle.used(s.chat_id)
            return
        # (a refused draft: this answer goes on as an edited message)
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
            if self.first is None:
                self.first = msg.message_id
            if self.started is not None:
                started, self.started = self.started, None
                await started(str(msg.message_id))
            if final and self.draft_id is not None:
                self.draft_id = _draft_id()  # the next piece is a new draft
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
