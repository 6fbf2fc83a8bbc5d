"""Errors the LLM client raises, split by what the caller should do about them.

Messages never contain the API key or extra header values: the client scrubs them first.
"""

from __future__ import annotations


class LLMError(Exception):
    """Base class; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LLMAuthError(LLMError):
    """401/403: the key or the endpoint is misconfigured; retrying cannot help."""


class LLMUnavailable(LLMError):
    """The server could not be reached or kept failing until retries or the deadline ran out."""


class LLMBadResponse(LLMError):
    """The server answered something unusable: malformed JSON/SSE, a cut stream, another 4xx.

    ``partial_text`` holds whatever was already streamed to the caller (never re-streamed).
    """

    def __init__(self, message: str, *, status: int | None = None, partial_text: str = "") -> None:
        super().__init__(message, status=status)
        self.partial_text = partial_text


class LLMContextTooLong(LLMBadResponse):
    """The prompt did not fit even after dropping the older half of the history."""
