"""Markdown to Slack mrkdwn, and splitting long text at natural boundaries."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supportbot.adapters.slack.mrkdwn import MAX_PIECES, escape, split_text, to_mrkdwn


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("**bold** and __also__", "*bold* and *also*"),
        ("*italic* and _italic_", "_italic_ and _italic_"),
        ("~~gone~~", "~gone~"),
        ("[docs](https://x.io/a?b=1&c=2)", "<https://x.io/a?b=1&c=2|docs>"),
        ("see <https://x.io>", "see <https://x.io>"),
        ("![logo](https://x.io/l.png)", "<https://x.io/l.png|logo>"),
        ("# Title", "*Title*"),
        ("### **Sub** title ###", "*Sub title*"),
        ("- one\n* two\n+ three", "• one\n• two\n• three"),
        ("  - nested", "  • nested"),
        ("1. first\n2. second", "1. first\n2. second"),
        ("- [x] done\n- [ ] todo", "☑ done\n☐ todo"),
        ("> quoted", "> quoted"),
        ("a < b & c > d", "a &lt; b &amp; c &gt; d"),
        ("`x < **y**`", "`x &lt; **y**`"),
        ("---", "──────────"),
        ("2 * 3 * 4", "2 * 3 * 4"),
        ("snake_case_name", "snake_case_name"),
    ],
)
def test_conversions(markdown: str, expected: str) -> None:
    assert to_mrkdwn(markdown) == expected


def test_code_block_keeps_content_and_drops_language() -> None:
    md = "Run:\n```python\nif a < b:\n    print('**x**')\n```\nDone **now**"
    assert to_mrkdwn(md) == "Run:\n```\nif a &lt; b:\n    print('**x**')\n```\nDone *now*"


def test_bold_link_inside_list() -> None:
    assert to_mrkdwn("- **see** [the guide](https://g.io)") == "• *see* <https://g.io|the guide>"


def test_escape() -> None:
    assert escape("<&>") == "&lt;&amp;&gt;"


def test_split_short_text_is_one_piece() -> None:
    assert split_text("hello", 100) == ["hello"]
    assert split_text("", 100) == []


def test_split_prefers_paragraphs_then_lines() -> None:
    text = "a" * 30 + "\n\n" + "b" * 30 + "\n" + "c" * 30
    assert split_text(text, 70) == ["a" * 30, "b" * 30 + "\n" + "c" * 30]


def test_split_reopens_code_blocks() -> None:
    text = "```\n" + "\n".join(f"line {i}" for i in range(40)) + "\n```"
    pieces = split_text(text, 60)
    assert len(pieces) > 1
    for piece in pieces:
        assert len(piece) <= 60
        assert piece.count("```") == 2, piece


def test_split_does_not_leave_an_empty_code_block() -> None:
    text = "a" * 50 + "\n```\n" + "b " * 40 + "\n```"
    pieces = split_text(text, 40)
    assert all(p.strip("`\n ") for p in pieces)
    assert all(len(p) <= 40 for p in pieces)


def test_split_does_not_cut_links() -> None:
    text = "x" * 40 + "<https://example.com/" + "p" * 20 + "|label>"
    pieces = split_text(text, 60)
    assert pieces[1].startswith("<https://example.com/")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab \n`*<&"), max_size=600), st.integers(40, 200))
def test_split_bounds_and_keeps_content(text: str, limit: int) -> None:
    pieces = split_text(text, limit, max_pieces=10_000)  # content kept: no cap here
    assert all(len(p) <= limit for p in pieces)

    # Nothing but whitespace and the fences we add may be lost or gained.
    def core(s: str) -> str:
        return "".join(s.replace("```", "").split())

    assert core("".join(pieces)) == core(text)


# --- no mention or channel ping can come from content (issue 23, finding 2) -------------------

_CONSTRUCT = re.compile(r"<([^<>]*)>")


def assert_no_special_construct(mrkdwn: str) -> None:
    """Every ``<…>`` Slack would parse is a web or mail link; nothing can ping anyone."""
    for m in _CONSTRUCT.finditer(mrkdwn):
        target = m.group(1).split("|", 1)[0]
        assert re.match(r"(?i)(https?://|mailto:)", target), (mrkdwn, m.group(0))
        assert not re.search(r"[\s<>]", target), mrkdwn


@pytest.mark.parametrize(
    "markdown",
    [
        "[x](!channel)", "[x](!here)", "[everyone](!everyone)", "[team](!subteam^S0123)",
        "[boss](@U0BOSS)", "[x](#C0GENERAL)", "[x]( <!channel> )", "<!channel>", "<@U123>",
        "<#C123|general>", "<!subteam^S1|@team>", "[x](javascript:alert(1))",
        "[x](slack://channel?id=C1)", "[x](file:///etc/passwd)", "[x](data:text/html,hi)",
        "[ok](https://x.io|<!channel>)", "[ok](https://x.io/<!here>)", "<https://x.io|<!here>>",
        "<https://x.io|@here>", "![img](!channel)", "`<!channel>`", "```\n<!channel>\n```",
        "**[x](!channel)**", "- [x](@U1)", "\x01[x](!channel)\x02", "[x](HTTPS://x.io)",
    ],
)
def test_content_cannot_make_a_mention(markdown: str) -> None:
    assert_no_special_construct(to_mrkdwn(markdown))


def test_only_web_and_mail_links_stay_links() -> None:
    assert to_mrkdwn("[x](!channel)") == "x (!channel)"
    assert to_mrkdwn("[mail us](mailto:help@acme.io)") == "<mailto:help@acme.io|mail us>"
    assert to_mrkdwn("[x](HTTPS://x.io)") == "<HTTPS://x.io|x>"
    assert to_mrkdwn("[ok](https://x.io|<!channel>)").startswith("<https://x.io")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*"[]()<>!@#|^:/ abhtps*_`\n\x01\x02", "channel", "here",
                                 "subteam^S1", "https://", "mailto:", "U12", "C9"]),
               max_size=40).map("".join))
def test_no_mention_from_any_text(markdown: str) -> None:
    assert_no_special_construct(to_mrkdwn(markdown))


def test_split_caps_the_number_of_pieces() -> None:
    text = "\n\n".join(f"paragraph {i} " + "word " * 50 for i in range(2000))  # 500 KB
    pieces = split_text(text, 3000)
    assert len(pieces) == MAX_PIECES
    assert all(len(p) <= 3000 for p in pieces)
    assert pieces[-1].endswith("…") and pieces[0].startswith("paragraph 0 ")
    code = "```\n" + "x = 1\n" * 20_000 + "```"
    pieces = split_text(code, 500, max_pieces=3)
    assert len(pieces) == 3 and all(len(p) <= 500 for p in pieces)
    assert pieces[-1].endswith("```\n…")  # the cut code block is still closed
