"""Getting a reply to the customer exactly once: stage it, send it, mark both turns done.

A reply is stored ``pending`` (with the customer's message still ``received``) before it is
sent, and both are marked done in one transaction after; a crash in between leaves the message
for recovery. A reply already streamed was staged before the stream began, with the platform id
of the message it streams into, so recovery can finish that message in place.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from supportbot import metrics
from supportbot.engine.core import Core
from supportbot.engine.types import Outcome, ReplySink
from supportbot.storage.models import Message

log = logging.getLogger("supportbot.engine")


class Delivery:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def deliver(
        self,
        conversation_id: int,
        user_msg: Message | None,
        text: str,
        sink: ReplySink | None,
        *,
        outcome: Outcome,
        check_owner: bool = True,
        already_sent: str | bool | None = None,
        conversation_values: dict[str, Any] | None = None,
        **fields: Any,
    ) -> int | None:
        """Store the reply and re-check ownership (one transaction), send, then mark both
        turns done (another), applying ``conversation_values`` with it.

        Returns the stored reply's id, or ``None`` when a human took the thread meanwhile. If
        the send fails the error propagates and the customer's message stays ``received``: the
        recovery sweep answers it again later."""
        store = self.core.store
        user_id = user_msg.id if user_msg is not None else None
        reply_id = await store.stage_reply(
            conversation_id, user_id, text, require_bot=check_owner and not already_sent,
            outcome=str(outcome), **fields,
        )
        if reply_id is None:
            log.info("reply suppressed: a human owns the thread")
            return None
        platform_id: str | None = already_sent if isinstance(already_sent, str) else None
        if sink is not None and not already_sent:
            try:
                platform_id = await sink.send(text,
                                              feedback_id=reply_id if outcome.rated else None)
                if user_msg is not None and platform_id is not None:
                    # before anything awaits: a crash now is finished in place, not re-sent
                    self.core.streams.sent(user_msg, platform_id)
            except Exception:
                # the sink retried already; staff see it (bot_failed) and the sweep tries again
                await store.set_message_state(reply_id, "failed")
                await store.update_conversation(conversation_id, bot_failed=True)
                raise
        await store.finish_reply(conversation_id, reply_id, user_id, platform_id,
                                 conversation_values)
        return reply_id

    async def notify(self, conversation_id: int, name: str, *, sink: ReplySink | None = None,
                     **context: Any) -> bool:
        """Send the customer one of the standard notices (``prompts/messages``) unprompted."""
        view = await self.core.view(conversation_id)
        if view is None:
            return False
        sink = sink or self.core.sink_for(view)
        if sink is None:
            return False
        if name == "handoff_requested":
            text = self.core.handoff_notice(view.language, view.customer_name)
        else:
            text = self.core.words(name, view.language, view.customer_name, **context)
        await self.core.store.add_message(conversation_id, "assistant", text, "sent",
                                          outcome="notice")
        try:
            await sink.send(text)
        except Exception:
            log.exception("could not notify the customer")
            return False
        metrics.MESSAGES_OUT.labels(view.platform).inc()
        return True

    async def send_staff_text(self, conversation_id: int, text: str) -> bool:
        """Deliver a staff member's words to the customer (the desk cannot reach them itself,
        e.g. a Slack DM answered from the staff channel)."""
        view = await self.core.view(conversation_id)
        sink = self.core.sink_for(view) if view is not None else None
        if sink is None:
            return False
        try:
            await sink.send(text)
        except Exception:
            log.exception("could not deliver a staff reply to the customer")
            return False
        return True


class ResumedSink:
    """Delivers the answer to a message whose reply a crash left half streamed: the streamed
    message is edited to the full answer in place (``replace`` on the platform's sink), or,
    where editing is impossible, the answer comes again after a short notice. Never a second
    copy next to a frozen half, never a message left ending in "…"."""

    def __init__(self, sink: ReplySink, platform_id: str, notice: str) -> None:
        self.sink, self.platform_id, self.notice = sink, platform_id, notice

    async def send(self, text: str, *, feedback_id: int | None = None) -> str | None:
        replace = getattr(self.sink, "replace", None)
        if replace is not None:
            try:
                return await replace(self.platform_id, text, feedback_id=feedback_id)
            except Exception as exc:
                log.warning("could not finish the interrupted answer in place: %s",
                            type(exc).__name__)
        return await self.sink.send(f"{self.notice}\n\n{text}", feedback_id=feedback_id)

    async def send_stream(self, chunks: AsyncIterator[str], **_: Any) -> str | None:
        return await self.send("".join([chunk async for chunk in chunks]))
