"""The staff side in Slack: a channel with one notification per handed-off thread and buttons.

Implements the engine's ``StaffDesk``. Only ``Settings.slack_staff_user_ids`` may act; anyone
else pressing a button is refused with an ephemeral notice and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from supportbot.engine.types import (
    Attachment,
    ConversationView,
    FileUnavailable,
    StaffWrote,
    Status,
)

from .events import SlackText, strip_mention
from .files import SlackFiles, describe
from .mrkdwn import escape
from .sink import SlackPoster

if TYPE_CHECKING:
    from supportbot.engine import Engine

log = logging.getLogger(__name__)

ACTION_PREFIX = "supportbot_"
TAKE_OVER, HAND_BACK, CLOSE = "supportbot_take_over", "supportbot_hand_back", "supportbot_close"
# the buttons' labels: keys of prompts/messages/<lang>.yaml, in SUPPORTBOT_STAFF_LANGUAGE
_LABEL_KEYS = {TAKE_OVER: "staff_take_over", HAND_BACK: "staff_hand_back", CLOSE: "staff_close"}
# the handoff table's staff events (``engine.handoff.Event``) and their buttons
_BUTTON_FOR = {"staff_takes": TAKE_OVER, "hand_back": HAND_BACK, "close": CLOSE}
_STATUS_TEXT = {
    Status.BOT: "the bot is answering",
    Status.WAITING: "waiting for a human",
    Status.HUMAN: "a human owns the thread",
    Status.CLOSED: "closed",
}
NOT_STAFF = "Only support staff can use these buttons."


class SlackDesk:
    """Staff channel notifications, relays and button handling."""

    def __init__(
        self,
        engine: Engine,
        poster: SlackPoster,
        staff_channel: str | None,
        staff_user_ids: list[str],
    ) -> None:
        self.engine = engine
        self.poster = poster
        self.staff_channel = staff_channel
        self.staff_user_ids = frozenset(staff_user_ids)
        self.files = SlackFiles(poster.client)

    def _label(self, key: str) -> str:
        """A button's label from the bot's own words, in ``SUPPORTBOT_STAFF_LANGUAGE``."""
        return self.engine.prompts.message(key, self.engine.settings.staff_language)

    def is_staff(self, user_id: str | None) -> bool:
        return bool(user_id) and user_id in self.staff_user_ids

    # -- StaffDesk -------------------------------------------------------------------------

    async def handoff_requested(self, conversation: ConversationView, reason: str) -> None:
        if not self.staff_channel:
            log.warning(
                "handoff for conversation %s but no Slack staff channel is configured",
                conversation.id,
            )
            return
        text, blocks = await self._render(conversation, reason)
        stamps = await self.poster.post(self.staff_channel, text, blocks=blocks)
        if stamps:
            await self.engine.set_staff_ref(conversation.id, f"{self.staff_channel}:{stamps[0]}")

    async def relay_files(self, conversation: ConversationView,
                          attachments: list[Attachment]) -> None:
        """A customer's files during a handoff (their text was relayed already): shared again
        in the notification's thread, or described there (no link) when Slack would not give
        or take one."""
        ref = _parse_ref(conversation.staff_ref)
        if ref is None:
            return
        channel, ts = ref
        who = _customer(conversation)
        for attachment in attachments:
            if attachment.kind in ("image", "file"):
                try:
                    data = await self.files.fetch(attachment, self.engine.settings.max_file_bytes)
                except FileUnavailable as exc:
                    log.warning("could not fetch a customer's file for staff: %s", exc)
                else:
                    if await self.files.upload(channel, ts, attachment, data,
                                               comment=f"{who} sent a file:"):
                        continue
            await self.poster.post(channel, f"{who} sent {escape(describe(attachment))}; it "
                                   "could not be passed on here.", thread_ts=ts)

    async def relay_to_staff(self, conversation: ConversationView, text: str) -> None:
        ref = _parse_ref(conversation.staff_ref)
        if ref is None:  # no notification yet (e.g. staff channel configured later)
            await self.handoff_requested(conversation, "the customer wrote while waiting")
            return
        channel, ts = ref
        who = _customer(conversation)
        await self.poster.post(channel, f"{who}:\n>{escape(text)}", thread_ts=ts)

    # -- staff writing in a notification's thread ------------------------------------------

    async def on_staff_thread(self, t: SlackText, bot_user_id: str | None = None) -> None:
        """Someone wrote in the staff channel. In a notification's thread, from staff: the
        customer gets it wherever they wrote (a DM too), and the writer takes the thread over
        if nobody had; a message starting with the note prefix stays an internal note."""
        if not t.thread_ts or not self.is_staff(t.user):
            return  # staff talk among themselves in the channel itself
        conv = await self.engine.find_by_staff_ref("slack", f"{t.channel}:{t.thread_ts}")
        if conv is None:
            return
        text = strip_mention(t.text, bot_user_id).strip()
        if t.files:
            await self._staff_files(conv, t, text)
            return
        if not text:
            await self._ephemeral(t.channel, t.user, "Only text reaches the customer from here: "
                                  "attachments were not passed on.", t.thread_ts)
            return
        wrote = await self.engine.staff_message(
            conv.id, f"slack:{t.user}", text, deliver=True, event_id=f"slack:{t.message_id}"
        )
        notice = {
            StaffWrote.NOTE: "Internal note saved; the customer does not see it.",
            StaffWrote.CLOSED: "This conversation is closed; the customer did not get this.",
        }.get(wrote)
        if notice is not None:
            await self._ephemeral(t.channel, t.user, notice, t.thread_ts)
        elif wrote is StaffWrote.SENT and t.has_files:
            await self._ephemeral(t.channel, t.user, "The customer got your text; attachments "
                                  "are not passed on from Slack.", t.thread_ts)

    async def _staff_files(self, conv: ConversationView, t: SlackText, text: str) -> None:
        """Staff sent files (and maybe text) in a notification's thread: stored like a reply
        (the writer takes over), then each file is shared again where the customer wrote, the
        text as its comment. A note's files stay in the staff channel."""
        names = " ".join(f"[file: {' '.join(f.filename.split())[:80]}]" for f in t.files)
        wrote = await self.engine.staff_message(
            conv.id, f"slack:{t.user}", text if self.engine.is_staff_note(text)
            else f"{names} {text}".strip(), event_id=f"slack:{t.message_id}",
        )
        if wrote is not StaffWrote.SENT:
            notice = {
                StaffWrote.NOTE: "Internal note saved; the customer does not see it.",
                StaffWrote.CLOSED: "This conversation is closed; the customer did not get this.",
            }.get(wrote)
            if notice is not None:
                await self._ephemeral(t.channel, t.user, notice, t.thread_ts)
            return
        parts = conv.thread_key.split(":")
        channel = parts[1] if len(parts) > 1 else parts[0]
        thread_ts = parts[2] if len(parts) > 2 else None
        comment: str | None = text or None
        failed = []
        for attachment in t.files:
            try:
                data = await self.files.fetch(attachment, self.engine.settings.max_file_bytes)
            except FileUnavailable as exc:
                log.warning("could not fetch a staff file: %s", exc)
                failed.append(attachment)
                continue
            if await self.files.upload(channel, thread_ts, attachment, data, comment):
                comment = None  # the text goes with the first file only
            else:
                failed.append(attachment)
        if comment:  # no file went out: the words still must
            await self.poster.post(channel, comment, thread_ts=thread_ts)
        if failed:
            listed = ", ".join(escape(describe(a)) for a in failed)
            await self._ephemeral(t.channel, t.user, f"Not passed on to the customer: {listed}.",
                                  t.thread_ts)

    async def status_changed(self, conversation: ConversationView, actor: str) -> None:
        ref = _parse_ref(conversation.staff_ref)
        if ref is None:
            return
        channel, ts = ref
        text, blocks = await self._render(conversation, None)
        await self.poster.update(channel, ts, text, blocks=blocks)
        who = _actor(actor)
        note = {
            Status.HUMAN: f"{who} took over.",
            Status.BOT: f"{who} handed the thread back to the bot.",
            Status.CLOSED: f"{who} closed the conversation.",
            Status.WAITING: f"{who} asked for a human.",
        }[conversation.status]
        await self.poster.post(channel, note, thread_ts=ts)

    # -- buttons ---------------------------------------------------------------------------

    async def handle_action(self, body: dict[str, Any]) -> None:
        """A staff button was pressed (already acknowledged)."""
        user = (body.get("user") or {}).get("id")
        action = (body.get("actions") or [{}])[0]
        action_id = action.get("action_id", "")
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
            "channel_id"
        )
        if not self.is_staff(user):
            log.warning("refused %s from non-staff user %s", action_id, user)
            if channel and user:
                await self._ephemeral(channel, user, NOT_STAFF)
            return
        try:
            conversation_id = int(action.get("value", ""))
        except ValueError:
            log.warning("button %s without a conversation id", action_id)
            return
        actor = f"slack:{user}"
        operation = {
            TAKE_OVER: self.engine.take_over,
            HAND_BACK: self.engine.hand_back,
            CLOSE: self.engine.close,
        }.get(action_id)
        if operation is None:
            return
        if await operation(conversation_id, actor):
            log.info("%s by %s on conversation %s", action_id, actor, conversation_id)
            return
        view = await self.engine.get_conversation(conversation_id)
        state = _STATUS_TEXT.get(view.status, str(view.status)) if view else "gone"
        owner = f" ({_actor(view.assignee)})" if view and view.assignee else ""
        if channel and user:
            await self._ephemeral(channel, user, f"Nothing changed: {state}{owner}.")

    async def _ephemeral(self, channel: str, user: str, text: str,
                         thread_ts: str | None = None) -> None:
        try:
            await self.poster.ephemeral(channel, user, text, thread_ts=thread_ts)
        except SlackApiError as exc:
            log.warning("could not send an ephemeral notice: %s", exc.response.get("error"))

    # -- rendering -------------------------------------------------------------------------

    async def _render(
        self, conversation: ConversationView, reason: str | None
    ) -> tuple[str, list[dict[str, Any]]]:
        status = conversation.status
        who = _customer(conversation)
        where = await self._where(conversation)
        head = f"*Conversation #{conversation.id}* with {who}{where}"
        lines = [head, f"*Status:* {_STATUS_TEXT.get(status, str(status))}"]
        if conversation.assignee:
            lines.append(f"*Assignee:* {_actor(conversation.assignee)}")
        reason = reason or conversation.handoff_reason
        if reason:
            lines.append(f"*Reason:* {escape(reason)}")
        if conversation.summary:
            lines.append(f"*Summary:* {escape(conversation.summary)[:1500]}")
        recent = [
            f"{_ROLE.get(t.role, t.role)}: {escape(' '.join(t.text.split()))[:300]}"
            for t in conversation.recent[-6:]
        ]
        text = "\n".join(lines)
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}}
        ]
        if recent:
            blocks.append(
                {
                    "type": "context",
                    "elements": [{"type": "mrkdwn", "text": "\n".join(recent)[:2900]}],
                }
            )
        buttons = _buttons(conversation, self._label)
        if buttons:
            blocks.append({"type": "actions", "block_id": "supportbot", "elements": buttons})
        return text, blocks

    async def _where(self, conversation: ConversationView) -> str:
        if conversation.platform != "slack":
            return f" on {escape(conversation.platform)}"
        parts = conversation.thread_key.split(":")
        if len(parts) < 2:
            return ""
        channel = parts[1]
        if len(parts) < 3:
            return f" in <#{channel}>" if channel[:1] != "D" else " (direct message)"
        try:
            resp = await self.poster.call("chat.getPermalink", channel=channel, message_ts=parts[2])
            return f" in <{resp['permalink']}|this thread>"
        except SlackApiError:
            return f" in <#{channel}>"


_ROLE = {"user": "Customer", "assistant": "Bot", "staff": "Staff", "system": "Note"}


def _buttons(conversation: ConversationView,
             label: Callable[[str], str]) -> list[dict[str, Any]]:
    """One button per staff action the handoff table allows now; ``label`` names the action's
    message key in the staff's language."""
    out = []
    for event in conversation.staff_actions:
        action_id = _BUTTON_FOR[event]
        button: dict[str, Any] = {
            "type": "button",
            "action_id": action_id,
            "text": {"type": "plain_text", "text": label(_LABEL_KEYS[action_id])},
            "value": str(conversation.id),
        }
        if action_id == TAKE_OVER:
            button["style"] = "primary"
        elif action_id == CLOSE:
            button["style"] = "danger"
        out.append(button)
    return out


def _customer(conversation: ConversationView) -> str:
    if conversation.platform == "slack":
        return f"<@{conversation.customer_id}>"
    return escape(conversation.customer_name or conversation.customer_id)


def _actor(actor: str) -> str:
    platform, _, user = actor.partition(":")
    return f"<@{user}>" if platform == "slack" and user else escape(actor)


def _parse_ref(ref: str | None) -> tuple[str, str] | None:
    if not ref or ":" not in ref:
        return None
    channel, ts = ref.split(":", 1)
    return channel, ts
