"""The staff side on Telegram: one forum topic per handed-off conversation in a staff supergroup.

Topics are created on the first handoff and found again through ``engine.set_staff_ref``; a topic
staff deleted is recreated (with the summary) the next time something must be posted there.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import OrderedDict
from typing import Any

from telegram import Bot, Message, ReplyParameters, Update
from telegram.constants import ChatMemberStatus
from telegram.error import BadRequest, TelegramError

from supportbot.adapters.telegram.bot_api import (
    ThreadNotFound,
    TopicClosed,
    counted,
    with_flood_retry,
)
from supportbot.adapters.telegram.sink import send_text
from supportbot.engine import ConversationView, Engine, StaffWrote, Status
from supportbot.engine.types import Attachment

log = logging.getLogger(__name__)

# The customer message being handled, so relay_to_staff can remember which message it relays.
current_message: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "telegram_current_message", default=None
)

STAFF_STATUSES = {ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.MEMBER}
ROLE_LABELS = {"user": "👤 Customer", "assistant": "🤖 Bot", "staff": "🧑‍💼 Staff", "system": "⚙️"}


def parse_thread_key(thread_key: str) -> tuple[int, int | None]:
    chat, _, topic = thread_key.partition(":")
    return int(chat), (int(topic) if topic else None)


class _Lru(OrderedDict[int, Any]):
    """Relay id mapping kept in memory (bounded); a restart forgets it, which only loses
    reply/edit mirroring for older messages."""

    def __init__(self, size: int = 10_000) -> None:
        super().__init__()
        self.size = size

    def put(self, key: int, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class TelegramDesk:
    """StaffDesk for a Telegram supergroup with topics; also handles what staff write there."""

    def __init__(self, bot: Bot, engine: Engine, staff_chat_id: int, member_ttl: float = 60.0):
        self.bot, self.engine, self.chat_id = bot, engine, staff_chat_id
        self.note_prefix = engine.settings.staff_note_prefix
        self.member_ttl = member_ttl
        self._refs: dict[int, int] = {}  # conversation id -> topic id (fresher than a view)
        self._locks: dict[int, asyncio.Lock] = {}
        self._members: dict[int, tuple[bool, float]] = {}
        self._names: dict[str, str] = {}  # staff actor id -> their name, as last seen
        self.relayed = _Lru()  # staff-chat message id -> (customer chat, customer message id)
        self.copies = _Lru()  # staff-chat message id -> (customer chat, copied message id)

    # --- StaffDesk ------------------------------------------------------------------------

    async def handoff_requested(self, conversation: ConversationView, reason: str) -> None:
        await self._post(conversation, self._summary(conversation, reason), markdown=True)

    async def relay_to_staff(self, conversation: ConversationView, text: str) -> None:
        name = conversation.customer_name or f"Customer {conversation.customer_id}"
        sent = await self._post(conversation, f"👤 {name}:\n{text}")
        origin = current_message.get()
        if origin is not None and isinstance(sent, Message):
            self.relayed.put(sent.message_id, origin)

    async def status_changed(self, conversation: ConversationView, actor: str) -> None:
        if not self._topic_of(conversation):
            return  # changed before any topic existed: there is no staff view to update
        who = self._who(conversation, actor)
        labels = {
            Status.HUMAN: f"✋ Taken over by {who}.",
            Status.BOT: f"🤖 Handed back to the bot by {who}.",
            Status.CLOSED: f"✅ Closed by {who}.",
            Status.WAITING: "⏳ Waiting for a person.",
        }
        await self._post(conversation, labels[conversation.status])
        if not conversation.staff_actions and (topic := self._topic_of(conversation)):
            try:
                await counted("closeForumTopic", self.bot.close_forum_topic(self.chat_id, topic))
            except TelegramError as exc:
                log.info("could not close topic: %s", exc.message)

    async def relay_copy(self, conversation: ConversationView, chat_id: int, message_id: int):
        """Relay a non-text customer message (photo, sticker, voice) into the topic."""
        copied = await self._post(conversation, None, copy=(chat_id, message_id))
        self.relayed.put(copied, (chat_id, message_id))

    async def relay_files(self, conversation: ConversationView,
                          attachments: list[Attachment]) -> None:
        """A customer's files during a handoff (their text was relayed already): a copy of the
        customer's message when it is the one being handled, else each file sent again by its
        ``file_id`` (a message answered after a restart)."""
        origin = current_message.get()
        if origin is not None:
            await self.relay_copy(conversation, *origin)
            return
        for attachment in attachments:
            await self._post(conversation, None, file=attachment)

    # --- staff messages -------------------------------------------------------------------

    async def on_staff_message(self, update: Update) -> None:
        msg = update.effective_message
        if msg is None or not msg.is_topic_message or msg.message_thread_id is None:
            return  # the group's general chat, not a customer's topic
        if msg.from_user and msg.from_user.id == self.bot.id:
            return
        if not (msg.text or msg.caption or msg.effective_attachment):
            return  # service messages (topic created, member joined, ...)
        conv = await self.engine.find_by_staff_ref("telegram", str(msg.message_thread_id))
        if conv is None:
            return
        if not await self.is_staff(msg):
            log.warning("ignored a message from a non-member in the staff group")
            return
        if not await self.engine.claim_event("telegram", str(update.update_id)):
            return
        actor = f"telegram:{msg.from_user.id}" if msg.from_user else f"telegram:{self.chat_id}"
        if msg.from_user is not None:
            self._names[actor] = msg.from_user.full_name
        if update.edited_message is not None:
            await self._mirror_edit(msg)
            return
        command = (msg.text or "").split(maxsplit=1)[0].split("@")[0].lower() if msg.text else ""
        if command == "/bot":
            if not await self.engine.hand_back(conv.id, actor):
                await self._note(msg, "This conversation is not with a person right now.")
            return
        if command == "/close":
            if not await self.engine.close(conv.id, actor):
                await self._note(msg, "This conversation is already closed.")
            return
        text = msg.text or msg.caption or f"[{_kind(msg)}]"
        wrote = await self.engine.staff_message(conv.id, actor, text)
        if wrote is StaffWrote.NOTE:
            await self._note(msg, "📝 Internal note saved; the customer does not see it.")
            return
        if wrote is not StaffWrote.SENT:
            await self._note(msg, "This conversation is closed; the customer did not get this.")
            return
        chat_id, thread_id = parse_thread_key(conv.thread_key)
        reply: ReplyParameters | None = None
        if msg.reply_to_message and (target := self.relayed.get(msg.reply_to_message.message_id)):
            reply = ReplyParameters(message_id=target[1], allow_sending_without_reply=True)
        copied = await with_flood_retry(
            lambda: self.bot.copy_message(
                chat_id, self.chat_id, msg.message_id, message_thread_id=thread_id,
                reply_parameters=reply,
            ),
            method="copyMessage",
        )  # fmt: skip
        self.copies.put(msg.message_id, (chat_id, copied.message_id))

    async def is_staff(self, msg: Message) -> bool:
        """Only members of the staff group may answer: an anonymous admin posts as the group
        itself; otherwise ask Telegram (cached), which rules out users who left, were banned or
        restricted, and people posting "as" some other channel."""
        if msg.sender_chat is not None:
            return msg.sender_chat.id == self.chat_id
        user = msg.from_user
        if user is None or user.is_bot:
            return False
        cached = self._members.get(user.id)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        try:
            member = await counted("getChatMember", self.bot.get_chat_member(self.chat_id, user.id))
            ok = member.status in STAFF_STATUSES
        except TelegramError as exc:
            log.warning("getChatMember failed: %s", exc.message)
            return False
        self._members[user.id] = (ok, time.monotonic() + self.member_ttl)
        return ok

    async def _mirror_edit(self, msg: Message) -> None:
        target = self.copies.get(msg.message_id)
        if target is None or not msg.text:
            return
        try:
            await counted(
                "editMessageText",
                self.bot.edit_message_text(msg.text, chat_id=target[0], message_id=target[1]),
            )
        except BadRequest as exc:
            log.info("could not mirror an edit: %s", exc.message)

    async def _note(self, msg: Message, text: str) -> None:
        await send_text(
            self.bot, self.chat_id, text, thread_id=msg.message_thread_id, markdown=False
        )

    # --- topics ---------------------------------------------------------------------------

    def _topic_of(self, conversation: ConversationView) -> int | None:
        if conversation.id in self._refs:
            return self._refs[conversation.id]
        return int(conversation.staff_ref) if conversation.staff_ref else None

    async def _new_topic(self, conversation: ConversationView) -> int:
        name = conversation.customer_name or f"Customer {conversation.customer_id}"
        topic = await with_flood_retry(
            lambda: self.bot.create_forum_topic(self.chat_id, f"{name} · #{conversation.id}"[:128]),
            method="createForumTopic",
        )
        await self.engine.set_staff_ref(conversation.id, str(topic.message_thread_id))
        self._refs[conversation.id] = topic.message_thread_id
        return topic.message_thread_id

    async def _post(
        self,
        conversation: ConversationView,
        text: str | None,
        *,
        copy: tuple[int, int] | None = None,
        markdown: bool = False,
        file: Attachment | None = None,
    ) -> Any:
        """Post into the conversation's topic, creating it (again) when needed."""
        lock = self._locks.setdefault(conversation.id, asyncio.Lock())
        async with lock:
            topic = self._topic_of(conversation)
            for attempt in range(3):
                if topic is None:
                    topic = await self._new_topic(conversation)
                    if attempt:  # recreated: staff need the context again
                        fresh = await self.engine.get_conversation(conversation.id)
                        await self._send(topic, self._summary(fresh or conversation, "again"),
                                         markdown=True)
                try:
                    if copy is not None:
                        return await self._copy_in(topic, *copy)
                    if file is not None:
                        return await self._file_in(topic, file)
                    return await self._send(topic, text or "", markdown=markdown)
                except ThreadNotFound:
                    log.info("staff topic is gone; creating a new one")
                    topic = None
                except TopicClosed:
                    reopen = self.bot.reopen_forum_topic(self.chat_id, topic)
                    await counted("reopenForumTopic", reopen)
            raise RuntimeError("could not post into the staff topic")

    async def _copy_in(self, topic: int, chat_id: int, message_id: int) -> int:
        copied = await with_flood_retry(
            lambda: self.bot.copy_message(
                self.chat_id, chat_id, message_id, message_thread_id=topic
            ),
            method="copyMessage",
        )
        return copied.message_id

    async def _file_in(self, topic: int, file: Attachment) -> Message | None:
        """Send a customer's file into the topic by its id (Telegram keeps it; no download).
        A file Telegram cannot send by id (a sticker, a voice note…) becomes a line of text."""
        caption = file.caption[:1024] or None
        if file.kind not in ("image", "file"):
            return await self._send(topic, f"📎 [{file.kind}] (not passed on)")
        if file.kind == "image" and not file.filename:
            return await with_flood_retry(lambda: self.bot.send_photo(
                self.chat_id, file.file_id, caption=caption, message_thread_id=topic,
            ), method="sendPhoto")
        return await with_flood_retry(lambda: self.bot.send_document(
            self.chat_id, file.file_id, caption=caption, message_thread_id=topic,
        ), method="sendDocument")

    async def _send(self, topic: int, text: str, *, markdown: bool = False) -> Message:
        sent = await send_text(self.bot, self.chat_id, text, thread_id=topic, markdown=markdown)
        return sent[0]

    def _summary(self, conv: ConversationView, reason: str) -> str:
        """Markdown (sent rendered: bold shows as bold); names, not platform ids."""
        name = conv.customer_name or f"Customer {conv.customer_id}"
        lines = [
            f"🙋 **{name} needs a person** (conversation #{conv.id}, language {conv.language})",
            f"**Why:** {reason}" if reason != "again"
            else "(this topic replaces a deleted one)",
            "",
            conv.summary,
        ]
        if conv.recent:
            lines += ["", "**Recent messages:**"]
            lines += [f"{ROLE_LABELS.get(t.role, t.role)}: {t.text}"
                      for t in conv.recent[-8:]]
        lines += [
            "",
            "Write here to answer the customer (photos and files are passed on too). "
            f"Start a message with `{self.note_prefix}` for an internal note the customer "
            "never sees. /bot hands the conversation back to the bot, /close closes it.",
        ]
        return "\n".join(lines)

    def _who(self, conversation: ConversationView, actor: str) -> str:
        if actor == f"telegram:{conversation.customer_id}":
            return conversation.customer_name or "the customer"
        return self._names.get(actor) or actor.partition(":")[2] or actor


def _kind(msg: Message) -> str:
    attachment = msg.effective_attachment
    if isinstance(attachment, tuple | list):
        return "photo"
    return type(attachment).__name__.lower() if attachment else "message"
