""""Did this help?" buttons under the bot's answers, and what happens when a customer presses one.

The buttons carry our stored message id; the engine checks the presser is that conversation's
customer, so nobody can rate (or learn about) someone else's thread.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from supportbot.engine.types import Reply

from .buttons import (
    BLOCK_ID,
    FEEDBACK_PREFIX,
    HELPFUL,
    UNHELPFUL,
    feedback_buttons,
    rated_blocks,
)
from .mrkdwn import split_text, to_mrkdwn
from .sink import SlackPoster, SlackSink

if TYPE_CHECKING:
    from supportbot.engine import Engine

log = logging.getLogger(__name__)

__all__ = ["BLOCK_ID", "FEEDBACK_PREFIX", "HELPFUL", "UNHELPFUL", "feedback_buttons",
           "handle_feedback", "offer_feedback", "rated_blocks"]


async def offer_feedback(poster: SlackPoster, sink: SlackSink, reply: Reply) -> None:
    """Add the buttons to the last message of an answer that did not get them as it was sent
    (a streamed one), by editing it in place. A native stream is already stopped by now (its
    stored id, which the buttons carry, exists only once the stream is done), so this is a
    ``chat.update`` there too; edits are not paced, so it adds milliseconds, not a second."""
    if reply.message_id is None or not reply.outcome.rated or not reply.text or not sink.sent:
        return
    if sink.rated == reply.message_id:
        return  # sent with the buttons already
    if sink.last_text is not None:  # natively streamed: its own split, kept by the sink
        last = sink.last_text
    else:
        pieces = split_text(to_mrkdwn(reply.text), poster.limit)
        last = pieces[-1] if pieces else ""
    try:
        await poster.update(sink.channel, sink.sent[-1], last,
                            blocks=rated_blocks(last, reply.message_id,
                                                sink.feedback_labels(reply.language)))
    except SlackApiError as exc:
        log.warning("could not add feedback buttons: %s", exc.response.get("error"))


async def handle_feedback(engine: Engine, poster: SlackPoster, body: dict[str, Any]) -> None:
    """A feedback button was pressed (already acknowledged)."""
    user = (body.get("user") or {}).get("id")
    action = (body.get("actions") or [{}])[0]
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
        "channel_id"
    )
    thread_ts = (body.get("message") or {}).get("thread_ts")
    try:
        message_id = int(action.get("value", ""))
    except ValueError:
        log.warning("feedback button without a message id")
        return
    helpful = action.get("action_id") == HELPFUL
    ok = bool(user) and await engine.record_feedback(message_id, helpful, f"slack:{user}")
    if not (channel and user):
        return
    language = (await engine.answer_language(message_id) if ok else None) or (
        engine.settings.default_language)
    text = engine.prompts.message("feedback_thanks" if ok else "feedback_refused", language)
    try:
        await poster.ephemeral(channel, user, text, thread_ts=thread_ts)
    except SlackApiError as exc:
        log.warning("could not acknowledge feedback: %s", exc.response.get("error"))

