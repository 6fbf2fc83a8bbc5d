"""Client for any OpenAI-compatible chat completions server (OpenAI, Azure, Ollama, vLLM, ...)."""

from supportbot.llm.client import Completion, LLMClient
from supportbot.llm.errors import (
    LLMAuthError,
    LLMBadResponse,
    LLMContextTooLong,
    LLMError,
    LLMUnavailable,
)
from supportbot.llm.tokens import estimate_prompt_tokens, estimate_tokens, shorten_history

__all__ = [
    "Completion",
    "LLMAuthError",
    "LLMBadResponse",
    "LLMClient",
    "LLMContextTooLong",
    "LLMError",
    "LLMUnavailable",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "shorten_history",
]
