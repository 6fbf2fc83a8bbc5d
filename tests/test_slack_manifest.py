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
