"""One customer message, from "who answers?" to the reply: the engine's main decision.

Runs under the thread's lock with the message stored and still unanswered. In order: a person
owns the thread (relay to staff), the customer asks for a person (hand off), a limit is reached
(one notice), the FAQ answers, or the LLM does; failures are honest and, repeated, hand off.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from supportbot import metrics
from supportbot.config import Settings
from supportbot.engine.answering import Answering, Draft
from supportbot.engine.core import Core
from supportbot.engine.delivery import Delivery
from supportbot.engine.handoff import Actor, Effect, Event, decide
from supportbot.engine.transitions import Transitions
from supportbot.engine.types import Outcome, Reply, ReplySink, Source
from supportbot.handoff import HandoffDetector, llm_handoff
from supportbot.knowledge import Hit
from supportbot.knowledge.importing.passages import offline_answer
from supportbot.limits import Limits, Verdict
from supportbot.llm import Completion, LLMError
from supportbot.storage.models import Conversation, Message

log = logging.getLogger("supportbot.engine")


@dataclass(slots=True)
class Turn:
    """Everything about the customer message being answered."""

    conv: Conversation
    message: Message  # stored, state ``received``
    sink: ReplySink | None  # where replies go (None: store only, e.g. a test)
    language: str
    note: str = ""  # put before the answer (e.g. "your message was cut")
    # pictures the model sees with this message only (image content parts; engine.attachments)
    images: tuple[dict[str, Any], ...] = ()

    @property
    def text(self) -> str:
        return self.message.text

    @property
    def customer(self) -> str:
        return f"customer:{self.conv.customer_id}"


class TurnRunner:
    def __init__(self, core: Core, delivery: Delivery, transitions: Transitions,
                 detector: HandoffDetector, limits: Limits,
                 search: Callable[[str], Awaitable[list[Hit]]],
                 answering: Answering | None) -> None:
        self.core, self.delivery, self.transitions = core, delivery, transitions
        self.detector, self.limits, self.search = detector, limits, search
        self.answering = answering

    @property
    def settings(self) -> Settings:
        return self.core.settings

    async def respond(self, turn: Turn) -> Reply:
        conv = turn.conv
        rule = decide(conv.status, Event.CUSTOMER_WRITES, Actor.CUSTOMER)
        if rule.does(Effect.RELAY_TO_STAFF):
            await self.core.store.set_message_state(turn.message.id, "relayed")
            await self.core.desk_call(conv.platform, "relay_to_staff", conv.id, turn.text)
            return Reply(conv.id, Outcome.RELAYED, language=turn.language)

        self.detector.refresh()
        detection = self.detector.detect(turn.text)
        if detection.handoff:
            return await self.hand_off(
                turn, Event.CUSTOMER_ASKS_FOR_HUMAN, Actor.CUSTOMER, turn.customer,
                reason=detection.reason,
                staff_reason=f"asked for a person: '{_quote(turn.text)}'",
            )

        # after the handoff check: a limited customer can still ask for a person
        verdict = await self.limits.check(self.core.store, conv.platform, conv.customer_id)
        if verdict is not None:
            return await self._limited(turn, verdict)

        hits = await self.search(turn.text)
        confident = [h for h in hits if h.score >= self.settings.faq_confidence]
        if self.answering is None:
            if confident:  # an FAQ answer in full; an imported passage as an excerpt and its link
                best, text = offline_answer(confident, lambda name, **values: self.core.words(
                    name, turn.language, turn.conv.customer_name, **values))
                return await self._answer(turn, _with_note(turn.note, text), Outcome.FAQ,
                                          sources=[best])
            return await self._fail(turn, Outcome.DONT_KNOW)

        snippets = confident or hits[:1]
        try:
            draft = await self.answering.draft(turn, snippets)
        except LLMError as exc:
            log.warning("LLM could not answer: %s", exc, extra={"error": type(exc).__name__})
            return await self._fail(turn, Outcome.LLM_FAILED)
        if draft.interrupted:
            return await self._interrupted(turn, draft)
        # The one place the model's request for a person is read: its hand_off_to_human tool
        # call, else the marker in its text (handoff.llm_handoff).
        answer, llm_reason = llm_handoff(draft.text, draft.completion)
        if llm_reason:
            return await self.hand_off(
                turn, Event.LLM_ASKS_FOR_HUMAN, Actor.BOT, "bot", reason=llm_reason,
                text=answer or None, already_sent=draft.sent,
            )
        if not answer.strip():
            return await self._fail(turn, Outcome.DONT_KNOW)
        return await self._answer(turn, _with_note(turn.note, answer), Outcome.LLM,
                                  sources=snippets, completion=draft.completion,
                                  already_sent=draft.sent)

    async def _limited(self, turn: Turn, verdict: Verdict) -> Reply:
        """Past a limit: one notice per window, then silence; the LLM is never asked."""
        conv = turn.conv
        metrics.LIMITED.labels(conv.platform, verdict.kind).inc()
        log.info("customer limited", extra={"limit": verdict.kind, "notified": verdict.notify})
        text: str | None = None
        message_id = None
        if verdict.notify:
            text = self.core.words(verdict.message, turn.language, conv.customer_name)
            message_id = await self.delivery.deliver(
                conv.id, turn.message, text, turn.sink, outcome=Outcome.LIMITED,
                author=verdict.author,
            )
        await self.core.store.set_message_state(turn.message.id, "limited")
        return Reply(conv.id, Outcome.LIMITED, text=text if message_id else None,
                     language=turn.language, message_id=message_id)

    async def _answer(
        self, turn: Turn, text: str, outcome: Outcome, *, sources: list[Hit],
        completion: Completion | None = None, already_sent: str | bool | None = None,
        conversation_values: dict[str, Any] | None = None,
    ) -> Reply:
        conv = turn.conv
        cited = [Source(h.entry.id, h.entry.question, h.entry.url, round(h.score, 4))
                 for h in sources]
        reply = Reply(conv.id, outcome, text=text, sources=cited, language=turn.language)
        usage: dict[str, Any] = {}
        if completion is not None:
            usage = {
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "usage_estimated": completion.usage_estimated,
            }
        if outcome.rated and conv.failures:
            conversation_values = {**(conversation_values or {}), "failures": 0}
        delivered = await self.delivery.deliver(
            conv.id, turn.message, text, turn.sink, outcome=outcome,
            sources={"ids": [s.id for s in cited]}, already_sent=already_sent,
            conversation_values=conversation_values, **usage,
        )
        if delivered is None:
            reply.text = None
            reply.outcome = Outcome.RELAYED
            return reply
        reply.message_id = delivered
        return reply

    async def _fail(self, turn: Turn, outcome: Outcome) -> Reply:
        """Don't know, or the LLM failed: say so honestly, offer a human, and after N in a row
        hand the thread over."""
        conv = turn.conv
        failures = conv.failures + 1
        values: dict[str, Any] = {"failures": failures}
        if outcome is Outcome.LLM_FAILED:
            values["bot_failed"] = True
        conv.failures = failures
        if failures >= self.settings.failures_before_handoff:
            return await self.hand_off(
                turn, Event.REPEATED_FAILURE, Actor.BOT, "bot",
                reason=f"repeated_failure:{outcome}", conversation_values=values,
            )
        name = "llm_failed" if outcome is Outcome.LLM_FAILED else "dont_know"
        text = _with_note(turn.note, self.core.words(name, turn.language, conv.customer_name))
        return await self._answer(turn, text, outcome, sources=[],
                                  conversation_values=values)

    async def hand_off(
        self, turn: Turn, event: Event, by: Actor, actor: str, *, reason: str,
        staff_reason: str | None = None, text: str | None = None,
        already_sent: str | bool | None = None,
        conversation_values: dict[str, Any] | None = None,
    ) -> Reply:
        """The thread goes to staff (through the handoff table); the customer is told, in
        the model's words when it gave some, else with the standard notice."""
        conv = turn.conv
        words = text if text is not None else self.core.handoff_notice(turn.language,
                                                                        conv.customer_name)
        delivered: list[int | None] = []

        async def tell_customer() -> None:
            delivered.append(await self.delivery.deliver(
                conv.id, turn.message, words, turn.sink, outcome=Outcome.HANDOFF,
                check_owner=False, already_sent=already_sent,
                conversation_values=conversation_values,
            ))

        applied = await self.transitions.apply(
            conv.id, event, by, actor, reason=reason, staff_reason=staff_reason,
            tell_customer=tell_customer, handoff_reason=(staff_reason or reason)[:255],
        )
        if applied is None:  # not ours to hand off any more (staff took it meanwhile)
            delivered.append(await self.delivery.deliver(
                conv.id, turn.message, words, turn.sink, outcome=Outcome.HANDOFF,
                check_owner=True, already_sent=already_sent,
                conversation_values=conversation_values,
            ))
        if delivered[-1] is None:
            return Reply(conv.id, Outcome.RELAYED, language=turn.language)
        return Reply(conv.id, Outcome.HANDOFF, text=words, handed_off=True,
                     language=turn.language, message_id=delivered[-1])

    async def _interrupted(self, turn: Turn, draft: Draft) -> Reply:
        """Staff took over mid-stream: keep what the customer saw, as an interrupted reply (not
        an answer: no rating), and the customer's message goes to staff."""
        conv = turn.conv
        await self.core.store.record_interrupted(
            conv.id, turn.message.id, draft.text,
            draft.sent if isinstance(draft.sent, str) else None,
        )
        await self.core.desk_call(conv.platform, "relay_to_staff", conv.id, turn.text)
        return Reply(conv.id, Outcome.INTERRUPTED, text=draft.text or None,
                     language=turn.language)


def _with_note(note: str, text: str) -> str:
    return f"{note}\n\n{text}" if note else text


def _quote(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
