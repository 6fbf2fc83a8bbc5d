"""Client for any OpenAI-compatible chat completions server (OpenAI, Azure, Ollama, vLLM, ...)."""

from supportbot.llm.client import Completion, LLMClient, estimate_tokens, shorten_history
from supportbot.llm.errors import (
    LLMAuthError,
    LLMBadResponse,
    LLMContextTooLong,
    LLMError,
    LLMUnavailable,
)

__all__ = [
    "Completion",
    "LLMAuthError",
    "LLMBadResponse",
    "LLMClient",
    "LLMContextTooLong",
    "LLMError",
    "LLMUnavailable",
    "estimate_tokens",
    "shorten_history",
]
