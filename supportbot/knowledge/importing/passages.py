"""Imported documents as passages: what retrieval ranks and what the prompt quotes.

A help-center page answers many questions; ranked as one entry, a long page would match almost
anything and the prompt would get the whole page. So a document is split at its headings, and a
section longer than ``MAX_CHARS`` is cut at paragraph (then sentence) boundaries with an overlap
of ``OVERLAP_CHARS``, so a sentence cut in two is still whole in one passage. Each passage is a
``FaqEntry`` of kind ``passage``: its title ("Page — Section") is what the bot cites, its text
what the prompt quotes, its url the page's.

This module only depends on ``models``: the loader imports it for every Markdown file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supportbot.knowledge.models import FaqEntry, Hit
from supportbot.problems import Problem

KIND = "imported"  # front-matter ``kind`` of an imported document
MAX_CHARS = 1200  # a passage is at most about this long (a few paragraphs)
MIN_CHARS = 200  # a shorter section is merged into the next one under the same page
OVERLAP_CHARS = 200  # repeated at the start of the next piece of a cut section
EXCERPT_CHARS = 300  # what the offline bot quotes

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
_FENCE = re.compile(r"^(```|~~~).*?(?:^\1[ \t]*$|\Z)", re.M | re.S)
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")


@dataclass(frozen=True, slots=True)
class Section:
    heading: str  # "" before the first heading
    text: str


def is_imported(meta: Any) -> bool:
    """True for the front matter of an imported document (not an FAQ entry)."""
    return isinstance(meta, dict) and meta.get("kind") == KIND


def sections(body: str) -> list[Section]:
    """The document cut at its Markdown headings; the heading path names each section."""
    out: list[Section] = []
    trail: list[tuple[int, str]] = []  # (level, heading) of the enclosing headings
    pos = 0
    heading = ""
    fences = [(f.start(), f.end()) for f in _FENCE.finditer(body)]
    for m in _HEADING.finditer(body):
        if any(a <= m.start() < b for a, b in fences):
            continue  # a "# comment" inside a code block
        out.append(Section(heading, body[pos : m.start()].strip()))
        level, title = len(m.group(1)), m.group(2).strip()
        trail = [(lv, t) for lv, t in trail if lv < level] + [(level, title)]
        heading = " › ".join(t for lv, t in trail if lv > 1) or title
        pos = m.end()
    out.append(Section(heading, body[pos:].strip()))
    return [s for s in out if s.text]


def _pieces(text: str, limit: int) -> list[str]:
    """Paragraphs (then sentences, then hard cuts) no longer than ``limit``."""
    out: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if not para:
            continue
        if len(para) <= limit:
            out.append(para)
            continue
        for sentence in _SENTENCE_END.split(para):
            while len(sentence) > limit:
                out.append(sentence[:limit])
                sentence = sentence[limit:]
            if sentence.strip():
                out.append(sentence.strip())
    return out


def chunk(text: str, max_chars: int = MAX_CHARS, overlap: int = OVERLAP_CHARS) -> list[str]:
    """``text`` cut into chunks of at most about ``max_chars``, consecutive ones overlapping."""
    if len(text) <= max_chars:
        return [text]
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for piece in _pieces(text, max_chars - overlap):
        if current and size + len(piece) + 2 > max_chars:
            chunks.append("\n\n".join(current))
            tail = chunks[-1][-overlap:] if overlap else ""
            # start the overlap at a word boundary
            cut = tail.find(" ")
            tail = tail[cut + 1 :] if 0 <= cut < len(tail) - 1 else tail
            current, size = ([tail], len(tail)) if tail else ([], 0)
        current.append(piece)
        size += len(piece) + 2
    if current:
        chunks.append("\n\n".join(current))
    return chunks


def split(body: str, max_chars: int = MAX_CHARS) -> list[tuple[str, str]]:
    """(section heading, passage text) for a document body, in order."""
    merged: list[Section] = []
    for s in sections(body):
        if merged and len(merged[-1].text) < MIN_CHARS and not merged[-1].heading:
            # a short preamble before the first heading belongs with what follows
            s = Section(s.heading, f"{merged.pop().text}\n\n{s.text}")
        merged.append(s)
    return [(s.heading, piece) for s in merged for piece in chunk(s.text, max_chars)]


def passage_title(title: str, heading: str) -> str:
    if not heading or heading.casefold() == title.casefold():
        return title
    return f"{title} — {heading}"


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The start of a passage as one line, cut at a sentence or word end, for the offline bot."""
    flat = " ".join(re.sub(r"^#+\s+|[*_`]", "", text, flags=re.M).split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit]
    end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    if end >= limit // 2:
        return cut[: end + 1]
    return cut[: cut.rfind(" ")].rstrip(",;:") + " …"


def passage_entries(
    meta: dict[str, Any], body: str, *, base_id: str, path: Path, problems: list[Problem]
) -> list[FaqEntry]:
    """The passages of one imported document, as entries the index ranks like FAQ entries."""
    title = meta.get("title")
    source = meta.get("source")
    if not isinstance(title, str) or not title.strip():
        problems.append(Problem(path, 1, "imported document without a title"))
        return []
    if source is not None and not isinstance(source, str):
        problems.append(Problem(path, 1, "source must be a string"))
        return []
    lang = meta.get("lang") if isinstance(meta.get("lang"), str) else None
    tags = meta.get("tags") or []
    tags = tuple(str(t) for t in tags) if isinstance(tags, list) else ()
    url = source if source and source.startswith(("http://", "https://")) else None
    title = " ".join(title.split())
    return [
        FaqEntry(
            id=f"{base_id}#{i}",
            question=passage_title(title, heading),
            answer=text,
            tags=tags,
            lang=lang,
            url=url,
            path=path,
            line=1,
            kind="passage",
        )
        for i, (heading, text) in enumerate(split(body))
    ]


def offline_answer(confident: list[Hit], message: Callable[..., str]) -> tuple[Hit, str]:
    """What the bot says without an LLM, given the confident hits (best first, not empty).

    A staff-written FAQ entry is a complete answer and wins over any passage; a passage is part
    of a page, so it is quoted briefly with its title and link (``message("passage_excerpt",
    title=..., excerpt=..., url=...)`` renders the bot's words for it)."""
    best = next((h for h in confident if h.entry.kind != "passage"), confident[0])
    entry = best.entry
    if entry.kind != "passage":
        return best, entry.answer.strip()
    text = message("passage_excerpt", title=entry.question, excerpt=excerpt(entry.answer),
                   url=entry.url or "")
    return best, text
