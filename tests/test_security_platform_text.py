"""Platform text built safely (issue 23, findings 2 and 7): an answer a customer steers cannot
ping a Slack channel or anyone in it, Telegram HTML is escaped, and a broken messages file never
sends raw message keys to customers.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from test_auth import Bot, running_bot

from supportbot.adapters.telegram.text import markdown_to_html
from supportbot.testing import OfflineBot

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PROMPTS = REPO / "supportbot" / "defaults" / "prompts"
STEERED = (
    "Sure! Here is the link you asked for: [x](!channel), also [boss](@U0BOSS), "
    "[team](!subteam^S0TEAM|@everyone) and [general](#C0GENERAL). <!here> <@U0BOSS> "
    "[ok](https://acme.example/<!everyone>)"
)


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[Bot]:
    async with running_bot(tmp_path, faq_confidence=2.0) as b:
        b.llm.responder = lambda messages: STEERED
        yield b


def texts_sent(params: dict[str, Any]) -> list[str]:
    """Every string the bot handed Slack in one call: text and all of its blocks."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk({k: v for k, v in params.items() if k in ("text", "blocks", "attachments")})
    return found


async def test_a_steered_answer_pings_nobody_in_slack(bot: Bot) -> None:
    for streamed in (True, False):
        bot.settings.llm_stream = streamed
        channel = f"D{int(streamed)}"
        await bot.slack_event(bot.slack.message_event("Please repeat my link", channel=channel))
        await bot.slack.async_wait_for(lambda c=channel: bot.slack.messages(channel=c), within=15)
    await bot.settle()
    calls = [c for c in bot.slack.calls() if c.method in ("chat.postMessage", "chat.update")]
    assert calls
    sent = [t for c in calls for t in texts_sent(c.params)]
    assert any("x (!channel)" in t for t in sent)  # the text itself still arrives
    for text in sent:
        for m in re.finditer(r"<([^<>]*)>", text):
            target = m.group(1).split("|", 1)[0]
            assert re.match(r"(?i)(https?://|mailto:)", target), (m.group(0), text)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


@pytest.mark.parametrize("markdown", [
    "<b>bold</b> <a href=\"tg://user?id=1\">you</a> <script>x</script>",
    "[me](tg://user?id=42) [js](javascript:alert(1)) [ok](https://acme.example/?a=1&b=\"2\")",
    "**<i>x</i>** `<a href=x>` ```\n<pre>&amp;</pre>\n```",
    "[a](https://x.io\" onclick=\"evil) & < > \"quotes\"",
])
def test_telegram_html_is_escaped_and_links_are_web_links(markdown: str) -> None:
    parser = _Tags()
    parser.feed(markdown_to_html(markdown))
    for tag, attrs in parser.tags:
        assert tag in {"b", "i", "code", "pre", "a"}, tag
        if tag == "a":
            assert [name for name, _ in attrs] == ["href"]
            assert re.match(r"https?://", attrs[0][1] or ""), attrs


async def test_a_broken_messages_file_falls_back_to_the_package_words(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    shutil.copytree(DEFAULT_PROMPTS, prompts)
    (prompts / "messages" / "en.yaml").write_text("dont_know: [this is not: valid yaml\n  - {")
    async with OfflineBot(tmp_path, prompts_dir=prompts, faq_confidence=2.0) as bot:  # no LLM
        reply = await bot.ask("What is the airspeed of an unladen swallow?")
    assert reply.text and "dont_know" not in reply.text
    assert "I don't know" in reply.text or "human" in reply.text  # the package's own words
