"""Prompt templates staff edit: the system prompt and the bot's own words."""

from supportbot.prompts.library import PromptLibrary, Snippet

__all__ = ["PromptLibrary", "Snippet"]
