"""Telegram adapter (python-telegram-bot v22): polling or webhook, staff topics for handoff."""

from supportbot.adapters.telegram.adapter import TelegramAdapter

__all__ = ["TelegramAdapter"]
