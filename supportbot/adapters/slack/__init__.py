"""Slack adapter (slack-bolt): Socket Mode or the HTTP Events API, replies, staff desk."""

from supportbot.adapters.slack.adapter import SlackAdapter

__all__ = ["SlackAdapter"]
