"""The 👍/👎 keyboard's wire format, kept apart from feedback.py so the sink can attach it to
an answer as it is sent (feedback.py imports the sink; the sink cannot import it back)."""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

PREFIX = "fb:"


def feedback_keyboard(message_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [[
            InlineKeyboardButton("👍", callback_data=f"{PREFIX}1:{message_id}"),
            InlineKeyboardButton("👎", callback_data=f"{PREFIX}0:{message_id}"),
        ]]
    )  # fmt: skip


def parse_vote(data: str | None) -> tuple[bool, int] | None:
    """``fb:1:42`` -> (True, 42); anything else (another button, garbage) -> None."""
    if not data or not data.startswith(PREFIX):
        return None
    vote, _, ident = data[len(PREFIX) :].partition(":")
    if vote not in ("0", "1") or not ident.isdigit() or len(ident) > 18:
        return None
    return vote == "1", int(ident)
