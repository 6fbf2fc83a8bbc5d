"""A loopback Telegram Bot API server for tests, driven through python-telegram-bot itself.

It keeps just enough state (chats, forum topics, messages, queued updates, a webhook) for the
methods the bot calls, records every request, and fails on demand (429 ``retry_after``,
"can't parse entities", "message thread not found") or answers slowly (``slow``) so error and
timing paths run against the real client.
Point the bot at it with ``SUPPORTBOT_TELEGRAM_API_URL=<fake.url>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from supportbot.testing.waiting import eventually

BOT_ID = 7000000001
BOT_USERNAME = "supportbot_test_bot"
MAX_TEXT = 4096

# Parameters PTB sends form-encoded that are integers on the wire.
_INT_PARAMS = {
    "chat_id",
    "from_chat_id",
    "message_id",
    "message_thread_id",
    "user_id",
    "offset",
    "limit",
    "timeout",
    "icon_color",
    "max_connections",
    "draft_id",
}
_JSON_PARAMS = {
    "reply_parameters",
    "allowed_updates",
    "entities",
    "caption_entities",
    "reply_markup",
    "link_preview_options",
    "commands",
}
_TEXT_PARAMS = {"text", "caption", "name", "secret_token", "url", "callback_query_id"}
_ALLOWED_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "span",
    "tg-spoiler",
    "a",
    "code",
    "pre",
    "blockquote",
    "tg-emoji",
}
_TAG = re.compile(r"<(/?)([a-zA-Z-]+)(\s[^<>]*)?>")
_ENTITY = re.compile(r"&(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")


def utf16_len(text: str) -> int:
    """Telegram measures text in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def check_html(text: str) -> str:
    """Validate Telegram HTML like the real API does (roughly); return the visible text.

    Raises ValueError with Telegram's wording when the markup would be rejected.
    """
    stack: list[str] = []
    visible: list[str] = []
    pos = 0
    while pos < len(text):
        ch = text[pos]
        if ch == "<":
            m = _TAG.match(text, pos)
            if not m or m.group(2).lower() not in _ALLOWED_TAGS:
                raise ValueError(
                    f"can't parse entities: Unsupported start tag at byte offset {pos}"
                )
            name = m.group(2).lower()
            if m.group(1):
                if not stack or stack[-1] != name:
                    raise ValueError(
                        f"can't parse entities: Unexpected end tag at byte offset {pos}"
                    )
                stack.pop()
            else:
                stack.append(name)
            pos = m.end()
        elif ch == "&":
            m = _ENTITY.match(text, pos)
            if not m:
                raise ValueError(f"can't parse entities: Unsupported entity at byte offset {pos}")
            visible.append(html.unescape(m.group(0)))
            pos = m.end()
        elif ch == ">":
            raise ValueError(f"can't parse entities: Unexpected '>' at byte offset {pos}")
        else:
            visible.append(ch)
            pos += 1
    if stack:
        raise ValueError(f"can't parse entities: Can't find end tag corresponding to {stack[-1]}")
    return "".join(visible)


class ApiError(Exception):
    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.code, self.description, self.parameters = code, description, parameters


@dataclass
class Call:
    """One request the fake received."""

    method: str
    params: dict[str, Any]
    at: float
    error: str | None = None  # description when the fake answered with an error


@dataclass
class Fault:
    method: str
    code: int
    description: str
    parameters: dict[str, Any] | None
    times: int
    match: Callable[[dict[str, Any]], bool] | None


@dataclass
class Chat:
    id: int
    type: str  # private | group | supergroup
    title: str | None = None
    is_forum: bool = False
    topics: dict[int, str] = field(default_factory=dict)
    closed_topics: set[int] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.title:
            data["title"] = self.title
        if self.type == "private":
            data["first_name"] = f"user{self.id}"
        if self.is_forum:
            data["is_forum"] = True
        return data


class FakeTelegram:
    """Bot API on ``http://127.0.0.1:<port>/bot<token>/<method>``; use ``.url`` as the base URL."""

    def __init__(self, token: str = "123456:TEST-TOKEN", *, poll_wait: float = 0.3) -> None:
        self.token = token
        self.poll_wait = poll_wait  # getUpdates long-polls at most this long
        self.bot_user = {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "Support",
            "username": BOT_USERNAME,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.webhook: dict[str, Any] | None = None
        self._lock = threading.RLock()
        self._calls: list[Call] = []
        self._faults: list[Fault] = []
        self._delays: dict[str, float] = {}
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._topic_ids = itertools.count(1001)
        self._chats: dict[int, Chat] = {}
        self._messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._bot_messages: list[tuple[int, int]] = []  # (chat_id, message_id) in send order
        self._members: dict[tuple[int, int], str] = {}
        self._queries: dict[str, dict[str, Any] | None] = {}  # callback id -> its answer
        self._query_ids = itertools.count(1)
        self._drafts: dict[tuple[int, int], list[str]] = {}  # (chat, draft id) -> texts shown
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._new_update: asyncio.Event | None = None
        # files the bot may fetch (getFile + /file/bot<token>/<path>), and downloads to refuse
        self.files: dict[str, bytes] = {}
        self.file_failures: dict[str, int] = {}  # file_id -> HTTP status of its download
        self._file_ids = itertools.count(1)
        self.port = 0

    # ---------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        """Base URL for PTB's ``base_url`` (the token is appended by PTB)."""
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    def start(self) -> FakeTelegram:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # pragma: no cover - surfaced via start()
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-telegram", daemon=True)
        self._thread.start()
        if not ready.wait(10) or errors:
            raise RuntimeError(f"fake Telegram did not start: {errors}")
        return self

    async def _serve(self) -> None:
        self._new_update = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]  # the port the OS chose

    def stop(self) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- knobs
    def fail(
        self,
        method: str,
        *,
        retry_after: int | None = None,
        description: str | None = None,
        code: int = 400,
        times: int = 1,
        match: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        """Answer the next ``times`` matching ``method`` calls with an error.

        ``retry_after`` gives a 429 flood-control error; otherwise ``description`` with ``code``
        (e.g. "Bad Request: can't parse entities: ...").
        """
        if retry_after is not None:
            code, description = 429, f"Too Many Requests: retry after {retry_after}"
            parameters: dict[str, Any] | None = {"retry_after": retry_after}
        else:
            parameters = None
            description = description or "Bad Request: injected failure"
        with self._lock:
            self._faults.append(Fault(method, code, description, parameters, times, match))

    def flaky(self, method: str, *, every: int, code: int = 502) -> None:
        """Answer every ``every``-th ``method`` call with HTTP ``code`` (a gateway error)."""
        calls = itertools.count(1)
        self.fail(method, code=code, description="Bad Gateway", times=10**9,
                  match=lambda _: next(calls) % every == 0)

    def flood_drafts(self, *, at: int, retry_after: int = 1) -> None:
        """Answer the ``at``-th ``sendMessageDraft`` call (counting from 1) with a 429 flood
        wait of ``retry_after`` seconds, as Telegram does to a stream drafting too fast."""
        calls = itertools.count(1)
        self.fail("sendMessageDraft", retry_after=retry_after,
                  match=lambda _: next(calls) == at)

    def slow(self, method: str, seconds: float) -> None:
        """Answer every ``method`` call only after ``seconds`` (0 makes it quick again)."""
        with self._lock:
            self._delays[method] = seconds

    def add_chat(
        self,
        chat_id: int,
        type: str = "supergroup",
        title: str | None = None,
        *,
        forum: bool = False,
    ) -> None:
        with self._lock:
            self._chats[chat_id] = Chat(chat_id, type, title or f"chat {chat_id}", forum)

    def set_member(self, chat_id: int, user_id: int, status: str) -> None:
        """``status``: creator | administrator | member | restricted | left | kicked."""
        with self._lock:
            self._members[(chat_id, user_id)] = status

    def delete_topic(self, chat_id: int, thread_id: int) -> None:
        """Simulate staff deleting a forum topic."""
        with self._lock:
            self._chat(chat_id).topics.pop(thread_id, None)

    def topics(self, chat_id: int) -> dict[int, str]:
        with self._lock:
            return dict(self._chat(chat_id).topics)

    # ---------------------------------------------------------------- inspection
    def calls(self, method: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def sent(self, chat_id: int | None = None, thread_id: int | None = None) -> list[dict]:
        """Messages the bot sent (or copied), in order, as they look now (after edits)."""
        with self._lock:
            out = []
            for key in self._bot_messages:
                msg = self._messages[key]
                if chat_id is not None and key[0] != chat_id:
                    continue
                if thread_id is not None and msg.get("message_thread_id") != thread_id:
                    continue
                out.append(dict(msg))
            return out

    def drafts(self, chat_id: int) -> dict[int, list[str]]:
        """The drafts shown in a chat: draft id -> each text it was animated to, in order."""
        with self._lock:
            return {d: list(t) for (c, d), t in self._drafts.items() if c == chat_id}

    def chat_actions(self, chat_id: int) -> list[tuple[str, int | None]]:
        """``sendChatAction`` calls Telegram accepted for a chat: (action, message_thread_id)."""
        return [
            (str(c.params.get("action")), c.params.get("message_thread_id"))
            for c in self.calls("sendChatAction")
            if c.error is None and c.params.get("chat_id") == chat_id
        ]

    def texts(self, chat_id: int | None = None, thread_id: int | None = None) -> list[str]:
        return [m.get("text") or m.get("caption") or "" for m in self.sent(chat_id, thread_id)]

    def pending_updates(self) -> int:
        with self._lock:
            return len(self._updates)

    async def wait_for(self, predicate: Callable[[], Any], within: float = 5.0) -> Any:
        """Poll ``predicate`` (without blocking the event loop) until it is truthy."""
        return await eventually(predicate, within=within,
                                what=lambda: f"the condition (calls: {self._summary()})")

    def _summary(self) -> str:
        return ", ".join(f"{c.method}{'!' if c.error else ''}" for c in self.calls()[-30:])

    # ---------------------------------------------------------------- update builders
    def push(self, *updates: dict[str, Any]) -> None:
        """Queue updates for getUpdates (polling mode)."""
        with self._lock:
            self._updates.extend(updates)
        if self._loop and self._new_update:
            self._loop.call_soon_threadsafe(self._new_update.set)

    def _user(self, user_id: int, first_name: str, language_code: str | None) -> dict[str, Any]:
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if language_code:
            user["language_code"] = language_code
        return user

    def _message(
        self,
        chat: Chat,
        user: dict[str, Any] | None,
        text: str | None,
        *,
        thread_id: int | None = None,
        reply_to: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        sender_chat: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            msg: dict[str, Any] = {
                "message_id": next(self._message_ids),
                "date": int(time.time()),
                "chat": chat.to_json(),
            }
            if user:
                msg["from"] = user
            if sender_chat:
                msg["sender_chat"] = sender_chat
            if text is not None:
                msg["text"] = text
                entities = []
                m = re.match(r"/\w+(@\w+)?", text)
                if m:
                    entities.append({"type": "bot_command", "offset": 0, "length": m.end()})
                for mm in re.finditer(r"@\w+", text):
                    if m and mm.start() < m.end():
                        continue
                    entities.append(
                        {
                            "type": "mention",
                            "offset": utf16_len(text[: mm.start()]),
                            "length": utf16_len(mm.group(0)),
                        }
                    )
                if entities:
                    msg["entities"] = entities
            if thread_id is not None:
                msg["message_thread_id"] = thread_id
                if chat.is_forum:
                    msg["is_topic_message"] = True
            if reply_to:
                msg["reply_to_message"] = reply_to
            msg.update(extra or {})
            self._messages[(chat.id, msg["message_id"])] = msg
            return msg

    def _update(self, msg: dict[str, Any], kind: str = "message") -> dict[str, Any]:
        with self._lock:
            return {"update_id": next(self._update_ids), kind: msg}

    def _ensure_chat(self, chat_id: int, type: str) -> Chat:
        with self._lock:
            if chat_id not in self._chats:
                self._chats[chat_id] = Chat(
                    chat_id, type, None if type == "private" else f"chat {chat_id}"
                )
            return self._chats[chat_id]

    def private_message(
        self,
        text: str,
        *,
        user_id: int = 111,
        first_name: str = "Alice",
        language_code: str | None = "en",
    ) -> dict[str, Any]:
        chat = self._ensure_chat(user_id, "private")
        user = self._user(user_id, first_name, language_code)
        return self._update(self._message(chat, user, text))

    def group_message(
        self,
        text: str,
        *,
        chat_id: int = -1001234,
        user_id: int = 222,
        first_name: str = "Bob",
        mention: bool = False,
        reply_to_bot: bool = False,
        thread_id: int | None = None,
        language_code: str | None = "en",
    ) -> dict[str, Any]:
        """A group message; ``mention`` prefixes ``@bot``, ``reply_to_bot`` replies to the bot."""
        chat = self._ensure_chat(chat_id, "supergroup")
        if thread_id is not None:
            chat.is_forum = True
            chat.topics.setdefault(thread_id, f"topic {thread_id}")
        if mention:
            text = f"@{BOT_USERNAME} {text}"
        reply_to = None
        if reply_to_bot:
            reply_to = self._message(chat, self.bot_user, "an earlier answer", thread_id=thread_id)
        user = self._user(user_id, first_name, language_code)
        return self._update(self._message(chat, user, text, thread_id=thread_id, reply_to=reply_to))

    def staff_message(
        self,
        text: str | None,
        *,
        chat_id: int,
        thread_id: int,
        user_id: int = 900,
        first_name: str = "Sam",
        reply_to_message_id: int | None = None,
        sender_chat: dict[str, Any] | None = None,
        photo: bool = False,
    ) -> dict[str, Any]:
        """A message in a forum topic of the staff group (the chat must exist: ``add_chat``)."""
        chat = self._chat(chat_id)
        reply_to = None
        if reply_to_message_id is not None:
            with self._lock:
                reply_to = self._messages.get((chat_id, reply_to_message_id))
        extra = {"photo": [_photo_size()]} if photo else None
        user = None if sender_chat else self._user(user_id, first_name, "en")
        if sender_chat:
            user = {
                "id": 1087968824,
                "is_bot": True,
                "first_name": "Group",
                "username": "GroupAnonymousBot",
            }
        return self._update(
            self._message(
                chat,
                user,
                text,
                thread_id=thread_id,
                reply_to=reply_to,
                extra=extra,
                sender_chat=sender_chat,
            )
        )

    def media_message(
        self,
        kind: str = "photo",
        *,
        user_id: int = 111,
        first_name: str = "Alice",
        caption: str | None = None,
    ) -> dict[str, Any]:
        """A private photo / sticker / voice message."""
        chat = self._ensure_chat(user_id, "private")
        extra: dict[str, Any] = {
            "photo": {"photo": [_photo_size()]},
            "sticker": {
                "sticker": {
                    "file_id": "stk",
                    "file_unique_id": "stku",
                    "width": 512,
                    "height": 512,
                    "is_animated": False,
                    "is_video": False,
                    "type": "regular",
                }
            },
            "voice": {"voice": {"file_id": "vc", "file_unique_id": "vcu", "duration": 3}},
        }[kind]
        if caption:
            extra["caption"] = caption
        user = self._user(user_id, first_name, "en")
        return self._update(self._message(chat, user, None, extra=extra))

    def add_file(self, data: bytes, *, file_id: str | None = None) -> str:
        """Make ``data`` downloadable by the bot; returns its ``file_id``."""
        with self._lock:
            file_id = file_id or f"file{next(self._file_ids)}"
            self.files[file_id] = data
        return file_id

    def photo_message(
        self,
        data: bytes,
        *,
        caption: str | None = None,
        user_id: int = 111,
        first_name: str = "Alice",
        language_code: str | None = "en",
        file_size: int | None = None,
    ) -> dict[str, Any]:
        """A private photo as Telegram sends it: sizes smallest first, the largest is ``data``
        (``file_size`` overrides the size Telegram reports, e.g. to claim a huge photo)."""
        file_id = self.add_file(data)
        sizes = [
            {"file_id": f"{file_id}-thumb", "file_unique_id": f"{file_id}-t", "width": 90,
             "height": 90, "file_size": 100},
            {"file_id": file_id, "file_unique_id": f"{file_id}-u", "width": 800, "height": 600,
             "file_size": len(data) if file_size is None else file_size},
        ]
        extra: dict[str, Any] = {"photo": sizes}
        if caption:
            extra["caption"] = caption
        chat = self._ensure_chat(user_id, "private")
        user = self._user(user_id, first_name, language_code)
        return self._update(self._message(chat, user, None, extra=extra))

    def document_message(
        self,
        data: bytes,
        *,
        file_name: str = "report.pdf",
        mime_type: str = "application/pdf",
        caption: str | None = None,
        user_id: int = 111,
        first_name: str = "Alice",
        language_code: str | None = "en",
    ) -> dict[str, Any]:
        """A private document (a file sent as a file)."""
        file_id = self.add_file(data)
        extra: dict[str, Any] = {"document": {
            "file_id": file_id, "file_unique_id": f"{file_id}-u", "file_name": file_name,
            "mime_type": mime_type, "file_size": len(data),
        }}
        if caption:
            extra["caption"] = caption
        chat = self._ensure_chat(user_id, "private")
        user = self._user(user_id, first_name, language_code)
        return self._update(self._message(chat, user, None, extra=extra))

    def edited(self, update: dict[str, Any], new_text: str) -> dict[str, Any]:
        """An ``edited_message`` update for the message in ``update``."""
        msg = dict(update.get("message") or update["edited_message"])
        msg["text"], msg["edit_date"] = new_text, int(time.time())
        msg.pop("entities", None)
        with self._lock:
            self._messages[(msg["chat"]["id"], msg["message_id"])] = msg
        return self._update(msg, "edited_message")

    def callback_query(
        self,
        message: dict[str, Any],
        data: str,
        *,
        user_id: int = 111,
        first_name: str = "Alice",
        language_code: str | None = "en",
    ) -> dict[str, Any]:
        """A ``callback_query`` update: ``user_id`` pressed an inline button with ``data`` under
        ``message`` (a message the bot sent, e.g. from :meth:`sent`)."""
        key = (int(message["chat"]["id"]), int(message["message_id"]))
        with self._lock:
            current = _public(dict(self._messages.get(key, message)))
            query_id = f"{next(self._query_ids)}{key[1]:06d}"
            self._queries[query_id] = None
        query = {
            "id": query_id,
            "from": self._user(user_id, first_name, language_code),
            "message": current,
            "chat_instance": f"ci{key[0]}",
            "data": data,
        }
        return self._update(query, "callback_query")

    def callback_answers(self) -> dict[str, dict[str, Any] | None]:
        """Callback query id -> the bot's ``answerCallbackQuery`` parameters (None: unanswered)."""
        with self._lock:
            return dict(self._queries)

    def keyboard(self, chat_id: int, message_id: int) -> list[list[dict[str, Any]]]:
        """The inline keyboard now under a message (``[]`` when it has none)."""
        with self._lock:
            msg = self._messages.get((chat_id, message_id)) or {}
            return list((msg.get("reply_markup") or {}).get("inline_keyboard") or [])

    # ---------------------------------------------------------------- HTTP
    def _chat(self, chat_id: int) -> Chat:
        with self._lock:
            if chat_id not in self._chats:
                raise ApiError(400, "Bad Request: chat not found")
            return self._chats[chat_id]

    async def _dispatch(self, request: web.Request) -> web.Response:
        parts = request.path.strip("/").split("/")
        if len(parts) >= 3 and parts[0] == "file":
            return self._download(parts[1][3:], "/".join(parts[2:]))
        if len(parts) != 2 or not parts[0].startswith("bot"):
            return _error(404, "Not Found")
        token, method = parts[0][3:], parts[1]
        try:
            params = await _read_params(request)
        except ConnectionResetError:  # the client went away mid-request (a bot shutting down)
            return _error(400, "Bad Request: connection lost")
        call = Call(method, params, time.time())
        with self._lock:
            self._calls.append(call)
        if token != self.token:
            call.error = "Unauthorized"
            return _error(401, "Unauthorized")
        delay = self._delays.get(method)
        if delay:
            await asyncio.sleep(delay)
        try:
            self._maybe_fault(method, params)
            handler = getattr(self, f"_api_{method.lower()}", None)
            if handler is None:
                raise ApiError(404, f"Not Found: method {method} not implemented by the fake")
            result = await handler(params) if method == "getUpdates" else handler(params)
        except ApiError as exc:
            call.error = exc.description
            return _error(exc.code, exc.description, exc.parameters)
        return web.json_response({"ok": True, "result": result})

    def _maybe_fault(self, method: str, params: dict[str, Any]) -> None:
        with self._lock:
            for fault in self._faults:
                if fault.method == method and fault.times > 0:
                    if fault.match and not fault.match(params):
                        continue
                    fault.times -= 1
                    raise ApiError(fault.code, fault.description, fault.parameters)

    # Bot API methods -------------------------------------------------------
    def _api_getme(self, p: dict[str, Any]) -> dict[str, Any]:
        return self.bot_user

    def _api_logout(self, p: dict[str, Any]) -> bool:
        return True

    def _api_setwebhook(self, p: dict[str, Any]) -> bool:
        with self._lock:
            self.webhook = {
                "url": p["url"],
                "secret_token": p.get("secret_token"),
                "allowed_updates": p.get("allowed_updates"),
            }
        return True

    def _api_deletewebhook(self, p: dict[str, Any]) -> bool:
        with self._lock:
            self.webhook = None
            if p.get("drop_pending_updates") in (True, "true"):
                self._updates.clear()
        return True

    def _api_getwebhookinfo(self, p: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            return {
                "url": (self.webhook or {}).get("url", ""),
                "has_custom_certificate": False,
                "pending_update_count": len(self._updates),
            }

    async def _api_getupdates(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        if self.webhook:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset, limit = int(p.get("offset") or 0), int(p.get("limit") or 100)
        deadline = time.monotonic() + min(float(p.get("timeout") or 0), self.poll_wait)
        while True:
            assert self._new_update is not None
            self._new_update.clear()
            with self._lock:
                if offset:  # confirms every update below the offset
                    self._updates = [u for u in self._updates if u["update_id"] >= offset]
                batch = self._updates[:limit]
            remaining = deadline - time.monotonic()
            if batch or remaining <= 0:
                return batch
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_update.wait(), remaining)

    def _check_text(self, p: dict[str, Any], key: str = "text") -> str:
        text = p.get(key)
        if text is None or text == "":
            raise ApiError(400, "Bad Request: message text is empty")
        visible = str(text)
        if p.get("parse_mode", "").upper() == "HTML":
            try:
                visible = check_html(visible)
            except ValueError as exc:
                raise ApiError(400, f"Bad Request: {exc}") from None
        if utf16_len(visible.strip()) > MAX_TEXT:
            raise ApiError(400, "Bad Request: message is too long")
        return visible

    def _target(self, p: dict[str, Any]) -> tuple[Chat, int | None]:
        chat = self._chat(int(p["chat_id"]))
        thread = p.get("message_thread_id")
        if thread is not None and chat.is_forum:
            thread = int(thread)
            if thread not in chat.topics:
                raise ApiError(400, "Bad Request: message thread not found")
            if thread in chat.closed_topics:
                raise ApiError(400, "Bad Request: TOPIC_CLOSED")
        return chat, thread

    def _store_bot_message(self, chat: Chat, thread: int | None, fields: dict[str, Any]) -> dict:
        with self._lock:
            msg = self._message(chat, self.bot_user, None, thread_id=thread, extra=fields)
            self._bot_messages.append((chat.id, msg["message_id"]))
            return msg

    def _api_sendmessage(self, p: dict[str, Any]) -> dict[str, Any]:
        visible = self._check_text(p)
        chat, thread = self._target(p)
        fields: dict[str, Any] = {
            "text": visible,
            "raw_text": p["text"],
            "parse_mode": p.get("parse_mode"),
        }
        reply = p.get("reply_parameters") or {}
        if reply.get("message_id"):
            fields["reply_to_message_id"] = reply["message_id"]
        if markup := _check_markup(p.get("reply_markup")):
            fields["reply_markup"] = markup
        msg = self._store_bot_message(chat, thread, fields)
        return _public(msg)

    def _api_editmessagetext(self, p: dict[str, Any]) -> dict[str, Any]:
        visible = self._check_text(p)
        key = (int(p["chat_id"]), int(p["message_id"]))
        with self._lock:
            msg = self._messages.get(key)
            if msg is None:
                raise ApiError(400, "Bad Request: message to edit not found")
            if msg.get("raw_text") == p["text"] and msg.get("parse_mode") == p.get("parse_mode"):
                raise ApiError(
                    400,
                    "Bad Request: message is not modified: specified new "
                    "message content and reply markup of the existing message are "
                    "exactly the same",
                )
            msg.update(
                text=visible,
                raw_text=p["text"],
                parse_mode=p.get("parse_mode"),
                edit_date=int(time.time()),
            )
            return _public(msg)

    def _api_editmessagereplymarkup(self, p: dict[str, Any]) -> dict[str, Any]:
        if "inline_message_id" in p:
            raise ApiError(400, "Bad Request: inline messages are not supported by the fake")
        key = (int(p["chat_id"]), int(p["message_id"]))
        markup = _check_markup(p.get("reply_markup"))
        with self._lock:
            msg = self._messages.get(key)
            if msg is None:
                raise ApiError(400, "Bad Request: message to edit not found")
            if key not in self._bot_messages:
                raise ApiError(400, "Bad Request: message can't be edited")
            if msg.get("reply_markup") == markup:
                raise ApiError(
                    400,
                    "Bad Request: message is not modified: specified new message content and "
                    "reply markup are exactly the same as a current content and reply markup "
                    "of the message",
                )
            if markup is None:
                msg.pop("reply_markup", None)
            else:
                msg["reply_markup"] = markup
            msg["edit_date"] = int(time.time())
            return _public(msg)

    def _api_answercallbackquery(self, p: dict[str, Any]) -> bool:
        query_id = str(p.get("callback_query_id", ""))
        text = p.get("text")
        if text is not None and len(str(text)) > 200:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        with self._lock:
            if query_id not in self._queries or self._queries[query_id] is not None:
                raise ApiError(
                    400,
                    "Bad Request: query is too old and response timeout expired or query ID "
                    "is invalid",
                )
            self._queries[query_id] = dict(p)
        return True

    def _api_sendmessagedraft(self, p: dict[str, Any]) -> bool:
        """Bot API 9.3+: an ephemeral, animated draft; Telegram drafts in private chats only."""
        chat, _ = self._target(p)
        if chat.type != "private":
            raise ApiError(400, "Bad Request: TEXTDRAFT_PEER_INVALID")
        draft_id = int(p.get("draft_id") or 0)
        if draft_id == 0:
            raise ApiError(400, "Bad Request: draft_id must be non-zero")
        text = "" if p.get("text") in (None, "") else self._check_text(p)
        with self._lock:
            self._drafts.setdefault((chat.id, draft_id), []).append(text)
        return True

    def _api_sendchataction(self, p: dict[str, Any]) -> bool:
        self._target(p)
        return True

    def _api_createforumtopic(self, p: dict[str, Any]) -> dict[str, Any]:
        chat = self._chat(int(p["chat_id"]))
        if not chat.is_forum:
            raise ApiError(400, "Bad Request: the chat is not a forum")
        name = str(p.get("name", ""))
        if not 1 <= len(name) <= 128:
            raise ApiError(400, "Bad Request: TOPIC_NAME_INVALID")
        with self._lock:
            thread = next(self._topic_ids)
            chat.topics[thread] = name
        return {"message_thread_id": thread, "name": name, "icon_color": 7322096}

    def _api_closeforumtopic(self, p: dict[str, Any]) -> bool:
        chat, thread = self._target(p)
        with self._lock:
            chat.closed_topics.add(int(thread or 0))
        return True

    def _api_reopenforumtopic(self, p: dict[str, Any]) -> bool:
        chat = self._chat(int(p["chat_id"]))
        with self._lock:
            chat.closed_topics.discard(int(p["message_thread_id"]))
        return True

    def _copy(self, p: dict[str, Any]) -> dict[str, Any]:
        source_key = (int(p["from_chat_id"]), int(p["message_id"]))
        with self._lock:
            source = self._messages.get(source_key)
        if source is None:
            raise ApiError(400, "Bad Request: message to copy not found")
        chat, thread = self._target(p)
        fields = {
            k: v
            for k, v in source.items()
            if k in ("text", "caption", "photo", "sticker", "voice", "entities", "document")
        }
        fields["copied_from"] = source_key
        reply = p.get("reply_parameters") or {}
        if reply.get("message_id"):
            fields["reply_to_message_id"] = reply["message_id"]
        return self._store_bot_message(chat, thread, fields)

    def _api_copymessage(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"message_id": self._copy(p)["message_id"]}

    def _api_forwardmessage(self, p: dict[str, Any]) -> dict[str, Any]:
        return _public(self._copy(p))

    def _api_getchatmember(self, p: dict[str, Any]) -> dict[str, Any]:
        chat_id, user_id = int(p["chat_id"]), int(p["user_id"])
        self._chat(chat_id)
        with self._lock:
            status = self._members.get((chat_id, user_id), "left")
        return _member(user_id, status)

    def _api_setmycommands(self, p: dict[str, Any]) -> bool:
        return True

    def _api_deletemessage(self, p: dict[str, Any]) -> bool:
        return True

    def _api_getfile(self, p: dict[str, Any]) -> dict[str, Any]:
        file_id = str(p.get("file_id") or "")
        with self._lock:
            data = self.files.get(file_id)
        if data is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        if len(data) > 20 * 1024 * 1024:  # the Bot API's download limit
            raise ApiError(400, "Bad Request: file is too big")
        return {"file_id": file_id, "file_unique_id": f"{file_id}-u", "file_size": len(data),
                "file_path": f"files/{file_id}"}

    def _download(self, token: str, path: str) -> web.Response:
        """``GET /file/bot<token>/<file_path>``: a file's bytes, as Telegram serves them."""
        file_id = path.removeprefix("files/")
        with self._lock:
            self._calls.append(Call("download", {"file_path": path}, time.time()))
            data = self.files.get(file_id)
            failure = self.file_failures.get(file_id)
        if token != self.token:
            return _error(401, "Unauthorized")
        if failure is not None:
            return _error(failure, "Bad Gateway" if failure == 502 else "Not Found")
        if data is None:
            return _error(404, "Not Found")
        return web.Response(body=data, content_type="application/octet-stream")

    def _send_file(self, p: dict[str, Any], kind: str) -> dict[str, Any]:
        chat, thread = self._target(p)
        file_id = p.get(kind)
        if not isinstance(file_id, str) or file_id not in self.files:
            raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
        fields: dict[str, Any] = {"sent_file": file_id}
        if kind == "photo":
            fields["photo"] = [{"file_id": file_id, "file_unique_id": f"{file_id}-u",
                                "width": 800, "height": 600}]
        else:
            fields["document"] = {"file_id": file_id, "file_unique_id": f"{file_id}-u"}
        if p.get("caption"):
            fields["caption"] = p["caption"]
        return _public(self._store_bot_message(chat, thread, fields))

    def _api_sendphoto(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._send_file(p, "photo")

    def _api_senddocument(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._send_file(p, "document")


def _check_markup(markup: Any) -> dict[str, Any] | None:
    """An inline keyboard as Telegram checks it (button text, callback data of 1-64 bytes)."""
    if not markup:
        return None
    rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise ApiError(400, "Bad Request: can't parse inline keyboard button")
    for button in (b for row in rows for b in row):
        if not isinstance(button, dict) or not button.get("text"):
            raise ApiError(400, "Bad Request: can't parse inline keyboard button")
        data = button.get("callback_data")
        if data is not None and not 1 <= len(str(data).encode()) <= 64:
            raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    return markup


def _photo_size() -> dict[str, Any]:
    return {"file_id": "ph", "file_unique_id": "phu", "width": 90, "height": 90}


def _public(msg: dict[str, Any]) -> dict[str, Any]:
    """A stored message as the API returns it (without the fake's bookkeeping)."""
    return {
        k: v
        for k, v in msg.items()
        if k not in ("raw_text", "parse_mode", "copied_from", "reply_to_message_id", "sent_file")
    }


def _member(user_id: int, status: str) -> dict[str, Any]:
    user = {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"}
    data: dict[str, Any] = {"user": user, "status": status}
    if status == "creator":
        data["is_anonymous"] = False
    elif status == "administrator":
        for flag in (
            "can_be_edited",
            "is_anonymous",
            "can_manage_chat",
            "can_delete_messages",
            "can_manage_video_chats",
            "can_restrict_members",
            "can_promote_members",
            "can_change_info",
            "can_invite_users",
            "can_post_stories",
            "can_edit_stories",
            "can_delete_stories",
            "can_manage_topics",
        ):
            data[flag] = False
    elif status == "restricted":
        for flag in (
            "is_member",
            "can_change_info",
            "can_invite_users",
            "can_pin_messages",
            "can_send_messages",
            "can_send_polls",
            "can_send_other_messages",
            "can_add_web_page_previews",
            "can_manage_topics",
            "can_send_audios",
            "can_send_documents",
            "can_send_photos",
            "can_send_videos",
            "can_send_video_notes",
            "can_send_voice_notes",
            "can_edit_tag",
            "can_react_to_messages",
        ):
            data[flag] = False
        data["until_date"] = 0
    elif status == "kicked":
        data["until_date"] = 0
    return data


async def _read_params(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        raw: dict[str, Any] = await request.json() if request.can_read_body else {}
        return raw
    form = await request.post()
    params: dict[str, Any] = {}
    for key, value in form.items():
        if not isinstance(value, str):
            params[key] = "<file>"
            continue
        if key in _INT_PARAMS:
            try:
                params[key] = int(value)
                continue
            except ValueError:
                pass
        if key in _JSON_PARAMS:
            try:
                params[key] = json.loads(value)
                continue
            except ValueError:
                pass
        if key not in _TEXT_PARAMS and value in ("true", "false"):
            params[key] = value == "true"
            continue
        params[key] = value
    for key, value in request.query.items():
        params.setdefault(
            key, int(value) if key in _INT_PARAMS and value.lstrip("-").isdigit() else value
        )
    return params


def _error(code: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=code)
