"""The app manifest asks for what the adapter uses: events, scopes, interactivity."""

from __future__ import annotations

from pathlib import Path

import yaml

MANIFEST = Path(__file__).resolve().parents[1] / "slack" / "manifest.yml"


def test_manifest_covers_the_adapter() -> None:
    data = yaml.safe_load(MANIFEST.read_text())
    settings = data["settings"]
    events = set(settings["event_subscriptions"]["bot_events"])
    assert {"app_mention", "message.im", "message.channels", "message.groups"} <= events
    scopes = set(data["oauth_config"]["scopes"]["bot"])
    assert {
        "app_mentions:read",
        "chat:write",
        "im:history",
        "channels:history",
        "groups:history",
        "users:read",
        "channels:read",
    } <= scopes
    assert settings["interactivity"]["is_enabled"] is True
    for url in (
        settings["event_subscriptions"]["request_url"],
        settings["interactivity"]["request_url"],
    ):
        assert url.endswith("/slack/events")
    assert data["features"]["app_home"]["messages_tab_enabled"] is True


def test_manifest_asks_for_assistant_threads() -> None:
    """The AI app's panel: the assistant view, its scope and its events (Bolt's AsyncAssistant
    takes assistant_thread_started / _context_changed and the customer's message.im in it)."""
    data = yaml.safe_load(MANIFEST.read_text())
    view = data["features"]["assistant_view"]
    assert view["assistant_description"].strip()
    assert 1 <= len(view["suggested_prompts"]) <= 4
    assert all(p["title"].strip() and p["message"].strip() for p in view["suggested_prompts"])
    assert "assistant:write" in data["oauth_config"]["scopes"]["bot"]
    events = set(data["settings"]["event_subscriptions"]["bot_events"])
    assert {"assistant_thread_started", "assistant_thread_context_changed", "message.im"} <= events
