"""Who owns a conversation, as one table: state × event -> next state, who may cause it, effects.

Every change of a conversation's owner goes through :data:`TABLE`, whatever started it: a
customer's message or ``/human``, the LLM asking for a person, repeated failures, a staff
button or message on Slack or Telegram, the CLI, the waiting timer, recovery after a restart.
Adapters never compare statuses: they send an :class:`Event` to the engine and render what the
engine tells them (for example the staff buttons, from :func:`staff_events`).

::

    state    event                       next     effects
    bot      customer writes             bot      the bot answers
    bot      customer asks for a person  waiting  notice to customer, staff notified
    bot      LLM asks for a person       waiting  the LLM's words (or notice), staff notified
    bot      repeated failure            waiting  notice to customer, staff notified
    bot      staff take over / reply     human    stream interrupted, staff view updated
    bot      restart recovery (too old)  waiting  staff notified
    waiting  customer writes             waiting  relayed to staff
    waiting  customer asks for a person  waiting  notice repeated to the customer
    waiting  staff take over / reply     human    staff view updated
    waiting  hand back                   bot      notice to customer, staff view updated
    waiting  waiting timer               waiting  "still waiting" notice to the customer
    human    customer writes             human    relayed to staff
    human    customer asks for a person  human    notice repeated to the customer
    human    staff reply                 human    (the reply reaches the customer)
    human    hand back                   bot      notice to customer, staff view updated
    any open close                       closed   notice to customer, staff view updated
    closed   new message                 bot      a new conversation opens for the thread

Every move to another state is recorded in the audit trail (``transitions``) with its actor
and reason; a move out of ``bot`` interrupts an answer being streamed at that moment.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from supportbot.engine.types import Status


class Event(enum.StrEnum):
    CUSTOMER_WRITES = "customer_writes"
    CUSTOMER_ASKS_FOR_HUMAN = "customer_asks_for_human"  # /human, or a handoff phrase
    LLM_ASKS_FOR_HUMAN = "llm_asks_for_human"
    REPEATED_FAILURE = "repeated_failure"
    STAFF_TAKES = "staff_takes"
    STAFF_REPLIES = "staff_replies"
    HAND_BACK = "hand_back"
    CLOSE = "close"
    WAITING_TIMER = "waiting_timer"
    RESTART_RECOVERY = "restart_recovery"  # a message too old to answer after a restart
    NEW_MESSAGE_AFTER_CLOSE = "new_message_after_close"


class Actor(enum.StrEnum):
    CUSTOMER = "customer"
    BOT = "bot"
    STAFF = "staff"
    SYSTEM = "system"  # timers and recovery


class Effect(enum.StrEnum):
    BOT_ANSWERS = "bot_answers"
    RELAY_TO_STAFF = "relay_to_staff"  # the customer's words go to the staff desk
    NOTIFY_STAFF = "notify_staff"  # a new handoff: the desk posts a summary
    UPDATE_STAFF = "update_staff"  # the desk's view of the thread changes
    NOTICE_TO_CUSTOMER = "notice_to_customer"  # ``Rule.notice`` is sent to the customer
    INTERRUPT_STREAM = "interrupt_stream"  # an answer being streamed stops at once
    REACHES_CUSTOMER = "reaches_customer"  # a staff message is delivered to the customer
    NEW_CONVERSATION = "new_conversation"
    AUDIT = "audit"  # a transition row: who, when, why


@dataclass(frozen=True, slots=True)
class Rule:
    to: Status
    by: frozenset[Actor]
    effects: frozenset[Effect]
    notice: str | None = None  # the message (prompts/messages) sent with NOTICE_TO_CUSTOMER

    def does(self, effect: Effect) -> bool:
        return effect in self.effects


class NotAllowed(Exception):
    """The event cannot happen in this state, or not by this actor."""


def _rule(to: Status, by: set[Actor], *effects: Effect, notice: str | None = None) -> Rule:
    return Rule(to, frozenset(by), frozenset(effects), notice)


def _complete(state: Status, rule: Rule) -> Rule:
    """Add what every move implies: the audit row, and leaving ``bot`` stops a stream."""
    if rule.to is state or rule.does(Effect.NEW_CONVERSATION):
        return rule
    extra = {Effect.AUDIT} | ({Effect.INTERRUPT_STREAM} if state is Status.BOT else set())
    return Rule(rule.to, rule.by, rule.effects | extra, rule.notice)


B, W, H, C = Status.BOT, Status.WAITING, Status.HUMAN, Status.CLOSED
CUSTOMER, BOT, STAFF, SYSTEM = Actor.CUSTOMER, Actor.BOT, Actor.STAFF, Actor.SYSTEM
E = Effect
_HANDOFF = (E.NOTIFY_STAFF, E.NOTICE_TO_CUSTOMER)
_CLOSE = _rule(C, {STAFF, CUSTOMER}, E.UPDATE_STAFF, E.NOTICE_TO_CUSTOMER, notice="closed")

_RULES: dict[tuple[Status, Event], Rule] = {
    (B, Event.CUSTOMER_WRITES): _rule(B, {CUSTOMER}, E.BOT_ANSWERS),
    (B, Event.CUSTOMER_ASKS_FOR_HUMAN): _rule(W, {CUSTOMER}, *_HANDOFF,
                                              notice="handoff_requested"),
    (B, Event.LLM_ASKS_FOR_HUMAN): _rule(W, {BOT}, *_HANDOFF, notice="handoff_requested"),
    (B, Event.REPEATED_FAILURE): _rule(W, {BOT}, *_HANDOFF, notice="handoff_requested"),
    (B, Event.STAFF_TAKES): _rule(H, {STAFF}, E.UPDATE_STAFF),
    (B, Event.STAFF_REPLIES): _rule(H, {STAFF}, E.UPDATE_STAFF, E.REACHES_CUSTOMER),
    (B, Event.CLOSE): _CLOSE,
    (B, Event.RESTART_RECOVERY): _rule(W, {SYSTEM}, E.NOTIFY_STAFF),
    (W, Event.CUSTOMER_WRITES): _rule(W, {CUSTOMER}, E.RELAY_TO_STAFF),
    (W, Event.CUSTOMER_ASKS_FOR_HUMAN): _rule(W, {CUSTOMER}, E.NOTICE_TO_CUSTOMER,
                                              notice="handoff_requested"),
    (W, Event.STAFF_TAKES): _rule(H, {STAFF}, E.UPDATE_STAFF),
    (W, Event.STAFF_REPLIES): _rule(H, {STAFF}, E.UPDATE_STAFF, E.REACHES_CUSTOMER),
    (W, Event.HAND_BACK): _rule(B, {STAFF}, E.UPDATE_STAFF, E.NOTICE_TO_CUSTOMER,
                                notice="handed_back"),
    (W, Event.CLOSE): _CLOSE,
    (W, Event.WAITING_TIMER): _rule(W, {SYSTEM}, E.NOTICE_TO_CUSTOMER,
                                    notice="handoff_still_waiting"),
    (W, Event.RESTART_RECOVERY): _rule(W, {SYSTEM}),
    (H, Event.CUSTOMER_WRITES): _rule(H, {CUSTOMER}, E.RELAY_TO_STAFF),
    (H, Event.CUSTOMER_ASKS_FOR_HUMAN): _rule(H, {CUSTOMER}, E.NOTICE_TO_CUSTOMER,
                                              notice="handoff_requested"),
    (H, Event.STAFF_REPLIES): _rule(H, {STAFF}, E.REACHES_CUSTOMER),
    (H, Event.HAND_BACK): _rule(B, {STAFF}, E.UPDATE_STAFF, E.NOTICE_TO_CUSTOMER,
                                notice="handed_back"),
    (H, Event.CLOSE): _CLOSE,
    (H, Event.RESTART_RECOVERY): _rule(H, {SYSTEM}),
    (C, Event.NEW_MESSAGE_AFTER_CLOSE): _rule(B, {CUSTOMER}, E.NEW_CONVERSATION),
}
TABLE: dict[tuple[Status, Event], Rule] = {
    key: _complete(key[0], rule) for key, rule in _RULES.items()
}


def decide(state: Status | str, event: Event, actor: Actor) -> Rule:
    """The rule for ``event`` in ``state`` caused by ``actor``; :class:`NotAllowed` if none."""
    rule = TABLE.get((Status(state), event))
    if rule is None:
        raise NotAllowed(f"{event} is not possible while the conversation is {state}")
    if actor not in rule.by:
        raise NotAllowed(f"{actor} cannot cause {event}")
    return rule


def allowed(state: Status | str, event: Event, actor: Actor) -> bool:
    try:
        decide(state, event, actor)
    except NotAllowed:
        return False
    return True


def staff_events(state: Status | str) -> tuple[Event, ...]:
    """The staff actions to offer (as buttons) for a conversation in ``state``."""
    return tuple(
        e for e in (Event.STAFF_TAKES, Event.HAND_BACK, Event.CLOSE)
        if allowed(state, e, Actor.STAFF)
    )


def with_staff(state: Status | str) -> bool:
    """A person has the conversation (or is awaited): customers' words go to staff."""
    return allowed(state, Event.CUSTOMER_WRITES, Actor.CUSTOMER) and decide(
        state, Event.CUSTOMER_WRITES, Actor.CUSTOMER
    ).does(Effect.RELAY_TO_STAFF)
