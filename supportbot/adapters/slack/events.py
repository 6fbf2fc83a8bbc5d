"""Pure translation of Slack event payloads: which ones are customer text, and their keys.

Kept free of I/O so the routing rules (who the bot answers, where) are easy to test.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from supportbot.engine.types import Attachment

#: Message subtypes that still carry text a person typed; everything else (edits, deletions,
#: joins, topic changes, bot posts…) is not customer text.
TEXT_SUBTYPES = frozenset({None, "", "file_share", "thread_broadcast", "me_message"})

log = logging.getLogger(__name__)

MAX_FILES = 10  # Slack attaches at most 10 files to a message
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")


@dataclass(frozen=True, slots=True)
class SlackText:
    """A person's message in a form the adapter can route."""

    team: str
    channel: str
    channel_type: str  # im | mpim | channel | group | "" (unknown, e.g. app_mention)
    user: str
    text: str
    ts: str
    thread_ts: str | None  # the thread it belongs to, None for a top-level message
    has_files: bool = False  # attachments came with it (file_share)
    files: tuple[Attachment, ...] = ()  # those of them the bot can fetch (``files_of``)

    @property
    def is_dm(self) -> bool:
        return self.channel_type == "im" or (not self.channel_type and self.channel[:1] == "D")

    @property
    def message_id(self) -> str:
        """Stable across ``message`` and ``app_mention`` deliveries of the same message."""
        return f"{self.channel}:{self.ts}"

    @property
    def thread_key(self) -> str:
        """workspace + channel + thread; a DM outside threads is one conversation."""
        if self.is_dm and not self.thread_ts:
            return f"{self.team}:{self.channel}"
        return f"{self.team}:{self.channel}:{self.thread_ts or self.ts}"

    @property
    def reply_thread_ts(self) -> str | None:
        """Where replies go: the thread (started at this message if top-level); DMs stay flat."""
        if self.is_dm and not self.thread_ts:
            return None
        return self.thread_ts or self.ts

    @property
    def received_at(self) -> datetime | None:
        try:
            return datetime.fromtimestamp(float(self.ts), tz=UTC)
        except (ValueError, OverflowError, OSError):
            return None

    def mentions(self, user_id: str | None) -> bool:
        return bool(user_id) and any(m == user_id for m in _MENTION.findall(self.text))


def parse_text_event(
    event: object, team_id: str | None, bot_user_id: str | None, bot_id: str | None
) -> SlackText | None:
    """Return the message if a person wrote it, else ``None`` (bots, edits, deletions…).

    Signed payloads can still carry anything: a field of the wrong type makes the event
    "not customer text" (one log line), never an exception."""
    if not isinstance(event, dict) or event.get("type") not in ("message", "app_mention"):
        return None
    subtype = event.get("subtype")
    if (subtype is not None and not isinstance(subtype, str)) or subtype not in TEXT_SUBTYPES:
        return None
    if event.get("hidden"):
        return None
    user = event.get("user")
    if not user or event.get("bot_id") or event.get("bot_profile"):
        return None
    if user == bot_user_id or (bot_id and event.get("bot_id") == bot_id):
        return None
    channel, ts = event.get("channel"), event.get("ts")
    if not channel or not ts:
        return None
    thread_ts = event.get("thread_ts") or None
    text = event.get("text") or ""
    team = event.get("team") or team_id or ""
    channel_type = event.get("channel_type") or ""
    if not all(isinstance(v, str) for v in (user, channel, ts, text, team, channel_type)) or (
        thread_ts is not None and not isinstance(thread_ts, str)
    ):
        log.warning("ignored a slack message event with fields of the wrong type")
        return None
    if thread_ts == ts:  # a thread's parent message is top-level
        thread_ts = None
    return SlackText(
        team=team,
        channel=channel,
        channel_type=channel_type,
        user=user,
        text=text,
        ts=ts,
        thread_ts=thread_ts,
        has_files=bool(event.get("files")),
        files=files_of(event),
    )


def files_of(event: dict[str, Any]) -> tuple[Attachment, ...]:
    """The files of a ``file_share`` message event; malformed entries and files Slack no
    longer shows (``tombstone``, ``hidden_by_limit``) are left out."""
    raw = event.get("files")
    if not isinstance(raw, list):
        return ()
    found = []
    for item in raw[:MAX_FILES]:
        if not isinstance(item, dict) or item.get("mode") in ("tombstone", "hidden_by_limit"):
            continue
        file_id, url = item.get("id"), item.get("url_private_download") or item.get("url_private")
        mime, name, size = item.get("mimetype") or "", item.get("name") or "", item.get("size")
        if not (isinstance(file_id, str) and isinstance(url, str) and isinstance(mime, str)
                and isinstance(name, str)):
            continue
        found.append(Attachment(
            file_id=file_id, kind="image" if mime.startswith("image/") else "file", mime=mime,
            size=size if isinstance(size, int) and not isinstance(size, bool) else None,
            filename=name, url=url,
        ))
    return tuple(found)


def parse_action(body: object) -> tuple[str, str] | None:
    """``(user id, action id)`` of a button press, or ``None`` (one log line) when the
    payload does not have the shape Slack gives one (the handlers rely on that shape)."""
    if isinstance(body, dict):
        user, actions = body.get("user"), body.get("actions")
        if isinstance(user, dict) and isinstance(actions, list) and actions:
            action = actions[0]
            parts = [body.get(k) or {} for k in ("channel", "container", "message")]
            if (
                isinstance(action, dict)
                and _is_str(user.get("id"))
                and _is_str(action.get("action_id"))
                and _is_str(action.get("value", ""), limit=18)  # ids fit in a BIGINT
                and all(isinstance(p, dict) for p in parts)
                and all(_is_str(p.get(k, ""), limit=64) for p in parts
                        for k in ("id", "channel_id", "thread_ts", "ts"))
            ):
                return user["id"], action["action_id"]
    log.warning("ignored a slack button payload of an unknown shape")
    return None


def _is_str(value: object, limit: int = 255) -> bool:
    return isinstance(value, str) and len(value) <= limit


def strip_mention(text: str, bot_user_id: str | None) -> str:
    """Remove the bot's own @mention so the engine sees the question only."""
    if not bot_user_id:
        return text.strip()
    cleaned = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>[:,]?", "", text)
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip()
