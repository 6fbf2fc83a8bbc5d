"""The Bolt app and its listeners: decide who the bot answers, store it, then Slack hears "OK".

Bolt runs listeners before it answers (``process_before_response=True``): a customer's message
is stored (``Engine.accept``, one short transaction) inside the listener, so the HTTP 200 or the
Socket Mode envelope ack goes out only for a stored message. Nothing that talks to Slack or the
LLM runs before that (the customer's display name, the answer itself come after, in the
background). If the store fails the listener raises :class:`StoreUnavailable` and the request is
answered 503 (the envelope is not acked), so Slack delivers it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp, AsyncAssistant
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.error import BoltUnhandledRequestError
from slack_bolt.logger.messages import warning_token_skipped
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from supportbot.engine.types import Accepted, ConversationView, IncomingMessage, Reply

from .assistant import AssistantThreads
from .auth import AuthUnavailable, BotAuth
from .desk import ACTION_PREFIX, SlackDesk
from .events import SlackText, parse_action, parse_text_event, strip_mention
from .feedback import FEEDBACK_PREFIX, handle_feedback, offer_feedback
from .sink import SlackPoster, SlackSink

if TYPE_CHECKING:
    from supportbot.engine import Engine

log = logging.getLogger(__name__)

PLATFORM = "slack"
# seconds a message may take to be stored before Slack is answered 503 instead (it waits 3 s)
ACK_BUDGET = 2.5
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
# what a payload Bolt cannot read raises inside its middleware or matchers (a signed request
# with wrong types): refused with 400, where anything else (the network) gets a retry
_SHAPE_ERRORS = (TypeError, KeyError, AttributeError, ValueError, IndexError, RecursionError)


class _NotIgnored(logging.Filter):
    """Drops Bolt's startup warning that the token "will be ignored" when ``authorize`` is
    given: our ``authorize`` answers for that very token, so the warning would only mislead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_token_skipped()


_BOLT_LOG = logging.getLogger("supportbot.slack.bolt")
_BOLT_LOG.addFilter(_NotIgnored())


class StoreUnavailable(Exception):
    """The message could not be stored: Slack must not hear "OK" (503, no envelope ack)."""


def build_app(client: AsyncWebClient, signing_secret: str, listeners: SlackListeners,
              auth: BotAuth) -> AsyncApp:
    """A Bolt app with request verification on (Bolt skips it only for Socket Mode frames),
    authorized from ``auth``'s cached ``auth.test`` (the ack never waits for Slack's API)."""

    async def authorize() -> AuthorizeResult:
        # a plain function: Bolt passes the arguments a function names, and would take a bound
        # method's ``self`` for one
        return await auth.authorize()

    app = AsyncApp(
        client=client,  # its token is the one ``auth`` answers for
        signing_secret=signing_secret,
        process_before_response=True,
        authorize=authorize,
        logger=_BOLT_LOG,
    )

    # Listeners run before the response. They raise only StoreUnavailable (anything else is
    # logged: a retry of an event we could not read would fail the same way).

    # Assistant threads (the AI app's panel): Bolt's middleware takes their events before the
    # listeners below; a customer's message there is routed like any DM message. Workspaces
    # without AI-app features send none of these events (a DM thread reply still matches
    # user_message and is answered as before, without status or title once Slack refuses them).
    assistant = AsyncAssistant(logger=logging.getLogger("supportbot.slack.bolt"))

    @assistant.thread_started
    async def on_thread_started(event: dict[str, Any]) -> None:
        with _logged("assistant_thread_started event"):
            listeners.on_thread_started(event)

    @assistant.thread_context_changed
    async def on_thread_context_changed(event: dict[str, Any]) -> None:
        # replaces Bolt's default, which keeps the context in the thread via Slack's history
        with _logged("assistant_thread_context_changed event"):
            listeners.assistant.remember_context(event)

    @assistant.user_message
    async def on_assistant_message(body: dict[str, Any], event: dict[str, Any],
                                   context: Any) -> None:
        with _logged("assistant thread message"):
            await listeners.on_event(body, event, context, mentioned=False, assistant=True)

    app.assistant(assistant)

    @app.event("message")
    async def on_message(body: dict[str, Any], event: dict[str, Any], context: Any) -> None:
        with _logged("message event"):
            await listeners.on_event(body, event, context, mentioned=False)

    @app.event("app_mention")
    async def on_mention(body: dict[str, Any], event: dict[str, Any], context: Any) -> None:
        with _logged("app_mention event"):
            await listeners.on_event(body, event, context, mentioned=True)

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

    @app.error
    async def on_error(error: Exception) -> BoltResponse | None:
        if isinstance(error, StoreUnavailable):
            log.warning("could not store a slack event; asking Slack to retry: %s", error)
            return BoltResponse(status=503, body="", headers={"Retry-After": "5"})
        if isinstance(error, AuthUnavailable):
            log.warning("could not authorize a slack event; asking Slack to retry: %s", error)
            return BoltResponse(status=503, body="", headers={"Retry-After": "5"})
        if isinstance(error, BoltUnhandledRequestError):
            return None
        if isinstance(error, _SHAPE_ERRORS):
            log.warning("ignored a slack request that could not be read: %s",
                        type(error).__name__)
            return BoltResponse(status=400, body="")
        log.warning("slack request failed: %s", type(error).__name__)
        return BoltResponse(status=503, body="", headers={"Retry-After": "5"})

    return app


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
    try:
        yield
    except StoreUnavailable:
        raise
    except Exception:
        log.exception("could not handle a slack %s", what)


class SlackListeners:
    """Routing rules: DMs, @mentions, follow-ups in the bot's threads, support channels, staff."""

    def __init__(
        self,
        engine: Engine,
        poster: SlackPoster,
        desk: SlackDesk,
        *,
        support_channels: list[str],
        stream_interval: float = 1.0,
    ) -> None:
        self.engine = engine
        self.poster = poster
        self.desk = desk
        self.stream_interval = stream_interval
        self.support_ids = {c for c in support_channels if _CHANNEL_ID.match(c)}
        self.support_names = {c.lstrip("#").lower() for c in support_channels} - self.support_ids
        self._names: dict[str, str] = {}
        self._channel_names: dict[str, str] = {}
        self._followups: set[asyncio.Task[Any]] = set()
        self.assistant = AssistantThreads(engine, poster)

    # -- entry points (called by Bolt listeners, before Slack hears "OK") -------------------

    async def on_event(
        self, body: dict[str, Any], event: dict[str, Any], context: Any, *, mentioned: bool,
        assistant: bool = False,
    ) -> None:
        team = body.get("team_id")
        text = parse_text_event(event, team if isinstance(team, str) else None,
                                context.bot_user_id, context.bot_id)
        if text is None:
            return
        await self.route(text, mentioned=mentioned, bot_user_id=context.bot_user_id,
                         assistant=assistant)

    def on_thread_started(self, event: dict[str, Any]) -> None:
        """A customer opened an assistant thread: greet them after the ack."""
        thread = event.get("assistant_thread")
        if not isinstance(thread, dict):
            return
        channel, ts, user = (thread.get(k) for k in ("channel_id", "thread_ts", "user_id"))
        if all(isinstance(v, str) and v for v in (channel, ts, user)):
            self._follow(self.assistant.welcome(str(channel), str(ts), str(user)))
        else:
            log.warning("ignored an assistant_thread_started event of an unknown shape")

    def on_action(self, body: dict[str, Any]) -> None:
        if parse_action(body) is not None:
            self._follow(self.desk.handle_action(body))

    def on_feedback(self, body: dict[str, Any]) -> None:
        if parse_action(body) is not None:
            self._follow(handle_feedback(self.engine, self.poster, body))

    async def drain(self, within: float = 10.0) -> None:
        """Wait for answers and button work in progress (tests, graceful shutdown)."""
        if self._followups:
            await asyncio.wait(set(self._followups), timeout=within)

    def _follow(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(_guard(work))
        self._followups.add(task)
        task.add_done_callback(self._followups.discard)

    # -- routing ----------------------------------------------------------------------------

    async def route(self, t: SlackText, *, mentioned: bool, bot_user_id: str | None,
                    assistant: bool = False) -> None:
        """Store what must survive a crash; raise StoreUnavailable if the database fails."""
        if self.desk.staff_channel and t.channel == self.desk.staff_channel:
            # a reply in a notification's thread reaches the customer (after the ack)
            self._follow(self.desk.on_staff_thread(t, bot_user_id))
            return
        try:
            if self.desk.is_staff(t.user) and t.thread_ts and not t.is_dm:
                conv = await self.engine.find_conversation(PLATFORM, t.thread_key)
                if conv is not None:
                    await self._staff_reply(conv, t, bot_user_id)
                    return
            addressed = await self._addressed(t, mentioned=mentioned, bot_user_id=bot_user_id)
        except Exception as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        if addressed:
            await self._customer_message(t, bot_user_id, assistant=assistant)

    async def _customer_message(self, t: SlackText, bot_user_id: str | None, *,
                                assistant: bool = False) -> None:
        known_name = self._names.get(t.user)
        msg = IncomingMessage(
            platform=PLATFORM,
            thread_key=t.thread_key,
            customer_id=t.user,
            text=strip_mention(t.text, bot_user_id),
            message_id=t.message_id,
            customer_name=known_name or "",
            workspace=t.team,
            received_at=t.received_at,
            attachments=t.files,
        )
        storing = asyncio.ensure_future(self.engine.accept(msg))
        try:
            accepted = await asyncio.wait_for(asyncio.shield(storing), ACK_BUDGET)
        except TimeoutError:
            # Slack stops waiting at 3 s: refuse (503, no envelope ack) and let the store
            # finish; if it does, the message is answered and Slack's retry is a duplicate
            storing.add_done_callback(
                lambda done: self._stored_late(done, t, known_name, msg.text, assistant))
            raise StoreUnavailable("the store took longer than Slack's ack budget") from None
        except Exception as exc:  # the database is down or full: Slack must deliver it again
            raise StoreUnavailable(type(exc).__name__) from exc
        self._answer(accepted, t, known_name, msg.text, assistant)

    def _stored_late(self, done: asyncio.Future[Accepted], t: SlackText,
                     known_name: str | None, question: str, assistant: bool) -> None:
        if done.cancelled() or done.exception() is not None:
            return  # not stored: Slack's retry stores it
        self._answer(done.result(), t, known_name, question, assistant)

    def _answer(self, accepted: Accepted, t: SlackText, known_name: str | None,
                question: str = "", assistant: bool = False) -> None:
        if not accepted.stored:
            return
        sink = SlackSink(
            self.poster, t.channel, t.reply_thread_ts, stream_interval=self.stream_interval,
            prompts=self.engine.prompts, recipient=(t.team, t.user),
        )

        async def lookup() -> str:  # users.info, after the store, when the turn comes
            return await self._customer_name(t.user)

        decorated = None
        if assistant and t.thread_ts and self.assistant.available:
            # status while the answer is prepared (the reply waits for it), title from the
            # first question; both after the ack, neither ever in the answer's way
            decorated = self.assistant.sink(sink, accepted.language, accepted.conversation_id)
            self._follow(self.assistant.title(t.channel, t.thread_ts,
                                              accepted.conversation_id, question))
        answered = self.engine.dispatch(
            accepted, decorated or sink, customer_name=None if known_name is not None else lookup
        )
        self._follow(self._after_answer(answered, sink))
        if decorated is not None:
            self._follow(self.assistant.finished(decorated, answered))

    async def _after_answer(self, answered: asyncio.Future[Reply], sink: SlackSink) -> None:
        try:
            reply = await answered
        except Exception:  # logged by the engine; the message waits for recovery
            return
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
        # message + app_mention (and Slack's retries) deliver it more than once: the engine
        # stores it once (event_id)
        log.info("staff reply in customer thread", extra={"conversation": conv.id})
        await self.engine.staff_message(
            conv.id, f"slack:{t.user}", strip_mention(t.text, bot_user_id),
            event_id=f"slack:{t.message_id}",
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
        return SlackSink(self.poster, channel, thread_ts, stream_interval=self.stream_interval,
                         prompts=self.engine.prompts)


async def _guard(work: Coroutine[Any, Any, Any]) -> None:
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception:  # Slack already heard "OK"; a stored message is recovered by the engine
        log.exception("slack follow-up work failed")
