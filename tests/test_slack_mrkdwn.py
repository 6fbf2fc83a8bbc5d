"""Markdown to Slack mrkdwn, and splitting long text at natural boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supportbot.adapters.slack.mrkdwn import escape, split_text, to_mrkdwn


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
    pieces = split_text(text, limit)
    assert all(len(p) <= limit for p in pieces)

    # Nothing but whitespace and the fences we add may be lost or gained.
    def core(s: str) -> str:
        return "".join(s.replace("```", "").split())

    assert core("".join(pieces)) == core(text)
