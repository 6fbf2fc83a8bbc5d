"""OpenAI-compatible chat completions over one shared httpx client.

Why a hand-written client rather than the OpenAI SDK: we need the same behaviour from OpenAI,
Azure, Ollama, vLLM and llama.cpp, one retry policy bounded by an overall deadline, streaming
that never re-sends text the customer already saw, and errors that never carry the API key.

Use::

    client = LLMClient.from_settings(settings)   # one per process: it owns the connection pool
    result = await client.complete(messages)     # messages: [{"role": ..., "content": ...}]
    result = await client.complete(messages, on_delta=callback)  # streams; awaited per delta
    result.text, result.prompt_tokens, result.completion_tokens, result.model
    await client.aclose()

Failures raise ``LLMError`` subclasses: ``LLMAuthError``, ``LLMUnavailable``, ``LLMBadResponse``
(with ``partial_text`` once text was streamed), ``LLMContextTooLong``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import TYPE_CHECKING, Any

import httpx
from httpx_sse import EventSource, SSEError
from pydantic import SecretStr

from supportbot import metrics
from supportbot.llm import tools
from supportbot.llm.errors import (
    LLMAuthError,
    LLMBadResponse,
    LLMContextTooLong,
    LLMError,
    LLMUnavailable,
)
from supportbot.llm.tokens import estimate_prompt_tokens, estimate_tokens, shorten_history

if TYPE_CHECKING:
    from supportbot.config import Settings

log = logging.getLogger("supportbot.llm")

Message = Mapping[str, Any]
OnDelta = Callable[[str], Awaitable[None]]

# Statuses worth retrying (same set as the OpenAI SDK): timeouts, conflicts, rate limits, 5xx.
_RETRY_STATUSES = frozenset({408, 409, 429})
# How servers say "the prompt is too long": OpenAI's code, then vLLM / llama.cpp / Ollama wording.
_CONTEXT_HINTS = (
    "context_length_exceeded",
    "context length",
    "maximum context",
    "too many tokens",
    "context size",
    "context window",
    "exceed_context_size",
    "prompt is too long",
)


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    model: str
    finish_reason: str | None
    usage_estimated: bool = False
    handoff_reason: str | None = None  # the model called hand_off_to_human (see llm/tools.py)


def retry_after_seconds(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (OpenAI/Azure) or ``Retry-After`` (secs or date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _display_url(url: httpx.URL) -> str:
    """The URL without credentials or query string (either may hold a key)."""
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}{url.path}"


# --- internal signals from one attempt to the retry loop -----------------------------------


class _Retry(Exception):
    """A failure that another attempt may fix; ``final`` is raised when we stop trying."""

    def __init__(
        self,
        final: type[LLMError],
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.final, self.message, self.status, self.retry_after = (
            final,
            message,
            status,
            retry_after,
        )


class _ContextTooLong(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Unsupported(Exception):
    """The server rejected one of our optional parameters; retry once without it."""

    def __init__(self, param: str) -> None:
        super().__init__(param)
        self.param = param


class _CallbackFailed(Exception):
    """Carries the caller's own on_delta exception past our error handling, untouched."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


@dataclass(slots=True)
class _Progress:
    body_started: bool = False
    streamed: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _ErrorDetail:
    message: str = ""
    code: str = ""
    param: str = ""


class LLMClient:
    """One instance per process: it owns a pooled ``httpx.AsyncClient``; call ``aclose()``."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: SecretStr | str | None = None,
        model: str = "gpt-4o-mini",
        temperature: float = 0.2,
        max_tokens: int = 600,
        timeout: float = 30.0,
        deadline: float = 60.0,
        max_retries: int = 4,
        extra_headers: Mapping[str, str] | None = None,
        base_backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_connections: int = 100,
        http_client: httpx.AsyncClient | None = None,
        offer_handoff_tool: bool = True,
    ) -> None:
        base = httpx.URL(base_url)
        self._url = base.copy_with(path=base.path.rstrip("/") + "/chat/completions")
        self._display = _display_url(base)
        self._api_key = SecretStr(api_key) if isinstance(api_key, str) else api_key
        self._extra_headers = dict(extra_headers or {})
        self.model = model
        self.offer_handoff_tool = offer_handoff_tool
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.deadline = deadline
        self.max_retries = max_retries
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self._unsupported: set[str] = set()
        self._owns_http = http_client is None
        # Our own client carries the fixed headers as its defaults, so httpx does not re-parse
        # and merge them on every call; a client passed in gets them per request.
        self._request_headers = None if self._owns_http else self._headers()
        # httpx's own connection pool. Each reply in progress holds one connection for the
        # seconds the model takes, so the pool size is the number of replies generated at once;
        # requests beyond it wait for a free connection (up to ``timeout``).
        self._http = http_client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=30.0,
            ),
            headers={"User-Agent": "supportbot", **self._headers()},
        )

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> LLMClient:
        if not settings.llm_base_url:
            raise ValueError("SUPPORTBOT_LLM_BASE_URL is not set")
        kwargs: dict[str, Any] = {
            "api_key": settings.llm_api_key,
            "model": settings.llm_model,
            "temperature": settings.llm_temperature,
            "max_tokens": settings.llm_max_tokens,
            "timeout": settings.llm_timeout,
            "deadline": settings.llm_deadline,
            "max_retries": settings.llm_max_retries,
            "extra_headers": settings.llm_extra_headers,
            "base_backoff": settings.llm_base_backoff,
            "max_connections": settings.llm_max_connections,
        }
        return cls(settings.llm_base_url, **(kwargs | overrides))

    def __repr__(self) -> str:
        key = "set" if self._api_key and self._api_key.get_secret_value() else "unset"
        return (
            f"LLMClient(base_url={self._display!r}, model={self.model!r}, api_key={key}, "
            f"extra_headers={sorted(self._extra_headers)!r})"
        )

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- the public call ---------------------------------------------------------------------

    async def complete(
        self, messages: Sequence[Message], on_delta: OnDelta | None = None
    ) -> Completion:
        """Ask for one reply; stream it through ``on_delta`` when given (see ``_complete``)."""
        started = time.monotonic()
        try:
            result = await self._complete(messages, on_delta)
        except LLMError as exc:
            metrics.observe_llm(time.monotonic() - started, error=type(exc).__name__)
            raise
        metrics.observe_llm(time.monotonic() - started, prompt_tokens=result.prompt_tokens,
                            completion_tokens=result.completion_tokens)
        return result

    async def _complete(
        self, messages: Sequence[Message], on_delta: OnDelta | None = None
    ) -> Completion:
        """Ask for one reply; stream it through ``on_delta`` when given.

        Retries rate limits, 5xx, timeouts, refused connections and garbled replies with
        backoff inside ``deadline``, but never after text has reached ``on_delta``.
        """
        msgs = [dict(m) for m in messages]
        started = time.monotonic()
        deadline = started + self.deadline
        failures = 0
        shortened = False
        attempt = 0
        while True:
            attempt += 1
            progress = _Progress()
            attempt_start = time.monotonic()
            remaining = deadline - attempt_start
            extra: dict[str, Any] = {"attempt": attempt, "stream": on_delta is not None}
            try:
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    result = await self._attempt(msgs, on_delta, progress)
            except _CallbackFailed as exc:
                raise exc.error from exc.error.__cause__
            except TimeoutError:
                extra["latency_ms"] = _ms(attempt_start)
                message = f"no complete reply from the LLM within the {self.deadline:g} s deadline"
                raise self._fail(LLMUnavailable, message, progress, extra) from None
            except LLMAuthError as exc:
                extra |= {"status": exc.status, "latency_ms": _ms(attempt_start)}
                log.error("%s", exc, extra=extra)
                raise
            except LLMBadResponse as exc:
                extra |= {"status": exc.status, "latency_ms": _ms(attempt_start)}
                log.error("LLM call failed: %s", exc, extra=extra)
                raise
            except _Unsupported as exc:
                log.warning(
                    "LLM server rejected the %r parameter; retrying without it",
                    exc.param,
                    extra=extra | {"status": 400, "latency_ms": _ms(attempt_start)},
                )
                self._unsupported.add(exc.param)
                metrics.LLM_RETRIES.labels("unsupported_param").inc()
                continue
            except _ContextTooLong as exc:
                extra |= {"status": 400, "latency_ms": _ms(attempt_start)}
                shorter = None if shortened else shorten_history(msgs)
                if shorter is None:
                    message = f"the conversation does not fit the model's context: {exc.message}"
                    raise self._fail(LLMContextTooLong, message, progress, extra, 400) from None
                log.warning(
                    "LLM context too long; retrying with %d of %d messages",
                    len(shorter),
                    len(msgs),
                    extra=extra,
                )
                msgs, shortened = shorter, True
                metrics.LLM_RETRIES.labels("context_too_long").inc()
                continue
            except _Retry as exc:
                extra |= {"status": exc.status, "latency_ms": _ms(attempt_start)}
                cause = exc.__cause__
                if progress.streamed:
                    raise self._fail(exc.final, exc.message, progress, extra, exc.status) from cause
                failures += 1
                if failures > self.max_retries:
                    message = f"{exc.message} (gave up after {attempt} attempts)"
                    raise self._fail(exc.final, message, progress, extra, exc.status) from cause
                delay = self._backoff(failures) if exc.retry_after is None else exc.retry_after
                if time.monotonic() + delay >= deadline:
                    message = (
                        f"{exc.message} (next retry in {delay:.1f} s would pass "
                        f"the {self.deadline:g} s deadline)"
                    )
                    raise self._fail(exc.final, message, progress, extra, exc.status) from cause
                log.warning(
                    "LLM call failed: %s; retrying in %.2f s",
                    exc.message,
                    delay,
                    extra=extra | {"retry_in_ms": round(delay * 1000)},
                )
                metrics.LLM_RETRIES.labels(metrics.retry_reason(exc.status, exc.message)).inc()
                await asyncio.sleep(delay)
                continue
            if log.isEnabledFor(logging.INFO):  # the extras cost more than the check
                log.info(
                    "LLM replied in %d ms",
                    _ms(started),
                    extra=extra
                    | {
                        "status": 200,
                        "latency_ms": _ms(attempt_start),
                        "elapsed_ms": _ms(started),
                        "model": result.model,
                        "prompt_tokens": result.prompt_tokens,
                        "completion_tokens": result.completion_tokens,
                        "usage_estimated": result.usage_estimated,
                        "finish_reason": result.finish_reason,
                    },
                )
            return result

    # --- one HTTP attempt --------------------------------------------------------------------

    async def _attempt(
        self, messages: list[dict[str, Any]], on_delta: OnDelta | None, progress: _Progress
    ) -> Completion:
        body = self._body(messages, stream=on_delta is not None)
        headers = self._request_headers
        if on_delta is not None:
            headers = {**(headers or {}), "Accept": "text/event-stream"}
        # compact UTF-8 JSON: what httpx's ``json=`` sends, minus the spaces and \u escapes
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        request = self._http.build_request("POST", self._url, content=content, headers=headers)
        try:
            resp = await self._http.send(request, stream=True)
            try:
                if resp.status_code >= 300:
                    await resp.aread()
                    self._check_status(resp)
                progress.body_started = True
                if on_delta is not None and _is_event_stream(resp):
                    return await self._read_stream(resp, messages, on_delta, progress)
                await resp.aread()
                completion = self._parse_json(resp, messages)
                if on_delta is not None and completion.text:
                    # A proxy ignored "stream": hand over the whole reply as one delta.
                    await _deliver(on_delta, completion.text, progress)
                return completion
            finally:
                await resp.aclose()
        except httpx.TimeoutException as exc:
            message = f"the LLM did not answer within {self.timeout:g} s ({type(exc).__name__})"
            raise _Retry(LLMUnavailable, message) from exc
        except httpx.ConnectError as exc:
            message = f"cannot connect to the LLM at {self._display} ({self._scrub(str(exc))})"
            raise _Retry(LLMUnavailable, message) from exc
        except SSEError as exc:
            raise _Retry(LLMBadResponse, "the LLM sent a malformed event stream") from exc
        except httpx.TransportError as exc:
            if progress.body_started:
                message = f"the LLM connection broke mid-reply ({type(exc).__name__})"
                raise _Retry(LLMBadResponse, message) from exc
            message = f"the LLM connection failed ({type(exc).__name__})"
            raise _Retry(LLMUnavailable, message) from exc

    async def _read_stream(
        self,
        response: httpx.Response,
        messages: list[dict[str, Any]],
        on_delta: OnDelta,
        progress: _Progress,
    ) -> Completion:
        model, finish, usage, done = self.model, None, None, False
        calls = tools.ToolCallCollector()
        events = EventSource(response).aiter_sse()
        async for event in events:
            data = event.data.strip()
            if data == "[DONE]":
                done = True
                break
            if not data:
                continue
            try:
                chunk = json.loads(data)
            except ValueError:
                chunk = None
            if not isinstance(chunk, dict):
                raise _Retry(LLMBadResponse, "the LLM sent malformed JSON in its stream")
            if "error" in chunk:
                detail = self._scrub(_error_detail(chunk).message or "unknown error")
                raise _Retry(LLMBadResponse, f"the LLM reported an error mid-stream: {detail}")
            model = chunk.get("model") or model
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                piece = (choice.get("delta") or {}).get("content")
                if isinstance(piece, str) and piece:
                    await _deliver(on_delta, piece, progress)
                calls.feed((choice.get("delta") or {}).get("tool_calls"))
                finish = choice.get("finish_reason") or finish
        if done:
            await _drain(events)
        elif finish is None:
            raise _Retry(LLMBadResponse, "the LLM stream stopped before the reply was complete")
        return _completion("".join(progress.streamed), usage, model, finish, messages,
                           handoff_reason=calls.handoff_reason())

    def _parse_json(self, response: httpx.Response, messages: list[dict[str, Any]]) -> Completion:
        try:
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except ValueError:
            raise _Retry(LLMBadResponse, "the LLM sent malformed JSON") from None
        except (KeyError, IndexError, TypeError, AttributeError):
            raise _Retry(LLMBadResponse, "the LLM reply has no choices[0].message") from None
        model = data.get("model") or self.model
        reason = tools.handoff_reason(choice["message"].get("tool_calls"))
        return _completion(text, data.get("usage"), model, choice.get("finish_reason"), messages,
                           handoff_reason=reason)

    def _check_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status < 300:
            return
        if status in (401, 403):
            raise LLMAuthError(self._auth_message(status), status=status)
        detail = _error_detail_from(response)
        text = self._scrub(detail.message or response.text[:300] or response.reason_phrase)
        haystack = f"{detail.code} {detail.message}".lower()
        if status in (400, 413, 422) and any(hint in haystack for hint in _CONTEXT_HINTS):
            raise _ContextTooLong(text)
        # llama.cpp without --jinja refuses tools with a 500 ("tools param requires --jinja flag")
        tools_500 = status == 500 and tools.mentions_tools(detail.message)
        if (status in (400, 422) or tools_500) and (param := self._rejected_param(detail)):
            raise _Unsupported(param)
        if status in _RETRY_STATUSES or status >= 500:
            raise _Retry(
                LLMUnavailable,
                f"the LLM server answered {status}: {text}",
                status=status,
                retry_after=retry_after_seconds(response.headers),
            )
        hint = ""
        if status == 404:
            hint = (
                f" (check SUPPORTBOT_LLM_BASE_URL={self._display}, which usually ends in /v1, "
                f"and SUPPORTBOT_LLM_MODEL={self.model})"
            )
        raise LLMBadResponse(f"the LLM server answered {status}: {text}{hint}", status=status)

    def _rejected_param(self, detail: _ErrorDetail) -> str | None:
        text = f"{detail.param} {detail.message}".lower()
        if (
            self.offer_handoff_tool
            and not tools.tools_rejected(str(self._url), self.model)
            and tools.mentions_tools(text, detail.code)
        ):
            tools.note_rejected(str(self._url), self.model)  # next attempts: marker instead
            return "tools"
        for param in ("stream_options", "max_tokens", "temperature"):
            if param in text and param not in self._unsupported:
                if param == "max_tokens" and "max_completion_tokens" not in text:
                    continue
                return param
        return None

    def _auth_message(self, status: int) -> str:
        where = "SUPPORTBOT_LLM_API_KEY"
        if self._extra_headers:
            where += " (or the key in SUPPORTBOT_LLM_EXTRA_HEADERS)"
        if self._api_key is None and not self._extra_headers:
            return (
                f"LLM at {self._display} asked for an API key ({status}) "
                "but SUPPORTBOT_LLM_API_KEY is not set"
            )
        if status == 403:
            return (
                f"LLM refused access (403) at {self._display}: check {where} and that it may "
                f"use model {self.model!r} (SUPPORTBOT_LLM_MODEL)"
            )
        return f"LLM rejected the API key (401) at {self._display}: check {where}"

    def _fail(
        self,
        cls: type[LLMError],
        message: str,
        progress: _Progress,
        extra: dict[str, Any],
        status: int | None = None,
    ) -> LLMError:
        """Build the final error; once text was streamed it is always a bad response."""
        if progress.streamed:
            partial = "".join(progress.streamed)
            error: LLMError = LLMBadResponse(
                f"{message} after {len(partial)} characters were streamed",
                status=status,
                partial_text=partial,
            )
        else:
            error = cls(message, status=status)
        log.error("LLM call failed: %s", error, extra=extra)
        return error

    # --- request pieces ----------------------------------------------------------------------

    def _body(self, messages: list[dict[str, Any]], *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.offer_handoff_tool:
            if tools.tools_rejected(str(self._url), self.model):
                body["messages"] = tools.with_marker_instructions(messages)
            else:
                body["tools"] = [tools.HANDOFF_TOOL]
        if "temperature" not in self._unsupported:
            body["temperature"] = self.temperature
        tokens_param = (
            "max_completion_tokens" if "max_tokens" in self._unsupported else "max_tokens"
        )
        body[tokens_param] = self.max_tokens
        if stream:
            body["stream"] = True
            if "stream_options" not in self._unsupported:
                body["stream_options"] = {"include_usage": True}
        return body

    def _headers(self) -> dict[str, str]:
        headers = dict(self._extra_headers)
        if self._api_key is not None and self._api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
        return headers

    def _scrub(self, text: str) -> str:
        """Remove anything secret a server might echo back (OpenAI echoes part of bad keys)."""
        secrets = list(self._extra_headers.values())
        if self._api_key is not None:
            secrets.append(self._api_key.get_secret_value())
        for secret in secrets:
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text[:300]

    def _backoff(self, failures: int) -> float:
        delay = min(self.max_backoff, self.base_backoff * 2 ** (failures - 1))
        return delay * (0.5 + random.random() / 2)


def _completion(
    text: str,
    usage: Any,
    model: str,
    finish_reason: str | None,
    messages: list[dict[str, Any]],
    *,
    handoff_reason: str | None = None,
) -> Completion:
    usage = usage if isinstance(usage, dict) else {}
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    estimated = not isinstance(prompt, int) or not isinstance(completion, int)
    if estimated:
        prompt = prompt if isinstance(prompt, int) else estimate_prompt_tokens(messages)
        completion = completion if isinstance(completion, int) else estimate_tokens(text)
    return Completion(text, prompt, completion, model, finish_reason, usage_estimated=estimated,
                      handoff_reason=handoff_reason)


async def _deliver(on_delta: OnDelta, piece: str, progress: _Progress) -> None:
    progress.streamed.append(piece)
    try:
        await on_delta(piece)
    except Exception as exc:
        raise _CallbackFailed(exc) from None


async def _drain(events: AsyncIterator[Any]) -> None:
    """Read what follows ``[DONE]`` so the connection goes back to the pool; never wait long."""
    with contextlib.suppress(httpx.HTTPError, TimeoutError):
        async with asyncio.timeout(1.0):
            async for _ in events:
                pass


def _error_detail(data: Any) -> _ErrorDetail:
    """Read ``{"error": {"message", "code", "param"}}`` or ``{"error": "..."}`` (Ollama)."""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, str):
        return _ErrorDetail(message=error)
    if isinstance(error, dict):
        return _ErrorDetail(
            message=str(error.get("message") or ""),
            code=str(error.get("code") or error.get("type") or ""),
            param=str(error.get("param") or ""),
        )
    if isinstance(data, dict) and isinstance(data.get("detail"), str):
        return _ErrorDetail(message=data["detail"])
    return _ErrorDetail()


def _error_detail_from(response: httpx.Response) -> _ErrorDetail:
    try:
        return _error_detail(response.json())
    except ValueError:
        return _ErrorDetail(message=response.text[:300])


def _is_event_stream(response: httpx.Response) -> bool:
    return "text/event-stream" in response.headers.get("content-type", "").partition(";")[0]


def _ms(since: float) -> int:
    return round((time.monotonic() - since) * 1000)
