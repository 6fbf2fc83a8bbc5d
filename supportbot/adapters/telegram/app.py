"""The PTB Application and the one handler that turns Telegram updates into engine calls."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from telegram import Bot, CallbackQuery, Message, MessageEntity, Update
from telegram.constants import ChatType
from telegram.error import TelegramError
from telegram.ext import Application

from supportbot.adapters.telegram.desk import TelegramDesk, current_message
from supportbot.adapters.telegram.feedback import answer, handle_vote, offer_feedback, parse_vote
from supportbot.adapters.telegram.files import attachments_of
from supportbot.adapters.telegram.polling import StoreUnavailable
from supportbot.adapters.telegram.sink import (
    TYPING_AFTER,
    DraftSupport,
    EditThrottle,
    TelegramSink,
)
from supportbot.config import Settings
from supportbot.engine import Engine, IncomingMessage, Reply
from supportbot.engine.types import Attachment

log = logging.getLogger(__name__)

PLATFORM = "telegram"
ALLOWED_UPDATES = ["message", "edited_message", "callback_query"]
COMMANDS = {"/start", "/help", "/human", "/new"}


def build_application(settings: Settings) -> Application[Any, Any, Any, Any, Any, Any]:
    """Everything points at ``telegram_api_url`` so the bot can run against a loopback fake.

    Updates run concurrently (the engine orders messages within one conversation), and in
    webhook mode PTB's own web server is not used: our Starlette route feeds the queue. Bot API
    calls go through PTB's own ``HTTPXRequest`` (httpx honours ``HTTPS_PROXY``/``NO_PROXY``).
    """
    assert settings.telegram_bot_token is not None
    base = settings.telegram_api_url.rstrip("/")
    builder = (
        Application.builder()
        .token(settings.telegram_bot_token.get_secret_value())
        .base_url(base)
        .base_file_url(base.removesuffix("/bot") + "/file/bot")
        .concurrent_updates(64)
        .connection_pool_size(128)  # two calls in flight per update at once: reply and typing
    )
    if settings.telegram_webhook_url:
        builder = builder.updater(None)
    return builder.build()


def words(engine: Engine, name: str, language: str | None, **context: Any) -> str:
    lang = (language or engine.settings.default_language or "en").split("-")[0].lower()
    return engine.prompts.message(name, lang, **context)


class UpdateRouter:
    """Decides what an update is (customer text, command, media, staff message) and acts.

    :meth:`accept` is what runs before Telegram hears "OK" (the webhook's 200, the polling
    loop's next offset): it stores what must survive a crash and raises
    :class:`StoreUnavailable` when it cannot, so the update is delivered again. A customer's
    text is only stored there; the engine answers it in the background, in order per thread.
    Commands, media, votes and staff messages are claimed and handled in place (they are
    short, and they run in delivery order that way).
    """

    def __init__(self, engine: Engine, bot: Bot, desk: TelegramDesk | None, throttle: EditThrottle):
        self.engine, self.bot, self.desk, self.throttle = engine, bot, desk, throttle
        self.typing_after = TYPING_AFTER  # seconds before "typing…" is shown (tests change it)
        self.drafts = DraftSupport(engine.settings.telegram_drafts)  # per process
        self._followups: set[asyncio.Task[Any]] = set()

    async def accept(self, update: Update) -> None:
        try:
            await self._accept(update)
        except TelegramError as exc:  # a reply Telegram refused (chat gone, bot blocked…)
            log.warning("telegram refused a call while handling an update: %s", exc.message,
                        extra={"update_id": update.update_id})

    async def _accept(self, update: Update) -> None:
        if not well_formed(update):
            log.warning("ignored a telegram update with fields of the wrong type",
                        extra={"update_id": update.update_id})
            return
        if update.callback_query is not None:
            await self._callback(update, update.callback_query)
            return
        msg = update.effective_message
        if msg is None or (update.message is None and update.edited_message is None):
            return
        if self.desk is not None and msg.chat.id == self.desk.chat_id:
            await self.desk.on_staff_message(update)
            return
        if update.edited_message is not None:
            return  # customers' edits are not re-answered
        user = msg.from_user
        if user is None or user.is_bot:
            return
        text = msg.text if msg.text is not None else None
        if msg.chat.type == ChatType.PRIVATE:
            addressed = True
        elif msg.chat.type in (ChatType.GROUP, ChatType.SUPERGROUP):
            addressed, text = self._addressed(msg)
        else:
            return
        if not addressed:
            return
        thread_id = msg.message_thread_id if msg.is_topic_message else None
        thread_key = f"{msg.chat.id}:{thread_id}" if thread_id else str(msg.chat.id)
        sink = TelegramSink(
            self.bot,
            msg.chat.id,
            thread_id=thread_id,
            reply_to=msg.message_id if msg.chat.type != ChatType.PRIVATE else None,
            throttle=self.throttle,
            drafts=self.drafts,
            typing_after=self.typing_after,
        )
        token = current_message.set((msg.chat.id, msg.message_id))
        try:
            await self._dispatch(update, msg, text, thread_key, sink)
        finally:
            current_message.reset(token)

    async def drain(self, within: float = 10.0) -> None:
        """Wait for answers being written (tests, graceful shutdown)."""
        if self._followups:
            await asyncio.wait(set(self._followups), timeout=within)

    async def _claim(self, update: Update) -> bool:
        """Claim an update id (False for a redelivery); a store failure is not acknowledged."""
        try:
            return await self.engine.claim_event(PLATFORM, str(update.update_id))
        except Exception as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def _dispatch(
        self, update: Update, msg: Message, text: str | None, thread_key: str, sink: TelegramSink
    ) -> None:
        if msg.text is None:
            await self._media(update, msg, thread_key, sink)
        elif (command := _command(text or "", self.bot.username)) is not None:
            if command != "":  # "" = addressed to another bot
                await self._command(update, msg, command, thread_key, sink)
        else:
            await self._customer_text(update, msg, text or "", thread_key, sink)

    def _addressed(self, msg: Message) -> tuple[bool, str | None]:
        """In groups the bot answers only when mentioned, replied to, or given a command."""
        text = msg.text
        replied = msg.reply_to_message.from_user if msg.reply_to_message else None
        if replied is not None and replied.id == self.bot.id:
            return True, text
        if text is None:
            return False, None
        handle = f"@{self.bot.username}".lower()
        for entity, value in msg.parse_entities([MessageEntity.MENTION]).items():
            if value.lower() == handle:
                units = text.encode("utf-16-le")  # entity offsets count UTF-16 units
                rest = units[: 2 * entity.offset] + units[2 * (entity.offset + entity.length) :]
                return True, " ".join(rest.decode("utf-16-le").split())
        for entity in msg.entities:
            if entity.type == MessageEntity.TEXT_MENTION and entity.user == self.bot.bot:
                return True, text
        command = _command(text, self.bot.username)
        return command is not None and command != "", text

    async def _customer_text(
        self, update: Update, msg: Message, text: str, thread_key: str, sink: TelegramSink,
        *, attachments: tuple[Attachment, ...] = (),
    ) -> None:
        user = msg.from_user
        assert user is not None
        incoming = IncomingMessage(
            platform=PLATFORM,
            thread_key=thread_key,
            customer_id=str(user.id),
            text=text,
            message_id=str(update.update_id),
            customer_name=user.full_name,
            workspace=str(msg.chat.id),
            language=user.language_code,
            received_at=msg.date,
            attachments=attachments,
        )
        try:
            accepted = await self.engine.accept(incoming)
        except Exception as exc:  # the database is down or full: Telegram must send it again
            raise StoreUnavailable(type(exc).__name__) from exc
        if not accepted.stored:
            return
        # "typing…" is the sink's (TelegramSink.preparing): from when the engine asks the model
        # until the first words show; never while staff own the thread
        answered = self.engine.dispatch(accepted, sink)  # in this context: current_message
        self._follow(self._after_answer(answered, sink))

    async def _after_answer(self, answered: asyncio.Future[Reply], sink: TelegramSink) -> None:
        try:
            reply = await answered
        except Exception:  # logged by the engine; the message waits for recovery
            return
        await offer_feedback(self.bot, sink, reply)

    def _follow(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(_logged(work))
        self._followups.add(task)
        task.add_done_callback(self._followups.discard)

    async def _callback(self, update: Update, query: CallbackQuery) -> None:
        """An inline button was pressed: only ours are 👍/👎 votes on an answer."""
        vote = parse_vote(query.data)
        if vote is None:
            await answer(self.bot, query, None)  # stop the client's spinner, nothing else
            return
        # handled before the next update of the chat, so "the latest vote wins"
        if not await self._claim(update):
            return  # a redelivery: counted and answered the first time
        refused = words(self.engine, "feedback_refused", query.from_user.language_code)
        await handle_vote(self.engine, self.bot, query, *vote, refused=refused)

    async def _command(
        self, update: Update, msg: Message, command: str, thread_key: str, sink: TelegramSink
    ) -> None:
        user = msg.from_user
        assert user is not None
        if command not in COMMANDS:
            command = "/help"
        if not await self._claim(update):
            return
        lang = user.language_code
        actor = f"{PLATFORM}:{user.id}"
        if command == "/human":
            await self.engine.request_handoff(  # the engine tells the customer, once
                PLATFORM, thread_key, str(user.id), "customer asked for a person", actor,
                sink=sink, language=_lang(lang), customer_name=user.full_name,
            )  # fmt: skip
            return
        if command == "/new":
            await self.engine.new_conversation(PLATFORM, thread_key, actor)
            await sink.send(words(self.engine, "new_conversation", lang))
            return
        name = "greeting" if command == "/start" else "help"
        await sink.send(words(self.engine, name, lang, customer_name=user.first_name))

    async def _media(self, update: Update, msg: Message, thread_key: str, sink: TelegramSink):
        """Photos, documents, stickers, voice: stored with their message like text (the caption
        is its text) before Telegram hears "OK"; the engine decides what the bot says (a
        picture for the model, "I can't see pictures", a file too big) or relays them to staff
        during a handoff. Anything without a file (a location, a poll…) gets "text only"."""
        attachments = attachments_of(msg)
        if not attachments:
            if await self._claim(update):
                lang = msg.from_user.language_code if msg.from_user else None
                await sink.send(words(self.engine, "text_only", lang))
            return
        await self._customer_text(update, msg, msg.caption or "", thread_key, sink,
                                  attachments=attachments)


def well_formed(update: Update) -> bool:
    """PTB builds objects from whatever JSON it is given: check the fields the router and the
    staff desk read have the types the Bot API documents, so nothing downstream trips on them."""
    query = update.callback_query
    if query is not None:
        return (
            isinstance(query.id, str)
            and _user_ok(query.from_user)
            and (query.data is None or isinstance(query.data, str))
            and (query.message is None or _message_ok(query.message))
        )
    msg = update.effective_message
    return msg is None or _message_ok(msg)


def _user_ok(user: object) -> bool:
    return user is None or (
        isinstance(getattr(user, "id", None), int)
        and isinstance(getattr(user, "is_bot", None), bool)
        and isinstance(getattr(user, "first_name", None), str)
        and isinstance(getattr(user, "last_name", None), str | None)
        and isinstance(getattr(user, "username", None), str | None)
        and isinstance(getattr(user, "language_code", None), str | None)
    )


def _message_ok(msg: object, *, depth: int = 0) -> bool:
    chat = getattr(msg, "chat", None)
    if not (
        isinstance(getattr(msg, "message_id", None), int)
        and isinstance(getattr(chat, "id", None), int)
        and isinstance(getattr(chat, "type", None), str)
        and isinstance(getattr(msg, "text", None), str | None)
        and isinstance(getattr(msg, "caption", None), str | None)
        and isinstance(getattr(msg, "message_thread_id", None), int | None)
        and isinstance(getattr(msg, "is_topic_message", None), bool | None)
        and _user_ok(getattr(msg, "from_user", None))
    ):
        return False
    entities = getattr(msg, "entities", ())
    if not all(isinstance(e.offset, int) and isinstance(e.length, int)
               and isinstance(e.type, str) and _user_ok(e.user) for e in entities):
        return False
    replied = getattr(msg, "reply_to_message", None)
    return replied is None or (depth < 1 and _message_ok(replied, depth=depth + 1))


async def _logged(work: Coroutine[Any, Any, None]) -> None:
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception:  # the message stays stored; the engine's recovery answers it
        log.exception("telegram answer failed")


def _lang(code: str | None) -> str | None:
    return code.split("-")[0].lower() if code else None


def _command(text: str, bot_username: str | None) -> str | None:
    """``/cmd`` or ``/cmd@thisbot`` -> "/cmd"; a command for another bot -> ""; else None."""
    if not text.startswith("/"):
        return None
    head = text.split(maxsplit=1)[0]
    name, _, target = head.partition("@")
    if target and bot_username and target.lower() != bot_username.lower():
        return ""
    return name.lower()
