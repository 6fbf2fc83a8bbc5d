"""👍/👎 under the bot's answers on Telegram, and what happens when a customer presses one.

The buttons carry our stored message id (``fb:<1|0>:<id>``); the engine checks the presser is that
conversation's customer, so nobody can rate (or learn about) someone else's thread.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from telegram import Bot, CallbackQuery
from telegram.error import TelegramError

from supportbot.adapters.telegram.bot_api import counted, with_flood_retry
from supportbot.adapters.telegram.buttons import PREFIX, feedback_keyboard, parse_vote
from supportbot.adapters.telegram.sink import TelegramSink
from supportbot.engine.types import Reply

if TYPE_CHECKING:
    from supportbot.engine import Engine

log = logging.getLogger(__name__)

__all__ = ["PREFIX", "answer", "feedback_keyboard", "handle_vote", "offer_feedback",
           "parse_vote"]


async def offer_feedback(bot: Bot, sink: TelegramSink, reply: Reply) -> None:
    """Attach the buttons to the last message of an answer that did not get them as it was
    sent (a streamed one: it is edited in place; a failure only loses the buttons)."""
    if reply.message_id is None or not reply.outcome.rated or not sink.sent:
        return
    if sink.rated == reply.message_id:
        return  # sent with the buttons already
    keyboard = feedback_keyboard(reply.message_id)
    try:
        await with_flood_retry(
            lambda: bot.edit_message_reply_markup(
                chat_id=sink.chat_id, message_id=sink.sent[-1], reply_markup=keyboard
            ),
            method="editMessageReplyMarkup",
            attempts=3,
        )
    except TelegramError as exc:
        log.warning("could not add feedback buttons: %s", exc.message)


async def handle_vote(
    engine: Engine, bot: Bot, query: CallbackQuery, helpful: bool, message_id: int,
    *, refused: str,
) -> bool:  # fmt: skip
    """Record a pressed 👍/👎 (already deduped) and answer the callback so the spinner stops."""
    user = query.from_user
    ok = await engine.record_feedback(message_id, helpful, f"telegram:{user.id}")
    if ok:
        language = await engine.answer_language(message_id) or user.language_code or "en"
        text = engine.prompts.message("feedback_thanks", language)
    else:
        text = refused
    await answer(bot, query, text, alert=not ok)
    return ok


async def answer(bot: Bot, query: CallbackQuery, text: str | None, *, alert: bool = False):
    try:
        await counted(
            "answerCallbackQuery",
            bot.answer_callback_query(query.id, text=text, show_alert=alert),
        )
    except TelegramError as exc:  # too old (> ~15 min) or already answered: nothing to do
        log.info("could not answer a callback query: %s", exc.message)
