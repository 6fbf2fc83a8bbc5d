"""Markdown (what LLMs and FAQ authors write) to Slack mrkdwn, and splitting long text.

Slack does not render CommonMark: bold is ``*x*``, italics ``_x_``, links ``<url|text>``, there
are no headings, and ``&``, ``<``, ``>`` must be escaped. Code is left alone apart from escaping.

Everything converted here is content (LLM answers a customer can steer, FAQ text, names), so
the only ``<…>`` constructs it can produce are ``http(s)``/``mailto`` links: ``<!channel>``,
``<@U…>``, ``<#C…>`` and ``<!subteam^…>`` would ping people, so a Markdown link to anything else
is shown as plain text and every other ``<``, ``>``, ``&`` is escaped.
"""

from __future__ import annotations

import re

from supportbot.textflow import reflow

_FENCE = re.compile(r"```[^\n`]*\n?(.*?)```", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_AUTOLINK = re.compile(r"<(https?://[^\s<>]+|mailto:[^\s<>]+)>")
_LINK = re.compile(r"!?\[([^\]\n]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC_STAR = re.compile(r"(?<![*\w])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![*\w])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(?!\[)")
_TASK = re.compile(r"^(\s*)[-*+]\s+\[([ xX])\]\s+")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_SAFE_URL = re.compile(r"(?i)(?:https?://|mailto:)[^\s<>|]+")
_TOKEN = re.compile("\x00(\\d+)\x00")
_BOLD_OPEN, _BOLD_CLOSE = "\x01", "\x02"
_MARKERS = str.maketrans("", "", "\x00\x01\x02")


def escape(text: str) -> str:
    """Escape the three characters Slack treats as control sequences."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(markdown: str) -> str:
    """Convert common Markdown to Slack mrkdwn (bold, italics, links, headings, lists, code)."""
    saved: list[str] = []

    def keep(value: str) -> str:
        saved.append(value)
        return f"\x00{len(saved) - 1}\x00"

    # \x00 marks placeholders and \x01/\x02 bold markers below: content may not carry them
    # paragraphs written with hard wraps would show broken mid-sentence: one line each
    text = reflow(markdown).translate(_MARKERS)
    text = _FENCE.sub(lambda m: keep("```\n" + escape(m.group(1).rstrip("\n")) + "\n```"), text)
    text = _INLINE_CODE.sub(lambda m: keep(escape(m.group(0))), text)
    text = _AUTOLINK.sub(lambda m: keep(f"<{_url(m.group(1))}>"), text)
    text = _LINK.sub(lambda m: keep(_link(m.group(2), m.group(1))), text)
    text = escape(text)
    lines = [_line(line) for line in text.split("\n")]
    text = "\n".join(lines)
    text = _BOLD.sub(lambda m: f"{_BOLD_OPEN}{m.group(2)}{_BOLD_CLOSE}", text)
    text = _ITALIC_STAR.sub(lambda m: f"_{m.group(1)}_", text)
    text = _STRIKE.sub(lambda m: f"~{m.group(1)}~", text)
    text = text.replace(_BOLD_OPEN, "*").replace(_BOLD_CLOSE, "*")
    # Placeholders may nest (a link inside bold keeps its own token); expand until stable.
    for _ in range(3):
        text = _TOKEN.sub(lambda m: saved[int(m.group(1))], text)
        if "\x00" not in text:
            break
    return text


def _url(url: str) -> str:
    """A link target with the characters that end or split a Slack link percent-encoded."""
    return url.replace("|", "%7C").replace("<", "%3C").replace(">", "%3E")


def _link(url: str, label: str) -> str:
    label = escape(label.strip()).replace("|", "¦")
    safe = _url(url)
    if not _SAFE_URL.fullmatch(safe):
        # not a web or mail address (``!channel``, ``@U…``, ``#C…``, ``javascript:``): text only
        target = escape(url)
        return f"{label} ({target})" if label and label != target else target
    return f"<{safe}|{label}>" if label and label != safe else f"<{safe}>"


def _line(line: str) -> str:
    if m := _HEADING.match(line):
        # Slack has no headings: a bold line. Inner bold markers would end it early.
        title = re.sub(r"\*\*|__", "", m.group(1)).strip()
        return f"{_BOLD_OPEN}{title}{_BOLD_CLOSE}"
    if _RULE.match(line):
        return "──────────"
    if m := _TASK.match(line):
        box = "☑" if m.group(2).lower() == "x" else "☐"
        return f"{m.group(1)}{box} {line[m.end() :]}"
    if m := _BULLET.match(line):
        return f"{m.group(1)}• {line[m.end() :]}"
    if line.startswith("&gt; ") or line == "&gt;":
        return ">" + line[4:]
    return line


MAX_PIECES = 10  # messages per reply at most: a runaway answer must not flood a channel
MORE = "\n…"  # ends the last piece when the text had to be cut short


def split_text(text: str, limit: int, max_pieces: int = MAX_PIECES) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` characters at natural boundaries.

    Prefers paragraph breaks, then line breaks, then spaces; a code block cut in two is closed
    at the end of one piece and reopened at the start of the next so both still render. At most
    ``max_pieces`` pieces: the rest of a longer text is dropped and the last piece ends in "…".
    """
    if limit < 20:
        raise ValueError("limit too small")
    if len(text) <= limit:
        return [text] if text else []
    budget = limit - 8  # room for a closing/opening fence
    pieces: list[str] = []
    rest = text
    reopen = False
    while rest:
        if reopen:
            rest = "```\n" + rest
        if len(rest) <= limit:
            pieces.append(rest)
            break
        final = len(pieces) >= max_pieces - 1
        cut = _cut_point(rest, budget - len(MORE) if final else budget)
        piece, rest = rest[:cut].rstrip(), rest[cut:].lstrip("\n")
        reopen = piece.count("```") % 2 == 1
        if reopen:
            last = piece.rfind("```")
            if not piece[last + 3 :].strip():  # the piece ends right at an opening fence
                piece = piece[:last].rstrip()
            else:
                piece += "\n```"
        if final:
            pieces.append(piece + MORE)
            break
        if piece.strip():
            pieces.append(piece)
    return pieces


def _cut_point(text: str, budget: int) -> int:
    window = text[:budget]
    for sep in ("\n\n", "\n", " "):
        idx = window.rfind(sep)
        if idx > budget // 3:
            return idx + len(sep)
    # Do not cut inside a <url|label> link or an &amp; entity when a hard cut is needed.
    lt, gt = window.rfind("<"), window.rfind(">")
    if lt > gt and lt > budget // 3:
        return lt
    amp = window.rfind("&")
    if amp > budget - 6 and ";" not in window[amp:]:
        return amp
    return budget
