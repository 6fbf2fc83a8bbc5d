"""The "Did this help?" buttons' blocks, kept apart from feedback.py so the sink can send them
with an answer (feedback.py imports the sink; the sink cannot import it back)."""

from __future__ import annotations

from typing import Any

from .mrkdwn import split_text

FEEDBACK_PREFIX = "feedback_"
HELPFUL, UNHELPFUL = "feedback_helpful", "feedback_unhelpful"
BLOCK_ID = "supportbot_feedback"
SECTION_LIMIT = 2900  # Slack caps a section's text at 3,000 characters
# the labels when no prompts are at hand; normally they come from prompts/messages/<lang>.yaml
DEFAULT_LABELS = ("👍 Helpful", "👎 Not helpful")


def feedback_buttons(message_id: int, labels: tuple[str, str] = DEFAULT_LABELS) -> dict[str, Any]:
    return {
        "type": "actions",
        "block_id": BLOCK_ID,
        "elements": [
            {
                "type": "button",
                "action_id": HELPFUL,
                "text": {"type": "plain_text", "text": labels[0][:75], "emoji": True},
                "value": str(message_id),
            },
            {
                "type": "button",
                "action_id": UNHELPFUL,
                "text": {"type": "plain_text", "text": labels[1][:75], "emoji": True},
                "value": str(message_id),
            },
        ],
    }


def rated_blocks(mrkdwn: str, message_id: int,
                 labels: tuple[str, str] = DEFAULT_LABELS) -> list[dict[str, Any]]:
    """One message's text as section blocks with the buttons under it.

    With blocks Slack shows them instead of ``text``, so the text is repeated in sections (as
    many as its length needs; a message holds at most ~4,000 characters, i.e. two sections).
    """
    sections = [
        {"type": "section", "text": {"type": "mrkdwn", "text": piece}}
        for piece in split_text(mrkdwn, SECTION_LIMIT)
    ]
    return [*sections, feedback_buttons(message_id, labels)]
