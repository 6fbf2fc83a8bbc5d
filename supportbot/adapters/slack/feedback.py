""""Did this help?" buttons under the bot's answers, and what happens when a customer presses one.

The buttons carry our stored message id; the engine checks the presser is that conversation's
customer, so nobody can rate (or learn about) someone else's thread.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from supportbot.engine.types import Outcome, Reply
from supportbot.storage.reports import feedback_target

from .mrkdwn import split_text, to_mrkdwn
from .sink import SlackPoster, SlackSink

if TYPE_CHECKING:
    from supportbot.engine import Engine

log = logging.getLogger(__name__)

FEEDBACK_PREFIX = "feedback_"
HELPFUL, UNHELPFUL = "feedback_helpful", "feedback_unhelpful"
BLOCK_ID = "supportbot_feedback"
RATED = (Outcome.FAQ, Outcome.LLM)
_SECTION_LIMIT = 2900  # Slack caps a section's text at 3,000 characters


def feedback_buttons(message_id: int) -> dict[str, Any]:
    return {
        "type": "actions",
        "block_id": BLOCK_ID,
        "elements": [
            {
                "type": "button",
                "action_id": HELPFUL,
                "text": {"type": "plain_text", "text": "👍 Helpful", "emoji": True},
                "value": str(message_id),
            },
            {
                "type": "button",
                "action_id": UNHELPFUL,
                "text": {"type": "plain_text", "text": "👎 Not helpful", "emoji": True},
                "value": str(message_id),
            },
        ],
    }


async def offer_feedback(poster: SlackPoster, sink: SlackSink, reply: Reply) -> None:
    """Add the buttons to the last message of an answer (by editing it in place)."""
    if reply.message_id is None or reply.outcome not in RATED or not reply.text or not sink.sent:
        return
    pieces = split_text(to_mrkdwn(reply.text), poster.limit)
    last = pieces[-1] if pieces else ""
    buttons = feedback_buttons(reply.message_id)
    try:
        if last and len(last) <= _SECTION_LIMIT:
            blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": last}}, buttons]
            await poster.update(sink.channel, sink.sent[-1], last, blocks=blocks)
        else:  # too long to repeat inside a block: ask underneath instead
            await poster.post(sink.channel, "Did this answer help?", thread_ts=sink.thread_ts,
                              blocks=[buttons])
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
    found = await feedback_target(engine.store, message_id) if ok else None
    language = found[1].language if found else engine.settings.default_language
    text = engine.prompts.message("feedback_thanks" if ok else "feedback_refused", language)
    try:
        await poster.ephemeral(channel, user, text, thread_ts=thread_ts)
    except SlackApiError as exc:
        log.warning("could not acknowledge feedback: %s", exc.response.get("error"))

