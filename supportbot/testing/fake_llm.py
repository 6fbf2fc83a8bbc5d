"""A loopback OpenAI-compatible server for tests: chat completions (streamed or not) and embeddings.

It runs a real aiohttp server on 127.0.0.1 in a background thread with its own event loop, so
sync tests, async tests and a bot running as a subprocess can all talk to it over real HTTP::

    with FakeLLM(responder=lambda messages: "Hello!") as fake:
        settings = Settings(llm_base_url=fake.url, llm_api_key="sk-test")
        ...
        fake.fail_next("429", retry_after=0.1)   # the next chat call gets a rate limit
        assert fake.requests[-1].messages[-1]["content"] == "hi"
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class ToolReply:
    """What a responder returns to make the model call a tool (``hand_off_to_human`` by
    default) instead of, or after, writing ``text``; streamed as OpenAI streams tool calls."""

    arguments: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    name: str = "hand_off_to_human"
    raw_arguments: str | None = None  # sent as is instead of ``arguments`` (e.g. broken JSON)

    def arguments_json(self) -> str:
        return self.raw_arguments if self.raw_arguments is not None else json.dumps(self.arguments)


Responder = Callable[[list[dict[str, Any]]], "str | ToolReply"]

FAULT_KINDS = frozenset({"400", "401", "429", "500", "slow", "cut", "bad_json", "context_length"})
_ERROR_KINDS = ("400", "401", "429", "500", "context_length")
LISTEN_BACKLOG = 4096


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    json: Any
    at: float  # time.monotonic() on arrival
    peer_port: int  # client's port: the same port means a reused keep-alive connection

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.json or {}).get("messages") or [])

    @property
    def image_urls(self) -> list[str]:
        """The ``image_url`` content parts' URLs, in message order (vision requests)."""
        return [part["image_url"]["url"] for m in self.messages
                if isinstance(m.get("content"), list)
                for part in m["content"]
                if isinstance(part, dict) and part.get("type") == "image_url"]


@dataclass
class _Fault:
    kind: str
    times: int
    endpoint: str
    options: dict[str, Any] = field(default_factory=dict)


def default_responder(messages: list[dict[str, Any]]) -> str:
    """A canned answer that quotes the last user message, so tests can tell replies apart."""
    last = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    return f"Thanks for reaching out! You asked: {last.get('content', '')}"


def vision_responder(messages: list[dict[str, Any]]) -> str:
    """A "vision" model: answers from the picture in the last user message. It reads the
    words a PNG carries in its ``tEXt`` chunks (what a screenshot's error message stands for
    in tests), so a test can tell the answer came from the image part; no picture: the
    default answer."""
    last = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    content = last.get("content")
    if not isinstance(content, list):
        return default_responder(messages)
    words = [part.get("text", "") for part in content if part.get("type") == "text"]
    for part in content:
        url = (part.get("image_url") or {}).get("url", "") if isinstance(part, dict) else ""
        if url.startswith("data:image/"):
            data = base64.b64decode(url.partition(",")[2])
            seen = " ".join(png_text(data)) or f"a picture of {len(data)} bytes"
            return f"In your screenshot I can see: {seen}. (You wrote: {' '.join(words)})"
    return default_responder(messages)


def png_text(data: bytes) -> list[str]:
    """The values of a PNG's ``tEXt`` chunks."""
    found, i = [], 8
    while i + 8 <= len(data):
        length = int.from_bytes(data[i:i + 4], "big")
        kind, body = data[i + 4:i + 8], data[i + 8:i + 8 + length]
        if kind == b"tEXt":
            found.append(body.partition(b"\0")[2].decode("latin-1"))
        i += 12 + length
    return found


def count_tokens(text: str) -> int:
    """The fake's notion of a token: one per whitespace-separated word."""
    return len(text.split())


def embed(text: str, dimensions: int = 64) -> list[float]:
    """Deterministic hashed bag-of-words vector, L2-normalised (same text, same vector)."""
    vector = [0.0] * dimensions
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        index = int.from_bytes(digest[:4], "big") % dimensions
        vector[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


class Gate:
    """A responder that holds every answer until the test calls ``gate.opened.set()`` (at most
    10 s), so a test can act while a reply is being generated: ``FakeLLM(responder=Gate())``."""

    def __init__(self) -> None:
        self.opened = threading.Event()

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        self.opened.wait(10)
        return f"Answer: {messages[-1]['content']}"


class FakeLLM:
    """Knobs: ``responder``, ``delay`` (seconds per reply), ``require_key``, ``include_usage``,
    and ``fail_next(kind, times=1, endpoint="chat", **options)`` with kinds:

    - ``"400"``: a bad request; ``message``, ``param`` and ``code`` fill the OpenAI error body.
    - ``"429"``: rate limited; ``retry_after`` (seconds or an HTTP date, default 1) header.
    - ``"500"``: server error; ``status`` overrides (502, 503, ...).
    - ``"401"``: rejects the key, echoing it back as OpenAI does (clients must not log it).
    - ``"slow"``: sleeps ``seconds`` (default 30) before answering normally.
    - ``"cut"``: streams ``after`` deltas (default 2) then stops without a finish or ``[DONE]``;
      ``abrupt=True`` drops the connection instead. Non-streaming: half a body, then drop.
    - ``"bad_json"``: malformed JSON (after ``after`` good deltas when streaming, default 0).
    - ``"context_length"``: a 400 like OpenAI's ``context_length_exceeded`` (``message`` overrides).
    """

    def __init__(
        self,
        *,
        responder: Responder | None = None,
        delay: float = 0.0,
        require_key: str | None = None,
        include_usage: bool = True,
        model: str = "fake-model",
        embedding_dimensions: int = 64,
    ) -> None:
        self.responder = responder or default_responder
        self.delay = delay
        self.delta_delay = 0.0  # seconds between streamed deltas (an answer still being written)
        # True: answer 400 to any request that offers ``tools``, as Ollama does for models
        # without tool support (clients must fall back to the [[HANDOFF]] marker); 500: the
        # same as llama.cpp's server without --jinja
        self.reject_tools: bool | int = False
        self.require_key = require_key
        self.include_usage = include_usage
        self.model = model
        self.embedding_dimensions = embedding_dimensions
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._faults: deque[_Fault] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._sleepers: set[asyncio.Future[None]] = set()
        self._port = 0

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("FakeLLM is not started")
        return f"http://127.0.0.1:{self._port}/v1"

    def start(self) -> FakeLLM:
        if self._thread is not None:
            return self
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="FakeLLM", daemon=True
        )
        self._thread.start()
        if not ready.wait(10) or not self._port:
            raise RuntimeError("FakeLLM did not start")
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        future.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._thread, self._loop, self._port = None, None, 0

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeLLM:
        return self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            ready.set()
        self._loop.run_forever()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        # aiohttp's default backlog (128) drops SYNs when a benchmark opens 1,000 connections
        # at once, and each dropped one costs the client a 1 s retransmit; the kernel caps this
        # at net.core.somaxconn.
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=LISTEN_BACKLOG)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def _shutdown(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        for sleeper in self._sleepers:  # wakes "slow" handlers and delayed replies
            if not sleeper.done():
                sleeper.set_result(None)
        if self._runner is not None:
            await self._runner.cleanup()

    # --- knobs and records -------------------------------------------------------------------

    def fail_next(
        self, kind: str, times: int = 1, *, endpoint: str = "chat", **options: Any
    ) -> None:
        """Queue a fault for the next ``times`` requests to ``endpoint`` ("chat"/"embeddings")."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; choose from {sorted(FAULT_KINDS)}")
        with self._lock:
            self._faults.append(_Fault(kind, times, endpoint, options))

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (including failed ones), oldest first."""
        with self._lock:
            return list(self._requests)

    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._faults.clear()

    def _take_fault(self, endpoint: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.endpoint == endpoint:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    async def _record(self, request: web.Request) -> RecordedRequest:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        record = RecordedRequest(
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            json=body,
            at=time.monotonic(),
            peer_port=peer[1] if peer else 0,
        )
        with self._lock:
            self._requests.append(record)
        return record

    def _unauthorised(self, record: RecordedRequest) -> web.Response | None:
        if self.require_key is None or record.headers.get("authorization") == (
            f"Bearer {self.require_key}"
        ):
            return None
        return _auth_error(record)

    async def _sleep(self, seconds: float) -> None:
        """Sleep that ends early when the server stops, so shutdown never waits on it (a bare
        future and timer: ``wait_for`` on an event costs a task per reply)."""
        if seconds <= 0 or self._stopping is None or self._stopping.is_set():
            return
        loop = asyncio.get_running_loop()
        sleeper: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(seconds, _wake, sleeper)
        self._sleepers.add(sleeper)
        try:
            await sleeper
        finally:
            timer.cancel()
            self._sleepers.discard(sleeper)

    # --- endpoints ---------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(request)
        if (denied := self._unauthorised(record)) is not None:
            return denied
        body = record.json if isinstance(record.json, dict) else {}
        messages = list(body.get("messages") or [])
        stream = bool(body.get("stream"))
        fault = self._take_fault("chat")
        options = fault.options if fault else {}
        kind = fault.kind if fault else None
        if kind in _ERROR_KINDS:
            return _error_response(kind, options, record)
        if self.reject_tools and body.get("tools"):
            if self.reject_tools == 500:  # llama.cpp's llama-server without --jinja
                return _json_error(500, "tools param requires --jinja flag", "server_error")
            message = f"registry.ollama.ai/library/{self.model} does not support tools"
            return _json_error(400, message, "api_error")
        if kind == "slow":
            await self._sleep(float(options.get("seconds", 30)))
        await self._sleep(self.delay)
        text = self.responder(messages)
        tool = text if isinstance(text, ToolReply) else None
        text = tool.text if tool is not None else text
        usage = {
            "prompt_tokens": sum(count_tokens(str(m.get("content") or "")) for m in messages),
            "completion_tokens": count_tokens(text),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if stream:
            want_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._stream(request, text, usage if want_usage else None, kind, options,
                                      tool)
        reply = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
        }
        if tool is not None:
            reply["choices"][0]["message"] = {
                "role": "assistant", "content": text or None, "tool_calls": [_tool_call(tool)],
            }
            reply["choices"][0]["finish_reason"] = "tool_calls"
        if self.include_usage:
            reply["usage"] = usage
        payload = json.dumps(reply).encode()
        if kind == "bad_json":
            return web.Response(body=b'{"choices": [', content_type="application/json")
        if kind == "cut":
            return await _cut_body(request, payload)
        return web.Response(body=payload, content_type="application/json")

    async def _stream(
        self,
        request: web.Request,
        text: str,
        usage: dict[str, int] | None,
        kind: str | None,
        options: dict[str, Any],
        tool: ToolReply | None = None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        pieces = split_deltas(text)
        stop_after = int(options.get("after", 2 if kind == "cut" else 0))
        try:
            await response.prepare(request)
            await _send(response, self._chunk({"role": "assistant", "content": ""}))
            for index, piece in enumerate(pieces):
                if kind in ("cut", "bad_json") and index == stop_after:
                    break
                await _send(response, self._chunk({"content": piece}))
                if self.delta_delay:
                    await self._sleep(self.delta_delay)
            else:
                if tool is not None:  # the call's id and name first, then its arguments in pieces
                    call = _tool_call(tool)
                    call["function"]["arguments"] = ""
                    await _send(response, self._chunk({"tool_calls": [{"index": 0, **call}]}))
                    arguments = tool.arguments_json()
                    for i in range(0, len(arguments), 7):
                        fragment = {"index": 0, "function": {"arguments": arguments[i : i + 7]}}
                        await _send(response, self._chunk({"tool_calls": [fragment]}))
                if kind is None or kind == "slow":
                    finish = "stop" if tool is None else "tool_calls"
                    await _send(response, self._chunk({}, finish_reason=finish))
                    if usage is not None and self.include_usage:
                        await _send(response, {**self._chunk(None), "usage": usage})
                    await response.write(b"data: [DONE]\n\n")
                    await response.write_eof()
                    return response
            if kind == "bad_json":
                await response.write(b'data: {"choices": [{"delta": \n\n')
            elif options.get("abrupt") and request.transport is not None:
                request.transport.close()
                return response
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away; nothing to tell it
        return response

    def _chunk(self, delta: dict[str, Any] | None, finish_reason: str | None = None) -> dict:
        choices = (
            [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
        )
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "choices": choices,
        }

    async def _embeddings(self, request: web.Request) -> web.Response:
        record = await self._record(request)
        if (denied := self._unauthorised(record)) is not None:
            return denied
        fault = self._take_fault("embeddings")
        if fault is not None and fault.kind in _ERROR_KINDS:
            return _error_response(fault.kind, fault.options, record)
        if fault is not None and fault.kind == "slow":
            await self._sleep(float(fault.options.get("seconds", 30)))
        if fault is not None and fault.kind in ("bad_json", "cut"):
            return web.Response(body=b'{"data": [', content_type="application/json")
        body = record.json if isinstance(record.json, dict) else {}
        inputs = body.get("input", "")
        texts: Sequence[str] = [inputs] if isinstance(inputs, str) else list(inputs)
        dimensions = int(body.get("dimensions") or self.embedding_dimensions)
        await self._sleep(self.delay)
        tokens = sum(count_tokens(t) for t in texts)
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": embed(t, dimensions)}
                    for i, t in enumerate(texts)
                ],
                "model": body.get("model") or "fake-embedding",
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


def _wake(sleeper: asyncio.Future[None]) -> None:
    if not sleeper.done():
        sleeper.set_result(None)


def split_deltas(text: str) -> list[str]:
    """Word-sized pieces (each keeps its trailing space), so joining them gives ``text`` back."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


def _tool_call(tool: ToolReply) -> dict[str, Any]:
    return {"id": "call_fake", "type": "function",
            "function": {"name": tool.name, "arguments": tool.arguments_json()}}


async def _send(response: web.StreamResponse, chunk: dict[str, Any]) -> None:
    await response.write(f"data: {json.dumps(chunk)}\n\n".encode())


async def _cut_body(request: web.Request, payload: bytes) -> web.StreamResponse:
    """Promise the whole body, send half of it, then drop the connection."""
    response = web.StreamResponse(
        headers={"Content-Type": "application/json", "Content-Length": str(len(payload))}
    )
    await response.prepare(request)
    await response.write(payload[: len(payload) // 2])
    if request.transport is not None:
        request.transport.close()
    return response


def _auth_error(record: RecordedRequest) -> web.Response:
    given = record.headers.get("authorization", "").removeprefix("Bearer ")
    return _json_error(
        401,
        f"Incorrect API key provided: {given}. You can find your API key in your account.",
        "invalid_request_error",
        "invalid_api_key",
    )


def _error_response(kind: str, options: dict[str, Any], record: RecordedRequest) -> web.Response:
    if kind == "401":
        return _auth_error(record)
    if kind == "429":
        response = _json_error(
            429, "Rate limit reached, please retry later.", "requests", "rate_limit_exceeded"
        )
        response.headers["Retry-After"] = str(options.get("retry_after", 1))
        return response
    if kind == "400":
        message = options.get("message", "Invalid request.")
        return _json_error(
            400, message, "invalid_request_error", options.get("code"), options.get("param")
        )
    if kind == "500":
        status = int(options.get("status", 500))
        return _json_error(
            status, "The server had an error processing your request.", "server_error"
        )
    message = options.get(
        "message",
        "This model's maximum context length is 8192 tokens. However, your messages resulted "
        "in 9000 tokens. Please reduce the length of the messages.",
    )
    return _json_error(
        400, message, "invalid_request_error", options.get("code", "context_length_exceeded")
    )


def _json_error(
    status: int, message: str, type_: str, code: str | None = None, param: str | None = None
) -> web.Response:
    error = {"message": message, "type": type_, "param": param, "code": code}
    return web.json_response({"error": error}, status=status)
