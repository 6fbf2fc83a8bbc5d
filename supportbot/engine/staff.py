"""What staff (and a customer's ``/human`` or ``/new``) do to a conversation, as handoff events.

Every action here is one event of the handoff table; nothing compares statuses by hand. The same
methods serve both adapters' desks and the CLI (``conversations take/handback/close``).
"""

from __future__ import annotations

import logging

from supportbot.engine.core import Core
from supportbot.engine.delivery import Delivery
from supportbot.engine.handoff import Actor, Effect, Event
from supportbot.engine.transitions import Transitions
from supportbot.engine.types import ConversationView, ReplySink, StaffWrote

log = logging.getLogger("supportbot.engine")


class StaffActions:
    def __init__(self, core: Core, delivery: Delivery, transitions: Transitions) -> None:
        self.core, self.delivery, self.transitions = core, delivery, transitions

    async def take_over(self, conversation_id: int, actor: str) -> bool:
        return await self.transitions.apply(
            conversation_id, Event.STAFF_TAKES, Actor.STAFF, actor, reason="take over"
        ) is not None

    async def hand_back(self, conversation_id: int, actor: str) -> bool:
        return await self.transitions.apply(
            conversation_id, Event.HAND_BACK, Actor.STAFF, actor, reason="hand back"
        ) is not None

    async def close(self, conversation_id: int, actor: str, *, notify: bool = True) -> bool:
        return await self.transitions.apply(
            conversation_id, Event.CLOSE, Actor.STAFF, actor, reason="close", notice=notify
        ) is not None

    def is_note(self, text: str) -> bool:
        prefix = self.core.settings.staff_note_prefix.strip().lower()
        return bool(prefix) and text.lstrip().lower().startswith(prefix)

    async def message(self, conversation_id: int, actor: str, text: str, *,
                      deliver: bool = False, event_id: str | None = None) -> StaffWrote:
        """A staff member wrote in the conversation's staff thread or topic.

        A note (``staff_note_prefix``) is stored for the audit trail and never reaches the
        customer. Anything else is stored, and the writer owns the thread (takes it over if
        nobody had). With ``deliver`` the engine sends it to the customer; otherwise the desk
        does (Telegram copies the message, media included). ``CLOSED``: nobody gets it.
        ``event_id`` (``<platform>:<id>``) makes a redelivery of the same message a no-op."""
        conv = await self.core.store.conversation(conversation_id)
        if conv is None:
            return StaffWrote.MISSING
        if event_id is not None and not await self.core.store.claim_event(
            conv.platform, f"staff:{event_id}"
        ):
            return StaffWrote.DUPLICATE
        if self.is_note(text):
            await self.core.store.add_message(conversation_id, "staff", text, "note",
                                              author=actor, outcome="note")
            log.info("staff note stored", extra={"conversation_id": conversation_id})
            return StaffWrote.NOTE
        applied = await self.transitions.apply(
            conversation_id, Event.STAFF_REPLIES, Actor.STAFF, actor, reason="staff reply"
        )
        if applied is None:
            return StaffWrote.CLOSED
        await self.core.store.add_message(conversation_id, "staff", text, "sent", author=actor)
        if deliver and applied.rule.does(Effect.REACHES_CUSTOMER):
            await self.delivery.send_staff_text(conversation_id, text)
        return StaffWrote.SENT

    async def request_handoff(
        self, platform: str, thread_key: str, customer_id: str, reason: str, actor: str, *,
        sink: ReplySink | None = None, language: str, customer_name: str = "",
    ) -> ConversationView:
        """An explicit request (``/human``): open the conversation if needed and hand it over;
        the customer hears that a person will reply (again, if one already was asked for)."""
        async with self.core.thread(platform, thread_key):
            conv = await self.core.store.open_conversation(
                platform=platform, thread_key=thread_key, customer_id=customer_id,
                language=language, customer_name=customer_name,
            )
            words = "asked for a person (/human)"
            await self.transitions.apply(
                conv.id, Event.CUSTOMER_ASKS_FOR_HUMAN, Actor.CUSTOMER, actor, reason=reason,
                staff_reason=words, sink=sink, handoff_reason=words,
            )
        view = await self.core.view(conv.id)
        assert view is not None
        return view

    async def new_conversation(self, platform: str, thread_key: str, actor: str) -> None:
        """The customer starts over (``/new``): the open conversation closes quietly."""
        async with self.core.thread(platform, thread_key):
            conv = await self.core.store.find_open(platform, thread_key)
            if conv is not None:
                await self.transitions.apply(conv.id, Event.CLOSE, Actor.CUSTOMER, actor,
                                             reason="new conversation", notice=False)
