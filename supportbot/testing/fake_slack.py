"""A fake Slack on loopback: Web API methods, Socket Mode and signed Events API payloads.

It is a real aiohttp server running in a background thread with its own event loop, so the real
``slack_sdk``/``slack_bolt`` clients talk to it over HTTP (and WebSocket for Socket Mode) from sync
tests, async tests, or a bot running as a subprocess. Point the bot at it with
``SUPPORTBOT_SLACK_API_URL=fake.api_url``.

Usage::

    with FakeSlack() as fake:
        headers, body = fake.signed_event(fake.message_event("hi", channel="D1", channel_type="im"))
        httpx.post(bot_url + "/slack/events", headers=headers, content=body)
        fake.wait_for(lambda: fake.messages(channel="D1"))
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import WSMsgType, web

from supportbot.testing.waiting import eventually, eventually_sync

BOT_TOKEN = "xoxb-fake-bot-token"
APP_TOKEN = "xapp-fake-app-token"
SIGNING_SECRET = "fake-signing-secret"


@dataclass(slots=True)
class Call:
    """One Web API request the fake received (token kept out so records are safe to print)."""

    method: str
    params: dict[str, Any]
    authorized: bool
    at: float
    status: int = 200
    error: str | None = None


@dataclass(slots=True)
class Message:
    """A message as the fake workspace currently shows it (after chat.update edits)."""

    channel: str
    ts: str
    text: str
    thread_ts: str | None
    user: str
    blocks: list[dict[str, Any]] | None = None
    edits: list[str] = field(default_factory=list)  # every text it had, oldest first
    ephemeral_to: str | None = None
    streaming: bool = False  # started by chat.startStream and not yet stopped


@dataclass(slots=True)
class _Fault:
    status: int
    error: str | None
    retry_after: float | None
    remaining: int


class FakeSlack:
    """Records calls and keeps a tiny model of channels and messages; inject faults per method."""

    def __init__(
        self,
        *,
        signing_secret: str = SIGNING_SECRET,
        bot_token: str = BOT_TOKEN,
        app_token: str = APP_TOKEN,
        team_id: str = "T0001",
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        max_text_chars: int = 40_000,
        users: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.signing_secret = signing_secret
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.max_text_chars = max_text_chars
        self.users: dict[str, dict[str, Any]] = users or {}
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._messages: list[Message] = []
        self._faults: dict[str, list[_Fault]] = {}
        self._delays: dict[str, float] = {}
        self._flaky: dict[str, tuple[int, int, itertools.count[int]]] = {}
        self._ts_counter = itertools.count(1)
        self._event_counter = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._sockets: list[web.WebSocketResponse] = []
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._socket_connected = threading.Event()
        # files: what url_private serves (with the bot token), downloads to refuse, uploads
        self.files: dict[str, bytes] = {}
        self.file_failures: dict[str, int] = {}  # file id -> HTTP status of its download
        self.uploads: list[dict[str, Any]] = []  # completed files_upload_v2 shares
        self._pending_uploads: dict[str, dict[str, Any]] = {}
        self._file_counter = itertools.count(1)
        self.port: int | None = None
        self._stream_refusal: str | None = None  # chat.startStream refused with it
        self._ai_error: str | None = None  # assistant.threads.* refused (no AI-app features)
        self._assistant_status: dict[tuple[str, str], tuple[str, int]] = {}  # status, set at

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("FakeSlack is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """Value for ``Settings.slack_api_url`` (slack_sdk appends the method name)."""
        return self.url + "/api/"

    def start(self) -> FakeSlack:
        if self._thread is not None:
            return self
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # surfaced to start()
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="FakeSlack", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("FakeSlack did not start")
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_get("/socket", self._socket)
        app.router.add_get("/files-pri/{file_id}/{name}", self._download)
        app.router.add_post("/upload/v1/{file_id}", self._upload)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]  # the port the OS chose

    async def _shutdown(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- fault injection -------------------------------------------------------------------

    def rate_limit(self, method: str, *, retry_after: float = 1, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with HTTP 429 and ``Retry-After``."""
        self._add_fault(method, _Fault(429, "ratelimited", retry_after, times))

    def fail(self, method: str, error: str, *, times: int = 1, status: int = 200) -> None:
        """Answer the next ``times`` calls of ``method`` with ``{"ok": false, "error": error}``."""
        self._add_fault(method, _Fault(status, error, None, times))

    def slow(self, method: str, seconds: float) -> None:
        """Answer every ``method`` call only after ``seconds`` (0 makes it quick again)."""
        with self._lock:
            self._delays[method] = seconds

    def flaky(self, method: str, *, every: int, status: int = 502) -> None:
        """Answer every ``every``-th call of ``method`` with HTTP ``status`` (a gateway error
        with no JSON body, as Slack's edge sends); ``every=0`` stops it."""
        with self._lock:
            if every:
                self._flaky[method] = (every, status, itertools.count(1))
            else:
                self._flaky.pop(method, None)

    def _add_fault(self, method: str, fault: _Fault) -> None:
        with self._lock:
            self._faults.setdefault(method, []).append(fault)

    def _take_fault(self, method: str) -> _Fault | None:
        with self._lock:
            queue = self._faults.get(method) or []
            if not queue:
                return None
            fault = queue[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                queue.pop(0)
            return fault

    # -- records ---------------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def messages(
        self,
        *,
        channel: str | None = None,
        thread_ts: str | None = None,
        top_level: bool = False,
        ephemeral: bool = False,
    ) -> list[Message]:
        """Messages the bot posted (current text), oldest first; ephemeral ones only on request.

        ``thread_ts`` keeps one thread's replies, ``top_level`` only messages outside threads.
        """
        with self._lock:
            return [
                m
                for m in self._messages
                if (channel is None or m.channel == channel)
                and (thread_ts is None or m.thread_ts == thread_ts)
                and (not top_level or m.thread_ts is None)
                and (m.ephemeral_to is not None) == ephemeral
            ]

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._messages.clear()
            self._faults.clear()

    @staticmethod
    def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
        """Poll ``predicate`` from a sync test until it returns something truthy."""
        return eventually_sync(predicate, within=timeout, interval=interval)

    @staticmethod
    async def async_wait_for(
        predicate: Callable[[], Any], within: float = 5.0, interval: float = 0.02
    ) -> Any:
        """Poll ``predicate`` from an async test without blocking the loop."""
        return await eventually(predicate, within=within, interval=interval)

    # -- Web API ---------------------------------------------------------------------------

    def new_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts_counter):06d}"

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params: dict[str, Any] = dict(request.query)
        ctype = request.headers.get("Content-Type", "")
        raw = await request.read()
        if raw:
            if "json" in ctype:
                params.update(json.loads(raw))
            else:
                params.update(parse_qsl(raw.decode()))
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() or str(params.pop("token", ""))
        params.pop("token", None)
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        call = Call(method, params, hmac.compare_digest(token, expected), time.time())
        with self._lock:
            self._calls.append(call)
        if not call.authorized:
            call.error = "invalid_auth"
            return web.json_response({"ok": False, "error": "invalid_auth"})
        delay = self._delays.get(method)
        if delay:
            await asyncio.sleep(delay)
        with self._lock:
            flaky = self._flaky.get(method)
            failing = flaky is not None and next(flaky[2]) % flaky[0] == 0
        if failing and flaky is not None:
            call.status, call.error = flaky[1], "gateway error"
            return web.Response(status=flaky[1], text="<html>Bad Gateway</html>",
                                content_type="text/html")
        fault = self._take_fault(method)
        if fault is not None:
            call.status, call.error = fault.status, fault.error
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(int(fault.retry_after))
            return web.json_response(
                {"ok": False, "error": fault.error}, status=fault.status, headers=headers
            )
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        body = handler(params, request) if handler else {"ok": True}
        if not body.get("ok"):
            call.error = body.get("error")
        return web.json_response(body)

    def _m_auth_test(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://fake.slack.com/",
            "team": "Fake Team",
            "user": "supportbot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _check_text(self, params: dict[str, Any]) -> dict[str, Any] | None:
        text = params.get("text")
        if not params.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        if not text and not params.get("blocks"):
            return {"ok": False, "error": "no_text"}
        if text and len(text) > self.max_text_chars:
            return {"ok": False, "error": "msg_too_long"}
        if "blocks" in params and not _valid_blocks(_maybe_json(params["blocks"])):
            return {"ok": False, "error": "invalid_blocks"}
        return None

    def _m_chat_postMessage(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        if (err := self._check_text(params)) is not None:
            return err
        msg = Message(
            channel=params["channel"],
            ts=self.new_ts(),
            text=params.get("text") or "",
            thread_ts=params.get("thread_ts") or None,
            user=self.bot_user_id,
            blocks=_maybe_json(params.get("blocks")),
        )
        msg.edits.append(msg.text)
        with self._lock:
            self._messages.append(msg)
        return {"ok": True, "channel": msg.channel, "ts": msg.ts, "message": {"text": msg.text}}

    def _m_chat_update(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        if (err := self._check_text(params)) is not None:
            return err
        with self._lock:
            for msg in self._messages:
                if msg.channel == params["channel"] and msg.ts == params.get("ts"):
                    if "text" in params:
                        msg.text = params["text"]
                        msg.edits.append(msg.text)
                    if "blocks" in params:
                        msg.blocks = _maybe_json(params["blocks"])
                    return {"ok": True, "channel": msg.channel, "ts": msg.ts, "text": msg.text}
        return {"ok": False, "error": "message_not_found"}

    def _m_chat_postEphemeral(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        if (err := self._check_text(params)) is not None:
            return err
        if not params.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        msg = Message(
            channel=params["channel"],
            ts=self.new_ts(),
            text=params.get("text") or "",
            thread_ts=params.get("thread_ts") or None,
            user=self.bot_user_id,
            ephemeral_to=params["user"],
        )
        with self._lock:
            self._messages.append(msg)
        return {"ok": True, "message_ts": msg.ts}

    # -- native streaming: chat.startStream / appendStream / stopStream ---------------------

    def refuse_streaming(self, error: str | None = "unknown_method") -> None:
        """Act as a workspace without native streaming: every ``chat.startStream`` is answered
        ``{"ok": false, "error": error}`` (``None`` allows it again)."""
        with self._lock:
            self._stream_refusal = error

    def _streaming_message(self, params: dict[str, Any]) -> Message | dict[str, Any]:
        if not params.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        for msg in self._messages:
            if msg.channel == params["channel"] and msg.ts == params.get("ts"):
                if not msg.streaming:
                    return {"ok": False, "error": "message_not_in_streaming_state"}
                return msg
        return {"ok": False, "error": "message_not_found"}

    def _m_chat_startStream(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        """A streamed message is a reply in a thread; outside DMs Slack also wants whom the
        stream is for (``recipient_team_id`` and ``recipient_user_id``)."""
        with self._lock:
            refusal = self._stream_refusal
        if refusal is not None:
            return {"ok": False, "error": refusal}
        channel, thread_ts = params.get("channel"), params.get("thread_ts")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not thread_ts or (not str(channel).startswith("D") and not (
                params.get("recipient_team_id") and params.get("recipient_user_id"))):
            return {"ok": False, "error": "invalid_arguments"}
        text = params.get("markdown_text") or ""
        msg = Message(channel=channel, ts=self.new_ts(), text=text, thread_ts=thread_ts,
                      user=self.bot_user_id, streaming=True)
        msg.edits.append(text)
        with self._lock:
            self._messages.append(msg)
            status = getattr(self, "_assistant_status", None)
            if status is not None:  # the app replied: Slack clears the thread's status
                status.pop((msg.channel, thread_ts), None)
        return {"ok": True, "channel": msg.channel, "ts": msg.ts}

    def _m_chat_appendStream(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        text = params.get("markdown_text")
        if not text:
            return {"ok": False, "error": "invalid_arguments"}
        if len(text) > 12_000:
            return {"ok": False, "error": "msg_too_long"}
        with self._lock:
            msg = self._streaming_message(params)
            if isinstance(msg, dict):
                return msg
            if len(msg.text) + len(text) > self.max_text_chars:
                return {"ok": False, "error": "msg_too_long"}
            msg.text += text
            msg.edits.append(msg.text)
        return {"ok": True, "channel": msg.channel, "ts": msg.ts}

    def _m_chat_stopStream(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        blocks = _maybe_json(params.get("blocks")) if "blocks" in params else None
        if blocks is not None and not _valid_blocks(blocks):
            return {"ok": False, "error": "invalid_blocks"}
        with self._lock:
            msg = self._streaming_message(params)
            if isinstance(msg, dict):
                return msg
            if params.get("markdown_text"):
                msg.text += params["markdown_text"]
                msg.edits.append(msg.text)
            if blocks is not None:
                msg.blocks = blocks
            msg.streaming = False
        return {"ok": True, "channel": msg.channel, "ts": msg.ts, "message": {"text": msg.text}}

    def _m_chat_getPermalink(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        channel, ts = params.get("channel", ""), str(params.get("message_ts", ""))
        return {
            "ok": True,
            "channel": channel,
            "permalink": f"https://fake.slack.com/archives/{channel}/p{ts.replace('.', '')}",
        }

    def _m_users_info(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        uid = params.get("user", "")
        user = self.users.get(uid)
        if user is None:
            user = {"id": uid, "name": uid.lower(), "real_name": f"User {uid}"}
        profile = {"display_name": user.get("display_name", ""), "real_name": user["real_name"]}
        return {"ok": True, "user": {**user, "team_id": self.team_id, "profile": profile}}

    def _m_conversations_info(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        cid = params.get("channel", "")
        is_im = cid.startswith("D")
        return {
            "ok": True,
            "channel": {
                "id": cid,
                "name": None if is_im else cid.lower(),
                "is_im": is_im,
                "is_channel": cid.startswith("C"),
                "is_private": cid.startswith("G"),
            },
        }

    # -- AI apps: assistant threads ----------------------------------------------------------

    def without_ai_features(self, error: str = "not_allowed_token_type") -> None:
        """Act as a workspace (or an app) without the AI-app features: every
        ``assistant.threads.*`` call is refused with ``error`` (``unknown_method`` is the other
        answer such a workspace gives)."""
        with self._lock:
            self._ai_error = error

    def assistant_status(self, channel: str, thread_ts: str) -> str | None:
        """The status an assistant thread shows now: set by ``assistant.threads.setStatus``,
        cleared by an empty status or by the bot posting in the thread (any way: a message, a
        stream), as Slack does."""
        with self._lock:
            status, since = self._assistant_status.get((channel, thread_ts), ("", 0))
            posted = any(m.channel == channel and m.thread_ts == thread_ts
                         and _sequence(m.ts) > since for m in self._messages)
        return status if status and not posted else None

    def _assistant_refusal(self, params: dict[str, Any]) -> dict[str, Any] | None:
        if self._ai_error is not None:
            return {"ok": False, "error": self._ai_error}
        if not params.get("channel_id"):
            return {"ok": False, "error": "channel_not_found"}
        if not params.get("thread_ts"):
            return {"ok": False, "error": "invalid_thread_ts"}
        return None

    def _m_assistant_threads_setStatus(
        self, params: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        if (err := self._assistant_refusal(params)) is not None:
            return err
        if "status" not in params:
            return {"ok": False, "error": "invalid_arguments"}
        key = (params["channel_id"], params["thread_ts"])
        with self._lock:
            if params["status"]:
                self._assistant_status[key] = (params["status"], _sequence(self.new_ts()))
            else:
                self._assistant_status.pop(key, None)
        return {"ok": True}

    def _m_assistant_threads_setTitle(
        self, params: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        if (err := self._assistant_refusal(params)) is not None:
            return err
        if not params.get("title"):
            return {"ok": False, "error": "invalid_arguments"}
        return {"ok": True}

    def _m_assistant_threads_setSuggestedPrompts(
        self, params: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        if (err := self._assistant_refusal(params)) is not None:
            return err
        prompts = _maybe_json(params.get("prompts"))
        if not (isinstance(prompts, list) and 1 <= len(prompts) <= 4 and all(
            isinstance(p, dict) and p.get("title") and p.get("message") for p in prompts
        )):
            return {"ok": False, "error": "invalid_arguments"}
        return {"ok": True}

    # -- files -----------------------------------------------------------------------------

    def add_file(self, data: bytes, *, name: str = "screenshot.png",
                 mimetype: str = "image/png", size: int | None = None) -> dict[str, Any]:
        """Host ``data`` as a Slack file; returns the ``files`` entry of a message event
        (``size`` overrides what Slack reports, e.g. to claim a huge file)."""
        file_id = f"F{next(self._file_counter):08d}"
        with self._lock:
            self.files[file_id] = data
        return {
            "id": file_id, "name": name, "title": name, "mimetype": mimetype,
            "filetype": mimetype.rpartition("/")[2], "size": len(data) if size is None else size,
            "mode": "hosted", "user": "UCUSTOMER",
            "url_private": f"{self.url}/files-pri/{self.team_id}-{file_id}/{name}",
            "url_private_download": f"{self.url}/files-pri/{self.team_id}-{file_id}/{name}",
        }

    def file_share_event(self, text: str, files: list[dict[str, Any]], **kwargs: Any
                         ) -> dict[str, Any]:
        """A ``message`` event of subtype ``file_share`` carrying ``files`` (``add_file``)."""
        return self.message_event(text, subtype="file_share", files=files, upload=False,
                                  **kwargs)

    async def _download(self, request: web.Request) -> web.Response:
        """``url_private``: the file for the bot token; Slack's sign-in page for anything
        else (a 200 HTML page, as Slack answers), or an injected failure."""
        file_id = request.match_info["file_id"].rpartition("-")[2]
        auth = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        authorized = hmac.compare_digest(auth, self.bot_token)
        with self._lock:
            self._calls.append(Call("files.download", {"file": file_id}, authorized,
                                    time.time()))
            data = self.files.get(file_id)
            failure = self.file_failures.get(file_id)
        if not authorized:
            return web.Response(text="<html>Sign in to Slack</html>", content_type="text/html")
        if failure is not None:
            return web.Response(status=failure, text="<html>error</html>",
                                content_type="text/html")
        if data is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=data, content_type="application/octet-stream")

    def _m_files_getUploadURLExternal(self, params: dict[str, Any],
                                      request: web.Request) -> dict[str, Any]:
        if not params.get("filename") or not str(params.get("length") or "").isdigit():
            return {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{next(self._file_counter):08d}"
        with self._lock:
            self._pending_uploads[file_id] = {"filename": params["filename"],
                                              "length": int(params["length"]), "data": None}
        return {"ok": True, "upload_url": f"{self.url}/upload/v1/{file_id}", "file_id": file_id}

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        data = await request.read()
        with self._lock:
            pending = self._pending_uploads.get(file_id)
            if pending is None:
                return web.Response(status=404, text="unknown upload")
            pending["data"] = data
        return web.Response(text=f"OK - {len(data)}")

    def _m_files_completeUploadExternal(self, params: dict[str, Any],
                                        request: web.Request) -> dict[str, Any]:
        listed = _maybe_json(params.get("files"))
        if not isinstance(listed, list) or not listed:
            return {"ok": False, "error": "invalid_arguments"}
        done = []
        with self._lock:
            for item in listed:
                pending = self._pending_uploads.pop(str(item.get("id")), None)
                if pending is None or pending["data"] is None:
                    return {"ok": False, "error": "file_not_found"}
                self.files[item["id"]] = pending["data"]
                self.uploads.append({
                    "file_id": item["id"], "filename": pending["filename"],
                    "data": pending["data"], "title": item.get("title"),
                    "channel": params.get("channel_id"),
                    "thread_ts": params.get("thread_ts") or None,
                    "initial_comment": params.get("initial_comment"),
                })
                done.append({"id": item["id"], "title": item.get("title") or ""})
        return {"ok": True, "files": done}

    def _m_apps_connections_open(
        self, params: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket"}

    # -- Socket Mode -----------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(
            json.dumps({"type": "hello", "num_connections": 1, "debug_info": {"host": "fake"}})
        )
        self._socket_connected.set()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                fut = self._acks.pop(data.get("envelope_id", ""), None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
        finally:
            self._sockets.remove(ws)
            if not self._sockets:
                self._socket_connected.clear()
        return ws

    def wait_socket_connected(self, timeout: float = 5.0) -> bool:
        return self._socket_connected.wait(timeout)

    def socket_send(
        self, payload: dict[str, Any], *, envelope_type: str = "events_api", timeout: float = 5.0
    ) -> dict[str, Any]:
        """Push one envelope to the connected Socket Mode client; return its ack (blocking)."""
        if self._loop is None:
            raise RuntimeError("FakeSlack is not started")
        fut = asyncio.run_coroutine_threadsafe(
            self._socket_send(payload, envelope_type, timeout), self._loop
        )
        return fut.result(timeout + 1)

    async def async_socket_send(
        self, payload: dict[str, Any], *, envelope_type: str = "events_api", within: float = 5.0
    ) -> dict[str, Any]:
        """Like :meth:`socket_send` but awaitable from a test's own event loop."""
        if self._loop is None:
            raise RuntimeError("FakeSlack is not started")
        fut = asyncio.run_coroutine_threadsafe(
            self._socket_send(payload, envelope_type, within), self._loop
        )
        return await asyncio.wrap_future(fut)

    async def _socket_send(
        self, payload: dict[str, Any], envelope_type: str, within: float
    ) -> dict[str, Any]:
        if not self._sockets:
            raise RuntimeError("no Socket Mode client connected")
        envelope_id = str(uuid.uuid4())
        ack: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = ack
        envelope = {
            "envelope_id": envelope_id,
            "type": envelope_type,
            "accepts_response_payload": envelope_type != "events_api",
            "retry_attempt": 0,
            "retry_reason": "",
            "payload": payload,
        }
        await self._sockets[-1].send_str(json.dumps(envelope))
        return await asyncio.wait_for(ack, within)

    # -- payload builders ------------------------------------------------------------------

    def event_callback(
        self, event: dict[str, Any], *, event_id: str | None = None, team_id: str | None = None
    ) -> dict[str, Any]:
        """Wrap an event the way the Events API delivers it."""
        return {
            "token": "legacy-verification-token",
            "team_id": team_id or self.team_id,
            "api_app_id": "AFAKE",
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{next(self._event_counter):08d}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "team_id": team_id or self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
        }

    def message_event(
        self,
        text: str,
        *,
        user: str = "UCUSTOMER",
        channel: str = "D0001",
        channel_type: str = "im",
        ts: str | None = None,
        thread_ts: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "type": "message",
            "channel": channel,
            "channel_type": channel_type,
            "user": user,
            "text": text,
            "ts": ts or self.new_ts(),
            "team": self.team_id,
            "client_msg_id": str(uuid.uuid4()),
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
        event.update(extra)
        return event

    def assistant_thread_started_event(
        self,
        *,
        user: str = "UCUSTOMER",
        channel: str = "D0001",
        thread_ts: str | None = None,
        context_channel: str | None = None,
    ) -> dict[str, Any]:
        """``assistant_thread_started``: the customer opened a new thread in the AI app's
        panel (``thread_ts`` is the thread's root, which Slack posts as the app)."""
        context: dict[str, Any] = {"enterprise_id": None}
        if context_channel:
            context.update(channel_id=context_channel, team_id=self.team_id)
        return {
            "type": "assistant_thread_started",
            "assistant_thread": {
                "user_id": user,
                "context": context,
                "channel_id": channel,
                "thread_ts": thread_ts or self.new_ts(),
            },
            "event_ts": self.new_ts(),
        }

    def assistant_message_event(
        self, text: str, *, thread_ts: str, user: str = "UCUSTOMER", channel: str = "D0001"
    ) -> dict[str, Any]:
        """A customer's message in an assistant thread, as Slack sends it: a ``message.im``
        event in the thread whose root the app posted (``parent_user_id`` is the bot)."""
        return self.message_event(
            text, user=user, channel=channel, channel_type="im", thread_ts=thread_ts,
            parent_user_id=self.bot_user_id, event_ts=self.new_ts(),
        )

    def mention_event(
        self,
        text: str,
        *,
        user: str = "UCUSTOMER",
        channel: str = "C0001",
        ts: str | None = None,
        thread_ts: str | None = None,
    ) -> dict[str, Any]:
        event = self.message_event(
            f"<@{self.bot_user_id}> {text}",
            user=user,
            channel=channel,
            channel_type="channel",
            ts=ts,
            thread_ts=thread_ts,
        )
        event["type"] = "app_mention"
        del event["channel_type"]
        return event

    def block_action(
        self,
        action_id: str,
        value: str,
        *,
        user: str,
        channel: str,
        message_ts: str,
    ) -> dict[str, Any]:
        """An interactive ``block_actions`` payload (a button press)."""
        return {
            "type": "block_actions",
            "team": {"id": self.team_id, "domain": "fake"},
            "user": {"id": user, "username": user.lower(), "team_id": self.team_id},
            "api_app_id": "AFAKE",
            "token": "legacy-verification-token",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
            "trigger_id": "1.2.3",
            "channel": {"id": channel, "name": channel.lower()},
            "message": {"ts": message_ts, "text": ""},
            "response_url": f"{self.url}/response/{uuid.uuid4()}",
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": "supportbot",
                    "value": value,
                    "action_ts": str(time.time()),
                }
            ],
        }

    # -- signing ---------------------------------------------------------------------------

    def sign(
        self, body: bytes, *, timestamp: int | None = None, secret: str | None = None
    ) -> dict[str, str]:
        """Slack's v0 request signature headers for ``body``."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        key = (secret if secret is not None else self.signing_secret).encode()
        base = b"v0:" + ts.encode() + b":" + body
        digest = hmac.new(key, base, hashlib.sha256).hexdigest()
        return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}

    def signed_event(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """Headers and JSON body of a signed Events API request carrying ``event``.

        ``event`` may be a bare event (wrapped with :meth:`event_callback`) or a full envelope.
        """
        payload = event if "type" in event and "event" in event else None
        if payload is None:
            payload = self.event_callback(event, event_id=event_id)
        body = json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            **self.sign(body, timestamp=timestamp, secret=secret),
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        return headers, body

    def signed_interaction(
        self, payload: dict[str, Any], *, timestamp: int | None = None, secret: str | None = None
    ) -> tuple[dict[str, str], bytes]:
        """Headers and form body of a signed interactivity request (button press)."""
        body = urlencode({"payload": json.dumps(payload)}).encode()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            **self.sign(body, timestamp=timestamp, secret=secret),
        }
        return headers, body


def _valid_blocks(blocks: Any) -> bool:
    """Slack's checks that matter here: a list of at most 50 typed blocks, section text of
    1-3,000 characters, 1-25 elements in an actions block."""
    if not isinstance(blocks, list) or len(blocks) > 50:
        return False
    for block in blocks:
        if not isinstance(block, dict) or not block.get("type"):
            return False
        if block["type"] == "section":
            text = (block.get("text") or {}).get("text") or ""
            if not 1 <= len(text) <= 3000:
                return False
        if block["type"] == "actions" and not 1 <= len(block.get("elements") or []) <= 25:
            return False
    return True


def _sequence(ts: str) -> int:
    """The fake's ts counter (after the dot): the order in which it handed out stamps."""
    try:
        return int(ts.rpartition(".")[2])
    except ValueError:
        return 0


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
