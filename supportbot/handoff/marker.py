"""The ``[[HANDOFF]]`` marker: how an LLM without tool calling asks for a person in plain text.

Used when the server rejects the ``hand_off_to_human`` tool (see ``supportbot.llm.tools``) and as
a safety net when a model writes the marker anyway: the engine strips it from what the customer
sees, streamed or not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["HANDOFF_MARKER", "MarkerStreamFilter", "llm_handoff", "split_marker"]

HANDOFF_MARKER = "[[HANDOFF]]"

_MARKER = re.compile(r"[ \t]*\[{1,2}\s*hand[\s_-]?off\s*\]{1,2}", re.IGNORECASE)


def split_marker(text: str) -> tuple[str, bool]:
    """The reply without any ``[[HANDOFF]]`` marker, and whether one was there."""
    cleaned, n = _MARKER.subn("", text)
    if not n:
        return text, False
    return cleaned.strip(), True


def llm_handoff(text: str, completion: object | None = None) -> tuple[str, str | None]:
    """What the customer should see of an LLM answer, and why the model handed off (``None``:
    it did not). The ``hand_off_to_human`` tool call wins (``Completion.handoff_reason``, reason
    ``llm:<the model's reason>``); else a ``[[HANDOFF]]`` marker in the text (reason ``llm``).
    The engine's one place that reads the model's request for a person."""
    cleaned, marked = split_marker(text)
    reason = getattr(completion, "handoff_reason", None)
    if isinstance(reason, str) and reason:
        return cleaned, f"llm:{reason}"
    return cleaned, "llm" if marked else None


@dataclass(slots=True)
class MarkerStreamFilter:
    """Strips the marker from a streamed reply, holding back text that may be its beginning.

    ``feed(delta)`` returns what is safe to show now, ``flush()`` the rest at the end.
    """

    found: bool = False
    _buffer: str = field(default="")

    def feed(self, delta: str) -> str:
        buf = self._buffer + delta
        hold = _possible_marker_start(buf)
        self._buffer = buf[hold:]
        return self._strip(buf[:hold])

    def flush(self) -> str:
        out, self._buffer = self._buffer, ""
        return self._strip(out)

    def _strip(self, text: str) -> str:
        text, n = _MARKER.subn("", text)
        self.found = self.found or bool(n)
        return text


def _possible_marker_start(buf: str) -> int:
    """Index from which ``buf`` might still become a marker (``len(buf)`` if nowhere)."""
    start = max(0, len(buf) - 24)
    for i in range(start, len(buf)):
        if buf[i] != "[":
            continue
        tail = re.sub(r"[\s_-]", "", buf[i:]).lower()
        if "[[handoff]]".startswith(tail) or "[handoff]".startswith(tail):
            # Include spaces right before it: the marker regex removes those too.
            while i > 0 and buf[i - 1] in " \t":
                i -= 1
            return i
    # Trailing spaces too: if a marker follows, they go with it.
    end = len(buf)
    while end > 0 and buf[end - 1] in " \t":
        end -= 1
    return end
