"""Re-flow Markdown paragraphs before a platform shows them.

FAQ files (and many LLM answers) are written with hard line breaks every ~80 characters. In
Markdown a single newline inside a paragraph is just a space, but Slack and Telegram show it as
a line break, so answers arrive broken mid-sentence. :func:`reflow` joins the lines of each
paragraph and leaves every line that means something on its own exactly as it was: list items,
headings, quotes, table rows, rules, fenced and indented code, and Markdown hard breaks (two
trailing spaces or a backslash).

Pure, and a function of the whole text, so a streamed answer is re-flowed from its raw Markdown
each time it grows (idempotent too, except that a hard break's marker is dropped once).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["reflow"]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d{1,9}[.)])(?:\s+|$)")
_HEADING = re.compile(r"^ {0,3}#{1,6}(?:\s|$)")
_QUOTE = re.compile(r"^ {0,3}>")
_TABLE_ROW = re.compile(r"^\s*\|")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)+\|?\s*$")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_INDENTED_CODE = re.compile(r"^(?: {4}|\t)")


def reflow(text: str) -> str:
    """``text`` with each paragraph's single newlines turned into spaces (none between CJK
    characters); structure and code keep their lines."""
    out: list[str] = []
    fence: str | None = None  # the opening run of backticks/tildes while inside a fence
    joinable = ""  # what the next plain line may continue: "paragraph", "item" or ""
    in_code = False  # inside an indented code block (started after a blank line)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for number, line in enumerate(lines, 1):
        if fence is not None:
            out.append(line)
            stripped = line.strip()
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                fence = None
            continue
        opening = _FENCE.match(line)
        if opening:
            fence = opening.group(1)
            out.append(line)
            joinable, in_code = "", False
            continue
        if not line.strip():
            out.append(line)
            joinable = ""
            continue
        indented = bool(_INDENTED_CODE.match(line))
        if indented and (in_code or (not joinable and _after_blank(out))):
            out.append(line)  # indented code keeps its lines
            in_code = True
            continue
        in_code = False
        if _standalone(line):
            out.append(line)
        elif joinable == "paragraph" or (joinable == "item" and line[:1].isspace()):
            out[-1] = _join(out[-1], line)  # an item continues only on an indented line
        else:
            out.append(line)
        joinable = _continues(out[-1])
        if number < len(lines) and _hard_break(out[-1]):  # the last line breaks before nothing
            out[-1] = _drop_break_marker(out[-1])
            joinable = ""
    return "\n".join(out)


def _after_blank(out: list[str]) -> bool:
    return not out or not out[-1].strip()


def _standalone(line: str) -> bool:
    """Lines that start a block of their own (never appended to the previous line)."""
    return bool(_LIST_ITEM.match(line) or _HEADING.match(line) or _QUOTE.match(line)
                or _TABLE_ROW.match(line) or _TABLE_RULE.match(line) or _RULE.match(line))


def _continues(line: str) -> str:
    """What a following plain line may continue: paragraph text (any line), a list item (an
    indented line), or nothing after headings, tables, rules and quotes (one line each)."""
    if _LIST_ITEM.match(line):
        return "item"
    if (_HEADING.match(line) or _QUOTE.match(line) or _TABLE_ROW.match(line)
            or _TABLE_RULE.match(line) or _RULE.match(line)):
        return ""
    return "paragraph"


def _hard_break(line: str) -> bool:
    return line.endswith("  ") or (line.endswith("\\") and not line.endswith("\\\\"))


def _drop_break_marker(line: str) -> str:
    return line[:-1] if line.endswith("\\") else line.rstrip(" ")


def _join(previous: str, line: str) -> str:
    left, right = previous.rstrip(), line.strip()
    if left and right and _wide(left[-1]) and _wide(right[0]):
        return left + right  # Chinese and Japanese put no space between lines
    return f"{left} {right}"


def _wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")
