"""Asking the LLM for one turn's answer, streamed into the customer's chat when streaming is on.

A stream stops at once when the conversation leaves ``bot`` (staff took over, see
:mod:`supportbot.engine.streams`): the model's request is cancelled, the words already shown
stay as they are and the message is finished cleanly, and the draft says it was interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from supportbot.engine.attachments import user_content
from supportbot.engine.core import Core
from supportbot.engine.history import trim_history
from supportbot.engine.types import ReplySink, Status
from supportbot.handoff import HANDOFF_MARKER, MarkerStreamFilter
from supportbot.knowledge import Hit
from supportbot.llm import Completion, LLMClient, LLMError
from supportbot.prompts import Snippet

if TYPE_CHECKING:
    from supportbot.engine.turn import Turn


class PromptUnavailable(LLMError):
    """The system prompt cannot be rendered, so the LLM cannot be asked."""


@dataclass(slots=True)
class Draft:
    """The model's answer for a turn.

    ``sent`` is the platform message id when it was already streamed to the customer (``True``
    when the sink gave none); ``interrupted`` when a takeover cut the stream short, ``text``
    then holding only what the customer saw."""

    text: str
    completion: Completion | None
    sent: str | bool | None = None
    interrupted: bool = False


class Answering:
    def __init__(self, core: Core, llm: LLMClient) -> None:
        self.core, self.llm = core, llm

    async def draft(self, turn: Turn, hits: list[Hit]) -> Draft:
        async with _preparing(turn.sink):
            messages = await self._messages(turn, hits)
            if turn.sink is None or not self.core.settings.llm_stream:
                completion = await self.llm.complete(messages)
                return Draft(completion.text, completion)
            return await self._stream(turn, turn.sink, messages)

    async def _messages(self, turn: Turn, hits: list[Hit]) -> list[dict[str, Any]]:
        conv, settings = turn.conv, self.core.settings
        try:
            system = self.core.prompts.render_system(
                conv.platform,
                # the customer picks their display name: one short line, never instructions
                customer_name=" ".join(conv.customer_name.split())[:64],
                language=turn.language,
                now=datetime.now(ZoneInfo(settings.timezone)),
                snippets=[
                    Snippet(h.entry.id, h.entry.question, h.entry.answer, h.entry.url)
                    for h in hits
                ],
                handoff_marker=HANDOFF_MARKER,
                business_hours=settings.business_hours,
            )
        except Exception as exc:  # broken since start, no good version to fall back on
            raise PromptUnavailable(f"system prompt does not render: {exc}") from exc
        # in a group or channel thread: only this customer's turns, unless shared on purpose
        history = await self.core.store.history(conv.id, before_id=turn.message.id,
                                                shared=settings.shared_thread_history)
        return [
            {"role": "system", "content": system},
            *trim_history(history, settings.history_token_budget),
            # this turn's pictures, if the model may see them; history keeps the "[picture]" note
            {"role": "user", "content": user_content(turn.message.text, turn.images)},
        ]

    async def _stream(self, turn: Turn, sink: ReplySink,
                      messages: list[dict[str, Any]]) -> Draft:
        done = object()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def produce() -> Completion:
            try:
                return await self.llm.complete(messages, on_delta=queue.put)
            finally:
                queue.put_nowait(done)

        producer = asyncio.create_task(produce())
        try:
            first = await queue.get()
            if first is done:  # nothing streamed: errors surface here, the answer goes out whole
                completion = await producer
                return Draft(completion.text, completion)
            if not await self._bot_owns(turn.conv.id):
                completion = await producer
                return Draft(completion.text, completion)  # delivery will suppress it
            async with self.core.streams.watch(
                turn.conv.id, lambda: self._bot_owns(turn.conv.id)
            ) as stop:
                shown: list[str] = []
                chunks = _visible(first, queue, done, stop, turn.note, shown)
                sent = await sink.send_stream(chunks, **self._started(turn, sink))
                if stop.is_set():
                    producer.cancel()
                    with contextlib.suppress(asyncio.CancelledError, LLMError):
                        await producer
                    return Draft("".join(shown).strip(), None, sent or True, interrupted=True)
            completion = await producer
            return Draft(completion.text, completion, sent if sent is not None else True)
        finally:
            if not producer.done():
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError, LLMError):
                    await producer

    def _started(self, turn: Turn, sink: ReplySink) -> dict[str, Any]:
        """``started=``: when the sink tells where the stream goes, that is stored first, so a
        crash mid-stream is finished in that message by recovery (sinks without it: nothing)."""
        if "started" not in inspect.signature(sink.send_stream).parameters:
            return {}

        async def started(platform_id: str) -> None:
            self.core.streams.sent(turn.message, platform_id)  # at once: see streams.Journal
            await self.core.store.stage_stream(turn.conv.id, turn.message.id, platform_id)

        return {"started": started}

    async def _bot_owns(self, conversation_id: int) -> bool:
        conv = await self.core.store.conversation(conversation_id)
        return conv is not None and conv.status == Status.BOT


def _preparing(sink: ReplySink | None) -> contextlib.AbstractAsyncContextManager[Any]:
    """``sink.preparing()`` where the sink has one: it shows that an answer is coming (Telegram's
    "typing…") from before the model is asked until the first words show."""
    preparing = getattr(sink, "preparing", None)
    return preparing() if preparing is not None else contextlib.nullcontext()


async def _visible(first: Any, queue: asyncio.Queue[Any], done: object, stop: asyncio.Event,
                   note: str, shown: list[str]) -> AsyncIterator[str]:
    """The model's deltas as the customer should see them (marker withheld), ending early
    when ``stop`` is set."""
    marker = MarkerStreamFilter()
    if note:
        shown.append(note + "\n\n")
        yield note + "\n\n"
    item = first
    while item is not done:
        visible = marker.feed(item)
        if visible:
            shown.append(visible)
            yield visible
        item = await _next(queue, stop)
        if item is None:
            return  # interrupted: the sink finishes what is shown
    tail = marker.flush()
    if tail:
        shown.append(tail)
        yield tail


async def _next(queue: asyncio.Queue[Any], stop: asyncio.Event) -> Any:
    """The next delta, or ``None`` as soon as ``stop`` is set."""
    if stop.is_set():
        return None
    if not queue.empty():
        return queue.get_nowait()
    getter = asyncio.ensure_future(queue.get())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not getter.done():
            getter.cancel()
    if stop.is_set() or getter.cancelled():
        return None
    return getter.result()
