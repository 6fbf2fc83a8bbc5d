"""Slack assistant threads: the AI app's side panel, on top of the ordinary DM behaviour.

A customer who opens a new thread in the panel (``assistant_thread_started``) is greeted in their
Slack language and offered the staff-edited suggested prompts. Their messages in such a thread are
ordinary customer messages for the engine (thread key: the DM channel and the thread), so FAQ
answers, the LLM and handoff work exactly as in a DM thread; on top, while an answer is prepared
the thread shows a status in the bot's own words, and its first question titles it.

Everything here is decoration: a workspace or an app without the AI-app features answers these
calls with an error (``not_allowed_token_type``, ``unknown_method`` …). Such an error is logged
once, the calls stop for the rest of the process, and the answer goes out as in any DM. Nothing
reads history from Slack (``conversations.replies`` is cut to about one call a minute for apps
outside the Marketplace): the thread context Slack sends is kept in memory, and our store is
the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError

from supportbot.prompts.suggested import SuggestedPrompts

from .sink import SlackPoster, SlackSink

if TYPE_CHECKING:
    from supportbot.engine import Engine
    from supportbot.engine.types import Reply

log = logging.getLogger(__name__)

#: what Slack answers where the workspace or the app has no AI-app features (or the app lacks
#: ``assistant:write``): the calls stop for the rest of the process
UNAVAILABLE = frozenset({
    "not_allowed_token_type", "unknown_method", "missing_scope", "not_allowed",
    "feature_not_enabled", "access_denied", "no_permission", "team_not_allowed",
})
#: seconds a reply waits for its "is looking for an answer…" status to be set: a slow Slack
#: must not hold the answer back (and a late status must not land after the reply)
STATUS_BUDGET = 2.0
TITLE_CHARS = 60
_REMEMBERED = 5_000  # customers' Slack languages kept in memory


class AssistantThreads:
    """Greeting, suggested prompts, status and title in assistant threads; never in the way."""

    def __init__(self, engine: Engine, poster: SlackPoster) -> None:
        self.engine = engine
        self.poster = poster
        self.suggested = SuggestedPrompts(engine.settings.prompts_dir)
        self.available = True  # False once Slack said this workspace has no AI-app features
        # until one call has come back, calls go one at a time: a turn's status and title
        # would otherwise both be refused (and logged) by a workspace without the features
        self._probed = False
        self._probe = asyncio.Lock()
        self._reported: set[tuple[str, str]] = set()
        self._languages: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self.contexts: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    # -- thread started --------------------------------------------------------------------

    async def welcome(self, channel: str, thread_ts: str, user: str) -> None:
        """Greet in the customer's language and offer that language's suggested prompts."""
        language, name = await self._customer(user)
        greeting = self.engine.prompts.message("greeting", language, customer_name=name)
        await self.poster.post(channel, greeting, thread_ts=thread_ts)
        prompts = self.suggested.for_language(language)
        if prompts:
            await self._call(
                "assistant.threads.setSuggestedPrompts",
                lambda: self.poster.client.assistant_threads_setSuggestedPrompts(
                    channel_id=channel, thread_ts=thread_ts,
                    prompts=[p.as_slack() for p in prompts],
                ),
            )

    def remember_context(self, event: dict[str, Any]) -> None:
        """``assistant_thread_context_changed``: the channel the customer is looking at, kept
        in memory (Bolt's default store would write it into the thread via Slack's history)."""
        thread = event.get("assistant_thread")
        if not isinstance(thread, dict):
            return
        key = (str(thread.get("channel_id") or ""), str(thread.get("thread_ts") or ""))
        context = thread.get("context")
        if all(key) and isinstance(context, dict):
            self.contexts[key] = context
            self.contexts.move_to_end(key)
            while len(self.contexts) > _REMEMBERED:
                self.contexts.popitem(last=False)

    async def _customer(self, user: str) -> tuple[str, str]:
        """The customer's language (their Slack locale, else the default) and display name."""
        known = self._languages.get(user)
        if known is not None:
            return known
        language, name = self.engine.settings.default_language or "en", ""
        try:
            resp = await self.poster.call("users.info", user=user, include_locale="true")
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("users.info failed: %s", _error(exc))
            return language, name
        info = resp.get("user") or {}
        profile = info.get("profile") or {}
        locale = info.get("locale")
        if isinstance(locale, str) and locale:
            language = locale.replace("_", "-").split("-")[0].lower()
        name = str(profile.get("display_name") or profile.get("real_name") or "")
        self._languages[user] = (language, name)
        while len(self._languages) > _REMEMBERED:
            self._languages.popitem(last=False)
        return language, name

    # -- a question in the thread ----------------------------------------------------------

    def sink(self, sink: SlackSink, language: str, conversation_id: int | None) -> AssistantSink:
        """Show the status now; the reply waits (briefly) until it is set, so a late status
        never lands after the reply it describes (Slack clears it when the app posts)."""
        status = asyncio.ensure_future(self._set_status(sink, language, conversation_id))
        return AssistantSink(sink, status)

    async def _set_status(self, sink: SlackSink, language: str,
                          conversation_id: int | None) -> bool:
        """True if the thread now shows the status. Not while staff own the conversation or
        are awaited: the bot will not answer there (the words go to staff)."""
        if not self.available or not sink.thread_ts or conversation_id is None:
            return False
        try:
            view = await self.engine.get_conversation(conversation_id)
        except Exception as exc:  # the store failed: the answer is recovered later anyway
            log.warning("no assistant status: the conversation could not be read (%s)",
                        type(exc).__name__)
            return False
        if view is None or view.with_staff:
            return False
        prompts = self.engine.prompts
        status = prompts.message("assistant_status", language)
        loading = prompts.message("assistant_loading", language)
        return await self._call("assistant.threads.setStatus", lambda: self.poster.client
                                .assistant_threads_setStatus(channel_id=sink.channel,
                                                             thread_ts=sink.thread_ts or "",
                                                             status=status,
                                                             loading_messages=[loading]))

    async def title(self, channel: str, thread_ts: str, conversation_id: int | None,
                    question: str) -> None:
        """Title the thread with its first question (later ones leave the title alone)."""
        if not self.available or conversation_id is None:
            return
        view = await self.engine.get_conversation(conversation_id)
        if view is None or sum(1 for t in view.recent if t.role == "user") != 1:
            return
        text = " ".join(question.split())
        if len(text) > TITLE_CHARS:
            text = text[: TITLE_CHARS - 1].rstrip() + "…"
        if text:
            await self._call("assistant.threads.setTitle", lambda: self.poster.client
                             .assistant_threads_setTitle(channel_id=channel, thread_ts=thread_ts,
                                                         title=text))

    async def finished(self, sink: AssistantSink, answered: asyncio.Future[Reply]) -> None:
        """After the engine is done: where the status shows but nothing was posted (staff took
        the thread meanwhile, the reply could not be sent, an error), clear the status Slack
        would have cleared."""
        with contextlib.suppress(Exception):  # logged by the engine
            await answered
        if sink.sent or not self.available or not await sink.status_shown():
            return
        await self._call("assistant.threads.setStatus", lambda: self.poster.client
                         .assistant_threads_setStatus(channel_id=sink.channel,
                                                      thread_ts=sink.thread_ts or "", status=""))

    # -- calls that must never break answering ---------------------------------------------

    async def _call(self, method: str, call: Callable[[], Awaitable[Any]]) -> bool:
        if self._probed:
            return await self._try(method, call)
        async with self._probe:
            ok = await self._try(method, call)
            self._probed = True
            return ok

    async def _try(self, method: str, call: Callable[[], Awaitable[Any]]) -> bool:
        if not self.available:
            return False
        try:
            await asyncio.wait_for(call(), timeout=10)
            return True
        except SlackApiError as exc:
            error = str(exc.response.get("error") or exc.response.status_code)
            if error in UNAVAILABLE:
                self.available = False
                log.warning("slack %s refused (%s): this workspace or app has no assistant "
                            "threads; answering as in plain DMs from now on", method, error)
                return False
            self._report(method, error)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._report(method, type(exc).__name__)
        return False

    def _report(self, method: str, error: str) -> None:
        """Once per method and error: a failing decoration is not worth a log line per reply."""
        if (method, error) in self._reported:
            return
        if len(self._reported) < 100:
            self._reported.add((method, error))
        log.warning("slack %s failed (%s); answering without it (logged once)", method, error)


class AssistantSink:
    """A :class:`SlackSink` whose first post waits for the thread's status to be set."""

    def __init__(self, inner: SlackSink, status: asyncio.Future[bool]) -> None:
        self.inner = inner
        self._status = status

    def __getattr__(self, name: str) -> Any:  # channel, thread_ts, sent, rated, poster …
        return getattr(self.inner, name)

    async def ready(self) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._status), STATUS_BUDGET)
        except Exception:  # late or failed: the reply goes out without waiting longer
            return

    async def status_shown(self) -> bool:
        """Whether the status was set (waits for a late one: it must not outlive the turn)."""
        try:
            return bool(await self._status)
        except Exception:  # the engine's view failed: nothing was set
            return False

    async def send(self, text: str, **kwargs: Any) -> str | None:
        await self.ready()
        return await self.inner.send(text, **kwargs)

    async def send_stream(self, chunks: AsyncIterator[str], **kwargs: Any) -> str | None:
        await self.ready()
        return await self.inner.send_stream(chunks, **kwargs)

    async def replace(self, ts: str, text: str, **kwargs: Any) -> str:
        await self.ready()
        return await self.inner.replace(ts, text, **kwargs)


def _error(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error"))
    return type(exc).__name__
