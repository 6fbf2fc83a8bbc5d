"""Prompt-size helpers: rough token counts and the history cut used on context-length errors."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

Message = Mapping[str, Any]

# Hangul, CJK, kana and full-width forms: roughly one token per character.
_WIDE_CHARS = re.compile(
    "[\u1100-\u11ff\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0002fa1f]"
)


def estimate_tokens(text: str) -> int:
    """~4 characters per token, CJK ~1 per character: good enough for budgets and metrics."""
    if not text:
        return 0
    if text.isascii():  # O(1) in CPython, and most turns are
        return math.ceil(len(text) / 4)
    wide = len(_WIDE_CHARS.findall(text))
    return wide + math.ceil((len(text) - wide) / 4)


def estimate_prompt_tokens(messages: Sequence[Message]) -> int:
    """Per-message overhead of ~4 tokens plus 3 for the reply primer, as OpenAI documents."""
    return 3 + sum(4 + estimate_tokens(_content_text(m.get("content"))) for m in messages)


def shorten_history(messages: Sequence[Message]) -> list[dict[str, Any]] | None:
    """Keep system messages and the last user message; drop the oldest half of the turns between.

    Returns None when there is nothing left to drop.
    """
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last_user is None:
        return None
    middle = [i for i in range(last_user) if messages[i].get("role") != "system"]
    if not middle:
        return None
    dropped = set(middle[: (len(middle) + 1) // 2])
    return [dict(m) for i, m in enumerate(messages) if i not in dropped]


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: count the words, not a picture's base64
        return " ".join(
            str(part.get("text") or "") if part.get("type") == "text" else _IMAGE_STAND_IN
            for part in content if isinstance(part, dict)
        )
    return json.dumps(content, ensure_ascii=False)


# an image part counts as ~85 tokens, as OpenAI bills a low-detail picture
_IMAGE_STAND_IN = "x" * 340
