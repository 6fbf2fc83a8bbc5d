"""Customers' files on Telegram: what a message carries, and reading a file through the Bot API.

Telegram names a file by ``file_id``; its bytes come from ``getFile`` and then the file URL
(``<base_file_url><token>/<file_path>``), both through python-telegram-bot, so they go where
``SUPPORTBOT_TELEGRAM_API_URL`` points (a loopback fake in tests). Bots may download files up
to 20 MB; ``getFile`` refuses bigger ones.
"""

from __future__ import annotations

import logging

from telegram import Bot, Message
from telegram.error import TelegramError

from supportbot.adapters.telegram.bot_api import counted
from supportbot.engine.types import Attachment, FileUnavailable

log = logging.getLogger(__name__)


def attachments_of(msg: Message) -> tuple[Attachment, ...]:
    """The file a message carries: a photo (its largest size), a document (a picture sent as a
    file counts as a picture), or something the bot cannot open (sticker, voice, video…)."""
    caption = msg.caption or ""
    if msg.photo:
        best = msg.photo[-1]  # Telegram lists the sizes smallest first
        return (Attachment(file_id=best.file_id, kind="image", mime="image/jpeg",
                           size=best.file_size, caption=caption),)
    if msg.document is not None:
        doc = msg.document
        mime = doc.mime_type or ""
        return (Attachment(file_id=doc.file_id, kind="image" if mime.startswith("image/")
                           else "file", mime=mime, size=doc.file_size,
                           filename=doc.file_name or "", caption=caption),)
    attachment = msg.effective_attachment
    if attachment is None:
        return ()
    kind = "photo" if isinstance(attachment, tuple | list) else type(attachment).__name__.lower()
    return (Attachment(file_id=str(getattr(attachment, "file_id", "") or ""), kind=kind,
                       mime=str(getattr(attachment, "mime_type", "") or ""),
                       size=getattr(attachment, "file_size", None), caption=caption),)


class TelegramFiles:
    """The engine's ``FileFetcher`` for Telegram."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def fetch(self, attachment: Attachment, max_bytes: int) -> bytes:
        if attachment.size is not None and attachment.size > max_bytes:
            raise FileUnavailable("larger than the limit", too_large=True)
        try:
            file = await counted("getFile", self.bot.get_file(attachment.file_id))
        except TelegramError as exc:
            raise FileUnavailable(f"getFile: {exc.message}",
                                  too_large="too big" in exc.message.lower()) from None
        if file.file_size is not None and file.file_size > max_bytes:
            raise FileUnavailable("larger than the limit", too_large=True)
        try:
            data = bytes(await file.download_as_bytearray())
        except TelegramError as exc:
            raise FileUnavailable(f"download: {exc.message}") from None
        except OSError as exc:  # the connection broke mid-file
            raise FileUnavailable(f"download: {type(exc).__name__}") from None
        if len(data) > max_bytes:
            raise FileUnavailable("larger than the limit", too_large=True)
        return data
