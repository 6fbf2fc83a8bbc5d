"""The handoff table (supportbot/engine/handoff.py): every state × event, legal and illegal, and
the same table driving a stored conversation through the engine."""

from __future__ import annotations

import pytest

from supportbot.engine import Status
from supportbot.engine.handoff import (
    TABLE,
    Actor,
    Effect,
    Event,
    NotAllowed,
    decide,
    staff_events,
    with_staff,
)
from supportbot.testing import OfflineBot
from supportbot.testing.bot import RecordingSink

B, W, H, C = Status.BOT, Status.WAITING, Status.HUMAN, Status.CLOSED
ILLEGAL = None
# state -> event -> (next state, who may cause it), or ILLEGAL
EXPECTED: dict[Status, dict[Event, tuple[Status, Actor] | None]] = {
    B: {
        Event.CUSTOMER_WRITES: (B, Actor.CUSTOMER),
        Event.CUSTOMER_ASKS_FOR_HUMAN: (W, Actor.CUSTOMER),
        Event.LLM_ASKS_FOR_HUMAN: (W, Actor.BOT),
        Event.REPEATED_FAILURE: (W, Actor.BOT),
        Event.STAFF_TAKES: (H, Actor.STAFF),
        Event.STAFF_REPLIES: (H, Actor.STAFF),
        Event.HAND_BACK: ILLEGAL,
        Event.CLOSE: (C, Actor.STAFF),
        Event.WAITING_TIMER: ILLEGAL,
        Event.RESTART_RECOVERY: (W, Actor.SYSTEM),
        Event.NEW_MESSAGE_AFTER_CLOSE: ILLEGAL,
    },
    W: {
        Event.CUSTOMER_WRITES: (W, Actor.CUSTOMER),
        Event.CUSTOMER_ASKS_FOR_HUMAN: (W, Actor.CUSTOMER),
        Event.LLM_ASKS_FOR_HUMAN: ILLEGAL,
        Event.REPEATED_FAILURE: ILLEGAL,
        Event.STAFF_TAKES: (H, Actor.STAFF),
        Event.STAFF_REPLIES: (H, Actor.STAFF),
        Event.HAND_BACK: (B, Actor.STAFF),
        Event.CLOSE: (C, Actor.STAFF),
        Event.WAITING_TIMER: (W, Actor.SYSTEM),
        Event.RESTART_RECOVERY: (W, Actor.SYSTEM),
        Event.NEW_MESSAGE_AFTER_CLOSE: ILLEGAL,
    },
    H: {
        Event.CUSTOMER_WRITES: (H, Actor.CUSTOMER),
        Event.CUSTOMER_ASKS_FOR_HUMAN: (H, Actor.CUSTOMER),
        Event.LLM_ASKS_FOR_HUMAN: ILLEGAL,
        Event.REPEATED_FAILURE: ILLEGAL,
        Event.STAFF_TAKES: ILLEGAL,
        Event.STAFF_REPLIES: (H, Actor.STAFF),
        Event.HAND_BACK: (B, Actor.STAFF),
        Event.CLOSE: (C, Actor.STAFF),
        Event.WAITING_TIMER: ILLEGAL,
        Event.RESTART_RECOVERY: (H, Actor.SYSTEM),
        Event.NEW_MESSAGE_AFTER_CLOSE: ILLEGAL,
    },
    C: {
        **{event: ILLEGAL for event in Event},
        Event.NEW_MESSAGE_AFTER_CLOSE: (B, Actor.CUSTOMER),
    },
}
CASES = [(state, event) for state in Status for event in Event]


def test_the_expectations_cover_every_state_and_event() -> None:
    assert {(s, e) for s in EXPECTED for e in EXPECTED[s]} == set(CASES)
    assert set(TABLE) <= set(CASES)


@pytest.mark.parametrize(("state", "event"), CASES, ids=[f"{s}-{e}" for s, e in CASES])
def test_every_state_and_event(state: Status, event: Event) -> None:
    expected = EXPECTED[state][event]
    if expected is None:
        for actor in Actor:
            with pytest.raises(NotAllowed):
                decide(state, event, actor)
        return
    to, actor = expected
    rule = decide(state, event, actor)
    assert rule.to is to
    for other in set(Actor) - rule.by:
        with pytest.raises(NotAllowed):
            decide(state, event, other)
    moved = to is not state and event is not Event.NEW_MESSAGE_AFTER_CLOSE
    assert rule.does(Effect.AUDIT) is moved  # every change of owner is in the audit trail
    # leaving ``bot`` stops an answer being streamed, at once
    assert rule.does(Effect.INTERRUPT_STREAM) is (moved and state is B)


def test_who_gets_the_customers_words_and_which_buttons_staff_see() -> None:
    assert [with_staff(s) for s in (B, W, H, C)] == [False, True, True, False]
    assert staff_events(B) == (Event.STAFF_TAKES, Event.CLOSE)
    assert staff_events(W) == (Event.STAFF_TAKES, Event.HAND_BACK, Event.CLOSE)
    assert staff_events(H) == (Event.HAND_BACK, Event.CLOSE)
    assert staff_events(C) == ()


async def test_the_engine_follows_the_table_and_audits_each_move(tmp_path) -> None:
    async with OfflineBot(tmp_path) as bot:
        engine = bot.engine
        sink = RecordingSink()
        engine.register_sink_factory("test", lambda view: sink)
        reply = await bot.ask("How long do refunds take?")
        conv = reply.conversation_id
        assert not await engine.hand_back(conv, "slack:U1")  # bot -> hand back: illegal
        assert await engine.take_over(conv, "slack:U1")  # bot -> human
        assert not await engine.take_over(conv, "slack:U2")  # human -> take: illegal
        relayed = await bot.ask("are you there?")
        assert relayed.outcome == "relayed"
        assert await engine.hand_back(conv, "slack:U1")  # human -> bot, customer told
        assert await engine.close(conv, "cli:admin")  # bot -> closed, customer told
        assert not await engine.close(conv, "cli:admin")
        trail = [(t.from_status, t.to_status, t.actor)
                 for t in await engine.store.transitions(conv)]
        fresh = await bot.ask("a new question about refunds")
    assert trail == [
        ("new", "bot", "customer:customer-1"),
        ("bot", "human", "slack:U1"),
        ("human", "bot", "slack:U1"),
        ("bot", "closed", "cli:admin"),
    ]
    assert len(sink.sent) == 2  # the hand-back and the close notices
    assert fresh.conversation_id != conv  # a new message after close opens a new one
