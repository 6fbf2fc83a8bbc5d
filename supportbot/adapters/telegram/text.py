"""Telegram text: Markdown as an LLM writes it -> Telegram HTML, and splitting at Telegram's
4096-unit limit (UTF-16 code units) without breaking a code block in two.

Pure functions, shared by the customer sink and the staff desk.
"""

from __future__ import annotations

import html
import re

from supportbot.textflow import reflow

MAX_UNITS = 4096  # Telegram's limit, in UTF-16 code units of visible text
FENCE = "```"


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_once(text: str, limit: int) -> tuple[str, int, bool]:
    """Cut the head off ``text``: (head, index where the rest starts, head left a fence open)."""
    budget = limit - len(FENCE) - 1  # room to close a fence cut in two
    cut = budget
    while utf16_len(text[:cut]) > budget:
        cut -= utf16_len(text[:cut]) - budget
    window = text[:cut]
    for sep in ("\n\n", "\n", " "):
        at = window.rfind(sep)
        if at > cut // 3:
            cut = at
            break
    head = text[:cut].rstrip()
    fence_open = head.count(FENCE) % 2 == 1
    return (f"{head}\n{FENCE}" if fence_open else head), cut, fence_open


MAX_PARTS = 10  # messages per reply at most: a runaway answer must not flood a chat


def split_text(text: str, limit: int = MAX_UNITS, max_parts: int = MAX_PARTS) -> list[str]:
    """Split at paragraph, line, then word boundaries so each part fits ``limit`` UTF-16 units.

    A code fence cut in two is closed and reopened so both halves still render as code. At most
    ``max_parts`` parts: the rest of a longer text is dropped and the last part ends in "…".
    """
    parts: list[str] = []
    text, prefix = text.strip(), ""
    while text:
        text = prefix + text
        if utf16_len(text) <= limit:
            parts.append(text)
            break
        if len(parts) >= max_parts - 1:
            parts.append(split_once(text, limit - 2)[0] + "\n…")
            break
        head, rest_at, fence_open = split_once(text, limit)
        parts.append(head)
        text, prefix = text[rest_at:].strip(), (f"{FENCE}\n" if fence_open else "")
    return [p for p in parts if p.strip()]


_MD = re.compile(
    r"```[^\n`]*\n(?P<pre>.*?)```"
    r"|`(?P<code>[^`\n]+)`"
    r"|\[(?P<label>[^\]\n]+)\]\((?P<url>https?://[^\s)]+)\)"
    r"|\*\*(?P<bold>[^\n]+?)\*\*"
    r"|__(?P<bold2>[^\n]+?)__"
    r"|(?<![\w*])\*(?P<italic>[^*\n]+?)\*(?![\w*])"
    r"|^#{1,6}[ \t]+(?P<heading>[^\n]+)$",
    re.DOTALL | re.MULTILINE,
)


def markdown_to_html(text: str) -> str:
    """Render the Markdown an LLM writes as Telegram HTML; everything else is escaped.
    Paragraphs written with hard wraps become one line each (Telegram shows every newline)."""
    text = reflow(text)
    out: list[str] = []
    pos = 0
    for m in _MD.finditer(text):
        out.append(html.escape(text[pos : m.start()], quote=False))
        pos = m.end()
        g = m.groupdict()
        if g["pre"] is not None:
            out.append(f"<pre>{html.escape(g['pre'].rstrip(), quote=False)}</pre>")
        elif g["code"] is not None:
            out.append(f"<code>{html.escape(g['code'], quote=False)}</code>")
        elif g["label"] is not None:
            url = html.escape(g["url"], quote=True)
            out.append(f'<a href="{url}">{html.escape(g["label"], quote=False)}</a>')
        elif g["italic"] is not None:
            out.append(f"<i>{html.escape(g['italic'], quote=False)}</i>")
        else:
            inner = g["bold"] or g["bold2"] or g["heading"] or ""
            out.append(f"<b>{html.escape(inner, quote=False)}</b>")
    out.append(html.escape(text[pos:], quote=False))
    return "".join(out)
