"""Applying the handoff table (:mod:`supportbot.engine.handoff`) to a stored conversation.

:meth:`Transitions.apply` looks the event up for the conversation's current status, moves it
with the store's compare-and-set (so of two racing callers exactly one wins; the loser
re-decides on the new status), records the audit row, and carries out the rule's effects:
interrupting a stream, telling the staff desk, sending the customer a notice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from supportbot import metrics
from supportbot.engine.core import Core, describe_reason
from supportbot.engine.delivery import Delivery
from supportbot.engine.handoff import Actor, Effect, Event, NotAllowed, Rule, decide
from supportbot.engine.types import ReplySink, Status
from supportbot.storage.models import Conversation

log = logging.getLogger("supportbot.engine")


@dataclass(frozen=True, slots=True)
class Applied:
    conversation: Conversation
    rule: Rule
    moved: bool  # the status changed (an audit row was written)


def _entering(to: Status, actor: str) -> dict[str, Any]:
    """The conversation fields that go with entering a state."""
    if to is Status.WAITING:
        return {"waiting_since": datetime.now(UTC), "wait_notices": 0}
    if to is Status.HUMAN:
        return {"assignee": actor, "waiting_since": None}
    if to is Status.BOT:
        return {"assignee": None, "waiting_since": None, "failures": 0, "bot_failed": False}
    return {"waiting_since": None}


class Transitions:
    def __init__(self, core: Core, delivery: Delivery) -> None:
        self.core, self.delivery = core, delivery

    async def apply(
        self,
        conversation_id: int,
        event: Event,
        by: Actor,
        actor: str,
        *,
        reason: str = "",
        staff_reason: str | None = None,
        notice: bool = True,
        sink: ReplySink | None = None,
        tell_customer: Callable[[], Awaitable[Any]] | None = None,
        **values: Any,
    ) -> Applied | None:
        """Apply ``event`` (caused by ``actor``, of kind ``by``); ``None`` if the table does
        not allow it now. ``notice=False``: no notice to the customer; ``tell_customer``: the
        caller's own words instead of the notice (sent before staff are told, as a notice is).
        ``staff_reason`` (in words) is what staff are told; ``reason`` goes to the audit.
        ``values`` are conversation fields set with a change of status (not without one)."""
        store = self.core.store
        for _ in range(5):
            conv = await store.conversation(conversation_id)
            if conv is None:
                return None
            try:
                rule = decide(conv.status, event, by)
            except NotAllowed:
                return None
            moved = rule.to != conv.status
            if moved:
                changed = await store.transition(
                    conversation_id, to=rule.to, allowed_from=(conv.status,), actor=actor,
                    reason=reason or str(event), **{**_entering(rule.to, actor), **values},
                )
                if changed is None:
                    continue  # someone moved it first: decide again on the new status
                conv = changed
            break
        else:
            return None
        # effects, in order: stop the bot, tell the customer, then staff
        if rule.does(Effect.INTERRUPT_STREAM) and self.core.streams.interrupt(conv.id):
            log.info("streaming answer interrupted", extra={"conversation_id": conv.id})
        if tell_customer is not None:
            await tell_customer()
        elif notice and rule.does(Effect.NOTICE_TO_CUSTOMER) and rule.notice:
            await self.delivery.notify(conv.id, rule.notice, sink=sink)
        await self._tell_staff(conv, rule, actor, reason, staff_reason)
        return Applied(conv, rule, moved)

    async def _tell_staff(self, conv: Conversation, rule: Rule, actor: str, reason: str,
                          staff_reason: str | None) -> None:
        if rule.does(Effect.NOTIFY_STAFF):
            metrics.HANDOFFS.labels(metrics.handoff_trigger(reason or "unknown")).inc()
            log.info("handed off", extra={"reason": reason, "actor": actor})
            await self.core.desk_call(conv.platform, "handoff_requested", conv.id,
                                      staff_reason or describe_reason(conv.handoff_reason
                                                                      or reason))
        if rule.does(Effect.UPDATE_STAFF):
            await self.core.desk_call(conv.platform, "status_changed", conv.id, actor)
