"""The rating buttons speak the customer's language (labels from prompts/messages/<lang>.yaml),
through the real Slack adapter, FakeSlack and signed requests (fixtures of test_feedback_slack)."""

from __future__ import annotations

import test_feedback_slack
from test_feedback_slack import Env, ask

from supportbot.adapters.slack.feedback import BLOCK_ID
from supportbot.prompts import PromptLibrary

env = test_feedback_slack.env  # the fixture: a Slack adapter behind uvicorn, FakeSlack, FakeLLM


def labels_of(message) -> list[str]:
    [actions] = [b for b in message.blocks or [] if b.get("block_id") == BLOCK_ID]
    return [element["text"]["text"] for element in actions["elements"]]


async def test_buttons_under_a_chinese_answer_are_chinese(env: Env) -> None:
    answer = await ask(env, "退款需要多长时间？")
    assert labels_of(answer) == ["👍 有帮助", "👎 没帮助"]


async def test_buttons_under_an_english_answer_are_english(env: Env) -> None:
    answer = await ask(env, "How long do refunds take?")
    assert labels_of(answer) == ["👍 Helpful", "👎 Not helpful"]


def test_every_shipped_language_labels_its_buttons():
    library = PromptLibrary()
    english = library.feedback_labels("en")
    for lang in ("zh", "es", "fr", "de", "ja", "pt", "ru"):
        labels = library.feedback_labels(lang)
        assert labels != english and all(label.startswith(("👍", "👎")) for label in labels)
