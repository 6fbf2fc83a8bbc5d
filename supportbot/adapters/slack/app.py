"""The Bolt app and its listeners: decide who the bot answers, then hand off to the engine.

Listeners only parse the payload and queue the work (the adapter's worker pool), so Bolt runs
them inline before it answers (``process_before_response=True``: no extra task per request and
no polling for ``ack()``), and the answer never waits for the engine or the database.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from supportbot.engine.locks import KeyedLocks
from supportbot.engine.types import ConversationView, IncomingMessage

from .desk import ACTION_PREFIX, SlackDesk
from .events import SlackText, parse_text_event, strip_mention
from .feedback import FEEDBACK_PREFIX, handle_feedback, offer_feedback
from .sink import SlackPoster, SlackSink

if TYPE_CHECKING:
    from supportbot.engine import Engine

log = logging.getLogger(__name__)

PLATFORM = "slack"
Spawn = Callable[[Coroutine[Any, Any, Any]], None]
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")


def build_app(client: AsyncWebClient, signing_secret: str, listeners: SlackListeners) -> AsyncApp:
    """A Bolt app with request verification on (Bolt skips it only for Socket Mode frames)."""
    app = AsyncApp(
        client=client,
        signing_secret=signing_secret,
        process_before_response=True,
        logger=logging.getLogger("supportbot.slack.bolt"),
    )

    # Listeners run before the response: they must not await anything slow, and must not raise
    # (a 500 makes Slack retry an event we could not read anyway).
    @app.event("message")
    async def on_message(body: dict[str, Any], event: dict[str, Any], context: Any) -> None:
        with _logged("message event"):
            listeners.on_event(body, event, context, mentioned=False)

    @app.event("app_mention")
    async def on_mention(body: dict[str, Any], event: dict[str, Any], context: Any) -> None:
        with _logged("app_mention event"):
            listeners.on_event(body, event, context, mentioned=True)

    @app.action(re.compile(f"^{ACTION_PREFIX}"))
    async def on_action(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        with _logged("staff button"):
            listeners.on_action(body)

    @app.action(re.compile(f"^{FEEDBACK_PREFIX}"))
    async def on_feedback(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        with _logged("feedback button"):
            listeners.on_feedback(body)

    return app


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
    try:
        yield
    except Exception:
        log.exception("could not read a slack %s", what)


class SlackListeners:
    """Routing rules: DMs, @mentions, follow-ups in the bot's threads, support channels, staff."""

    def __init__(
        self,
        engine: Engine,
        poster: SlackPoster,
        desk: SlackDesk,
        *,
        support_channels: list[str],
        spawn: Spawn,
        stream_interval: float = 1.0,
    ) -> None:
        self.engine = engine
        self.poster = poster
        self.desk = desk
        self.spawn = spawn
        self.stream_interval = stream_interval
        self.support_ids = {c for c in support_channels if _CHANNEL_ID.match(c)}
        self.support_names = {c.lstrip("#").lower() for c in support_channels} - self.support_ids
        self._names: dict[str, str] = {}
        self._channel_names: dict[str, str] = {}
        self._order = KeyedLocks()

    # -- entry points (called by Bolt listeners; must not block) --------------------------

    def on_event(
        self, body: dict[str, Any], event: dict[str, Any], context: Any, *, mentioned: bool
    ) -> None:
        text = parse_text_event(event, body.get("team_id"), context.bot_user_id, context.bot_id)
        if text is None:
            return
        self.spawn(self.route(text, mentioned=mentioned, bot_user_id=context.bot_user_id))

    def on_action(self, body: dict[str, Any]) -> None:
        self.spawn(self.desk.handle_action(body))

    def on_feedback(self, body: dict[str, Any]) -> None:
        self.spawn(handle_feedback(self.engine, self.poster, body))

    # -- routing ----------------------------------------------------------------------------

    async def route(self, t: SlackText, *, mentioned: bool, bot_user_id: str | None) -> None:
        # Take the thread's turn before anything awaits (user names, lookups), so one thread's
        # messages reach the engine in the order Slack delivered them.
        async with self._order.hold(t.thread_key):
            await self._route(t, mentioned=mentioned, bot_user_id=bot_user_id)

    async def _route(self, t: SlackText, *, mentioned: bool, bot_user_id: str | None) -> None:
        if self.desk.staff_channel and t.channel == self.desk.staff_channel:
            return  # staff talk among themselves there
        if self.desk.is_staff(t.user) and t.thread_ts and not t.is_dm:
            conv = await self.engine.find_conversation(PLATFORM, t.thread_key)
            if conv is not None:
                await self._staff_reply(conv, t, bot_user_id)
                return
        if not await self._addressed(t, mentioned=mentioned, bot_user_id=bot_user_id):
            return
        msg = IncomingMessage(
            platform=PLATFORM,
            thread_key=t.thread_key,
            customer_id=t.user,
            text=strip_mention(t.text, bot_user_id),
            message_id=t.message_id,
            customer_name=await self._customer_name(t.user),
            workspace=t.team,
            received_at=t.received_at,
        )
        sink = SlackSink(
            self.poster, t.channel, t.reply_thread_ts, stream_interval=self.stream_interval
        )
        reply = await self.engine.handle(msg, sink)
        await offer_feedback(self.poster, sink, reply)

    async def _addressed(self, t: SlackText, *, mentioned: bool, bot_user_id: str | None) -> bool:
        if mentioned or t.is_dm:
            return True
        if t.mentions(bot_user_id):
            return False  # the app_mention delivery of this message answers it
        if t.thread_ts:
            return await self.engine.find_conversation(PLATFORM, t.thread_key) is not None
        if self.desk.is_staff(t.user):
            return False  # staff posting in a support channel are not customers
        return await self._is_support_channel(t.channel)

    async def _staff_reply(
        self, conv: ConversationView, t: SlackText, bot_user_id: str | None
    ) -> None:
        # message + app_mention (and Slack's retries) deliver it more than once: store it once.
        if not await self.engine.claim_event(PLATFORM, f"staff:{t.message_id}"):
            return
        log.info("staff reply in customer thread", extra={"conversation": conv.id})
        await self.engine.staff_message(
            conv.id, f"slack:{t.user}", strip_mention(t.text, bot_user_id)
        )

    async def _is_support_channel(self, channel: str) -> bool:
        if channel in self.support_ids:
            return True
        if not self.support_names:
            return False
        name = self._channel_names.get(channel)
        if name is None:
            try:
                resp = await self.poster.call("conversations.info", channel=channel)
                name = str((resp.get("channel") or {}).get("name") or "").lower()
            except SlackApiError as exc:
                log.warning("conversations.info failed: %s", exc.response.get("error"))
                return False
            self._channel_names[channel] = name
        return name in self.support_names

    async def _customer_name(self, user: str) -> str:
        if user in self._names:
            return self._names[user]
        try:
            resp = await self.poster.call("users.info", user=user)
        except SlackApiError as exc:
            log.warning("users.info failed: %s", exc.response.get("error"))
            return ""
        info = resp.get("user") or {}
        profile = info.get("profile") or {}
        name = profile.get("display_name") or profile.get("real_name") or info.get("name") or ""
        if len(self._names) > 5000:
            self._names.clear()
        self._names[user] = name
        return name

    # -- unprompted messages ------------------------------------------------------------------

    def sink_for(self, conversation: ConversationView) -> SlackSink:
        """Reach a conversation's thread without an incoming event (hand-back, recovery)."""
        parts = conversation.thread_key.split(":")
        channel = parts[1] if len(parts) > 1 else parts[0]
        thread_ts = parts[2] if len(parts) > 2 else None
        return SlackSink(self.poster, channel, thread_ts, stream_interval=self.stream_interval)
