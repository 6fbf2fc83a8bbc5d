"""Turning stored turns into the role-tagged messages an LLM request carries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from supportbot.llm import estimate_tokens


class Turn(Protocol):
    role: str
    text: str


def trim_history(turns: Sequence[Turn], budget: int) -> list[dict[str, str]]:
    """Newest turns first until the token budget is spent, returned oldest first.

    Staff replies are the company speaking, so the model sees them as assistant turns.
    """
    kept: list[dict[str, str]] = []
    spent = 0
    for turn in reversed(turns):
        cost = estimate_tokens(turn.text) + 4
        if spent + cost > budget:
            break
        spent += cost
        role = "user" if turn.role == "user" else "assistant"
        kept.append({"role": role, "content": turn.text})
    kept.reverse()
    while kept and kept[0]["role"] != "user":  # a history should open with the customer
        kept.pop(0)
    return kept
