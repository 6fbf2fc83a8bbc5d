"""Structured handoff: the ``hand_off_to_human`` tool offered to the model, and the fallback.

Why a tool rather than only the ``[[HANDOFF]]`` marker: a tool call is a structured field the
model fills in (with a reason staff can read), it cannot leak into the customer's text, and it
works whatever the system prompt says, so a staff-written prompt that forgets the marker
instructions does not silently disable handoff. Not every OpenAI-compatible server takes
``tools`` (older Ollama models, vLLM without ``--enable-auto-tool-choice``, llama.cpp without
``--jinja``): the first 400 that names tools is remembered for that server and model in this
process, and from then on the request goes without them and the system prompt carries the
marker instructions instead (:func:`with_marker_instructions`), which the engine already
understands.

This module knows the wire format only; the client (``supportbot.llm.client``) decides when to
send and read it, and reports the outcome as ``Completion.handoff_reason``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from supportbot.handoff.marker import HANDOFF_MARKER

__all__ = [
    "HANDOFF_TOOL",
    "HANDOFF_TOOL_NAME",
    "ToolCallCollector",
    "forget_rejections",
    "handoff_reason",
    "mentions_tools",
    "note_rejected",
    "tools_rejected",
    "with_marker_instructions",
]

HANDOFF_TOOL_NAME = "hand_off_to_human"
DEFAULT_REASON = "the assistant asked for a person"
_MAX_REASON = 200  # the reason ends up in a 255-character column, after "llm:"

HANDOFF_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": HANDOFF_TOOL_NAME,
        "description": (
            "Hand this conversation to a human member of staff. Call it when the customer asks "
            "for a person, when they are upset with the bot, or when you cannot answer from the "
            "provided information. You may also write a short message telling the customer that "
            "a colleague will take over."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "reason": {
                    "type": "string",
                    "description": "One short sentence for staff: why a person should take over.",
                }
            },
            "required": ["reason"],
        },
    },
}

MARKER_INSTRUCTIONS = (
    "\n\nIf the customer asks for a human, is upset with the bot, or you cannot answer from the "
    f"information you have, write {HANDOFF_MARKER} on its own line at the end of your reply: a "
    "member of staff will then take over the conversation."
)

# --------------------------------------------------------------------------- servers without tools

_lock = threading.Lock()
_rejected: set[tuple[str, str]] = set()  # (chat completions URL, model) that answered 400 to tools
_TOOL_WORDS = re.compile(r"\btools?\b|tool[_ ]?choice|tool[_ ]?call|function[_ ]?call", re.I)


def tools_rejected(url: str, model: str) -> bool:
    """Did this server and model already refuse ``tools`` in this process?"""
    return (url, model) in _rejected


def note_rejected(url: str, model: str) -> None:
    with _lock:
        _rejected.add((url, model))


def forget_rejections() -> None:
    """For tests: start again as if no server had refused tools."""
    with _lock:
        _rejected.clear()


def mentions_tools(*texts: str) -> bool:
    """Does a 400's error body blame the tools? (OpenAI: ``param: tools``; Ollama: "does not
    support tools"; vLLM: '"auto" tool choice requires --enable-auto-tool-choice'; llama.cpp:
    "tools param requires --jinja flag".)"""
    return any(_TOOL_WORDS.search(t) for t in texts if t)


def with_marker_instructions(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Without tools, the marker is the only way to hand off: make sure the system prompt says
    so, even when staff wrote a prompt that does not (a copy; the input is left alone)."""
    if any(HANDOFF_MARKER in str(m.get("content") or "") for m in messages):
        return messages
    out = [dict(m) for m in messages]
    for m in out:
        if m.get("role") == "system" and isinstance(m.get("content"), str):
            m["content"] += MARKER_INSTRUCTIONS
            return out
    return [{"role": "system", "content": MARKER_INSTRUCTIONS.strip()}, *out]


# --------------------------------------------------------------------------- reading tool calls


def handoff_reason(tool_calls: Any) -> str | None:
    """The reason of a ``hand_off_to_human`` call among ``message.tool_calls`` (None if none).

    Arguments that are not valid JSON (small models produce those) still count as a handoff,
    with a generic reason: the model clearly meant to hand off.
    """
    if not isinstance(tool_calls, Sequence) or isinstance(tool_calls, str):
        return None
    for call in tool_calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or function.get("name") != HANDOFF_TOOL_NAME:
            continue
        return _reason(function.get("arguments"))
    return None


def _reason(arguments: Any) -> str:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return DEFAULT_REASON
    reason = arguments.get("reason") if isinstance(arguments, Mapping) else None
    if not isinstance(reason, str) or not reason.strip():
        return DEFAULT_REASON
    reason = " ".join(reason.split())
    return reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 1] + "…"


@dataclass(slots=True)
class ToolCallCollector:
    """Puts streamed ``delta.tool_calls`` fragments back together.

    A stream sends each call's ``id`` and ``function.name`` once, then its ``arguments`` JSON in
    pieces, all keyed by ``index`` (several calls may interleave).
    """

    _calls: dict[int, dict[str, Any]] = field(default_factory=dict)

    def feed(self, fragments: Any) -> None:
        if not isinstance(fragments, Sequence) or isinstance(fragments, str):
            return
        for fragment in fragments:
            if not isinstance(fragment, Mapping):
                continue
            index = fragment.get("index", 0)
            call = self._calls.setdefault(
                index if isinstance(index, int) else 0, {"function": {"name": "", "arguments": ""}}
            )
            function = fragment.get("function")
            if isinstance(function, Mapping):
                if isinstance(function.get("name"), str):
                    call["function"]["name"] += function["name"]
                if isinstance(function.get("arguments"), str):
                    call["function"]["arguments"] += function["arguments"]

    @property
    def calls(self) -> list[dict[str, Any]]:
        return [self._calls[i] for i in sorted(self._calls)]

    def handoff_reason(self) -> str | None:
        return handoff_reason(self.calls)
