"""The real LLMClient against the real FakeLLM server over loopback HTTP."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate
from typing import Any

import httpx
import pytest

from supportbot.config import Settings
from supportbot.llm import (
    LLMAuthError,
    LLMBadResponse,
    LLMClient,
    LLMContextTooLong,
    LLMError,
    LLMUnavailable,
    estimate_tokens,
    shorten_history,
)
from supportbot.llm.client import retry_after_seconds
from supportbot.llm.tokens import estimate_prompt_tokens
from supportbot.testing.fake_llm import FakeLLM, count_tokens, split_deltas

KEY = "sk-test-9f8e7d6c5b4a"
CONVERSATION = [
    {"role": "system", "content": "You are Ada, support for Acme Cloud."},
    {"role": "user", "content": "My invoice is wrong"},
    {"role": "assistant", "content": "Sorry about that! Which invoice?"},
    {"role": "user", "content": "The one from March"},
]


@pytest.fixture
def fake() -> AsyncIterator[FakeLLM]:
    with FakeLLM(require_key=KEY) as server:
        yield server


@pytest.fixture
async def make_client(fake: FakeLLM) -> AsyncIterator[Callable[..., LLMClient]]:
    clients: list[LLMClient] = []

    def make(**overrides: Any) -> LLMClient:
        options: dict[str, Any] = {
            "api_key": KEY,
            "model": "test-model",
            "timeout": 5.0,
            "deadline": 10.0,
            "base_backoff": 0.01,
        }
        base_url = overrides.pop("base_url", fake.url)
        client = LLMClient(base_url, **(options | overrides))
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


class Deltas(list[str]):
    async def __call__(self, piece: str) -> None:
        self.append(piece)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the happy paths -------------------------------------------------------------------------


async def test_non_streaming_sends_key_roles_and_settings(fake: FakeLLM, make_client) -> None:
    client = make_client(temperature=0.7, max_tokens=123, extra_headers={"X-Proxy-Team": "cs"})

    result = await client.complete(CONVERSATION)

    assert result.text == "Thanks for reaching out! You asked: The one from March"
    assert result.model == "fake-model"
    assert result.finish_reason == "stop"
    assert result.completion_tokens == count_tokens(result.text)
    assert result.prompt_tokens == sum(count_tokens(m["content"]) for m in CONVERSATION)
    assert result.usage_estimated is False
    [request] = fake.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["x-proxy-team"] == "cs"
    assert request.messages == CONVERSATION
    assert request.json["model"] == "test-model"
    assert request.json["temperature"] == 0.7
    assert request.json["max_tokens"] == 123
    assert "stream" not in request.json


async def test_body_is_compact_utf8_json(fake: FakeLLM, make_client) -> None:
    conversation = [*CONVERSATION[:-1], {"role": "user", "content": "我要转人工 — ¿ahora?"}]
    await make_client().complete(conversation)
    await make_client(extra_headers={"Content-Type": "application/json; charset=utf-8"}).complete(
        conversation
    )

    plain, overridden = fake.requests
    assert plain.messages == conversation
    assert plain.headers["content-type"] == "application/json"
    compact = json.dumps(plain.json, ensure_ascii=False, separators=(",", ":")).encode()
    assert int(plain.headers["content-length"]) == len(compact)
    assert overridden.headers["content-type"] == "application/json; charset=utf-8"


async def test_streaming_delivers_deltas_in_order_with_usage(fake: FakeLLM, make_client) -> None:
    fake.responder = lambda messages: "First check the billing page, then reply here."
    deltas = Deltas()

    result = await make_client().complete(CONVERSATION, on_delta=deltas)

    assert deltas == split_deltas("First check the billing page, then reply here.")
    assert len(deltas) > 3
    assert "".join(deltas) == result.text == "First check the billing page, then reply here."
    assert result.finish_reason == "stop"
    assert result.completion_tokens == 8
    assert result.usage_estimated is False
    [request] = fake.requests
    assert request.json["stream"] is True
    assert request.json["stream_options"] == {"include_usage": True}
    assert request.headers["accept"] == "text/event-stream"
    assert request.messages == CONVERSATION


@pytest.mark.parametrize("stream", [False, True])
async def test_usage_is_estimated_when_the_server_omits_it(
    fake: FakeLLM, make_client, stream: bool
) -> None:
    fake.include_usage = False
    fake.responder = lambda messages: "Your order ships tomorrow."

    result = await make_client().complete(CONVERSATION, on_delta=Deltas() if stream else None)

    assert result.usage_estimated is True
    assert result.completion_tokens == estimate_tokens("Your order ships tomorrow.")
    assert result.prompt_tokens == estimate_prompt_tokens(CONVERSATION)


def test_token_estimate_counts_cjk_per_character() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcdefgh") == 2
    assert estimate_tokens("abcdefghi") == 3
    assert estimate_tokens("请问发票在哪里") == 7
    assert estimate_tokens("注文 order") == 2 + 2


async def test_from_settings_uses_extra_headers_and_azure_style_query(fake: FakeLLM) -> None:
    settings = Settings(
        _env_file=None,
        llm_base_url=fake.url + "?api-version=2024-10-21",
        llm_api_key=KEY,
        llm_model="my-deployment",
        llm_extra_headers={"api-key": "azure-key-123"},
    )
    client = LLMClient.from_settings(settings)
    try:
        await client.complete(CONVERSATION)
    finally:
        await client.aclose()

    [request] = fake.requests
    assert request.path == "/v1/chat/completions"
    assert request.query == {"api-version": "2024-10-21"}
    assert request.headers["api-key"] == "azure-key-123"
    assert request.json["model"] == "my-deployment"
    assert "azure-key-123" not in repr(client) and KEY not in repr(client)


def test_from_settings_needs_a_base_url() -> None:
    with pytest.raises(ValueError, match="SUPPORTBOT_LLM_BASE_URL"):
        LLMClient.from_settings(Settings(_env_file=None, llm_base_url=None))


async def test_one_pooled_connection_is_reused_across_calls(fake: FakeLLM, make_client) -> None:
    client = make_client()

    await client.complete(CONVERSATION)
    await client.complete(CONVERSATION, on_delta=Deltas())
    await client.complete(CONVERSATION)

    ports = {request.peer_port for request in fake.requests}
    assert len(fake.requests) == 3
    assert len(ports) == 1, "each call opened a new connection instead of reusing the pool"


# --- retries ---------------------------------------------------------------------------------


async def test_429_waits_for_retry_after_then_succeeds(fake: FakeLLM, make_client) -> None:
    fake.fail_next("429", retry_after=0.4)

    result = await make_client(base_backoff=0.001).complete(CONVERSATION)

    assert result.text.endswith("The one from March")
    first, second = fake.requests
    assert second.at - first.at >= 0.35, "Retry-After was not honoured"


def test_retry_after_accepts_seconds_http_dates_and_milliseconds() -> None:
    now = time.time()
    date = formatdate(now + 30, usegmt=True)
    assert retry_after_seconds(httpx.Headers({"Retry-After": "2"})) == 2.0
    assert 28 <= retry_after_seconds(httpx.Headers({"Retry-After": date}), now=now) <= 30
    assert retry_after_seconds(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    assert retry_after_seconds(httpx.Headers({"Retry-After": "soon"})) is None
    assert retry_after_seconds(httpx.Headers({})) is None


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_is_retried(fake: FakeLLM, make_client, status: int) -> None:
    fake.fail_next("500", times=2, status=status)
    deltas = Deltas()

    result = await make_client().complete(CONVERSATION, on_delta=deltas)

    assert len(fake.requests) == 3
    assert "".join(deltas) == result.text


async def test_gives_up_after_max_retries(fake: FakeLLM, make_client) -> None:
    fake.fail_next("500", times=10)

    with pytest.raises(LLMUnavailable) as caught:
        await make_client(max_retries=2).complete(CONVERSATION)

    assert len(fake.requests) == 3
    assert caught.value.status == 500
    assert "3 attempts" in str(caught.value)


async def test_deadline_bounds_all_retries(fake: FakeLLM, make_client) -> None:
    fake.fail_next("500", times=1000)
    started = time.monotonic()

    with pytest.raises(LLMUnavailable, match="deadline"):
        await make_client(deadline=0.5, max_retries=1000, base_backoff=0.05).complete(CONVERSATION)

    assert time.monotonic() - started < 3.0
    assert 1 < len(fake.requests) < 1000


async def test_retry_after_beyond_the_deadline_gives_up_at_once(fake: FakeLLM, make_client) -> None:
    fake.fail_next("429", retry_after=30)

    with pytest.raises(LLMUnavailable, match="deadline") as caught:
        await make_client(deadline=2.0).complete(CONVERSATION)

    assert caught.value.status == 429
    assert len(fake.requests) == 1


async def test_timeout_is_retried_then_reported(fake: FakeLLM, make_client) -> None:
    fake.fail_next("slow", seconds=5)
    client = make_client(timeout=0.2, max_retries=1)

    assert (await client.complete(CONVERSATION)).text
    assert len(fake.requests) == 2

    fake.fail_next("slow", times=2, seconds=5)
    with pytest.raises(LLMUnavailable, match="did not answer within"):
        await client.complete(CONVERSATION, on_delta=Deltas())


async def test_slow_stream_past_the_deadline_is_unavailable(fake: FakeLLM, make_client) -> None:
    fake.fail_next("slow", times=5, seconds=5)

    with pytest.raises(LLMUnavailable, match="deadline"):
        await make_client(timeout=5.0, deadline=0.3).complete(CONVERSATION, on_delta=Deltas())


async def test_connection_refused_is_unavailable(make_client) -> None:
    client = make_client(base_url=f"http://127.0.0.1:{closed_port()}/v1", max_retries=1)

    with pytest.raises(LLMUnavailable, match="cannot connect") as caught:
        await client.complete(CONVERSATION)

    assert "2 attempts" in str(caught.value)


# --- the 401 path and secrets ----------------------------------------------------------------


async def test_wrong_key_is_not_retried_and_never_leaks(
    fake: FakeLLM, make_client, caplog: pytest.LogCaptureFixture
) -> None:
    wrong_key = "sk-wrong-5ecret-0000"
    # The fake echoes the presented key back, like OpenAI does: the client must scrub it.
    async with httpx.AsyncClient() as probe:
        echo = await probe.post(
            fake.url + "/chat/completions",
            json={"messages": []},
            headers={"Authorization": f"Bearer {wrong_key}"},
        )
    assert echo.status_code == 401 and wrong_key in echo.text
    client = make_client(api_key=wrong_key)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(LLMAuthError) as caught:
        await client.complete(CONVERSATION, on_delta=Deltas())

    assert len(fake.chat_requests()) == 2  # the echo probe and exactly one attempt
    assert caught.value.status == 401
    [line] = [r for r in caplog.records if r.name == "supportbot.llm"]
    assert line.levelno == logging.ERROR
    assert line.getMessage() == (
        f"LLM rejected the API key (401) at {fake.url}: check SUPPORTBOT_LLM_API_KEY"
    )
    assert line.status == 401 and line.attempt == 1 and isinstance(line.latency_ms, int)
    everything = [caplog.text, str(caught.value), repr(caught.value), repr(client)]
    everything += [str(r.__dict__) for r in caplog.records]
    everything += [repr(e) for e in (caught.value.__cause__, caught.value.__context__) if e]
    for text in everything:
        assert wrong_key not in text
        assert KEY not in text


async def test_401_fault_with_no_key_names_the_missing_setting(fake: FakeLLM, make_client) -> None:
    fake.require_key = None
    fake.fail_next("401")

    with pytest.raises(LLMAuthError, match="SUPPORTBOT_LLM_API_KEY is not set"):
        await make_client(api_key=None).complete(CONVERSATION)

    assert "authorization" not in fake.requests[0].headers


async def test_server_error_text_is_scrubbed_of_the_key(fake: FakeLLM, make_client) -> None:
    fake.fail_next("400", message=f"bad header value {KEY}")

    with pytest.raises(LLMBadResponse) as caught:
        await make_client().complete(CONVERSATION)

    assert KEY not in str(caught.value)
    assert "bad header value ***" in str(caught.value)
    assert len(fake.requests) == 1


# --- context length --------------------------------------------------------------------------

LONG_CONVERSATION = [
    {"role": "system", "content": "system prompt"},
    {"role": "user", "content": "u1"},
    {"role": "assistant", "content": "a1"},
    {"role": "user", "content": "u2"},
    {"role": "assistant", "content": "a2"},
    {"role": "user", "content": "u3"},
    {"role": "assistant", "content": "a3"},
    {"role": "user", "content": "latest question"},
]


@pytest.mark.parametrize(
    "options",
    [
        {},  # OpenAI: code context_length_exceeded
        {"code": None, "message": "This model's maximum context length is 4096 tokens."},  # vLLM
        {"code": None, "message": "the request exceeds the available context size"},  # llama.cpp
    ],
)
async def test_context_too_long_retries_once_with_shorter_history(
    fake: FakeLLM, make_client, options: dict[str, Any]
) -> None:
    fake.fail_next("context_length", **options)

    result = await make_client().complete(LONG_CONVERSATION, on_delta=Deltas())

    assert result.text.endswith("latest question")
    first, second = fake.requests
    assert first.messages == LONG_CONVERSATION
    assert [m["content"] for m in second.messages] == [
        "system prompt",
        "a2",
        "u3",
        "a3",
        "latest question",
    ]


async def test_context_still_too_long_after_shortening(fake: FakeLLM, make_client) -> None:
    fake.fail_next("context_length", times=2)

    with pytest.raises(LLMContextTooLong) as caught:
        await make_client().complete(LONG_CONVERSATION)

    assert isinstance(caught.value, LLMBadResponse)
    assert len(fake.requests) == 2


def test_shorten_history_keeps_system_and_last_user() -> None:
    assert shorten_history([{"role": "system", "content": "s"}]) is None
    assert shorten_history([{"role": "user", "content": "only"}]) is None
    shorter = shorten_history(LONG_CONVERSATION[:4])
    assert shorter == [LONG_CONVERSATION[0], LONG_CONVERSATION[2], LONG_CONVERSATION[3]]


# --- broken replies --------------------------------------------------------------------------


@pytest.mark.parametrize("abrupt", [False, True])
async def test_stream_cut_after_deltas_is_a_bad_response_not_restreamed(
    fake: FakeLLM, make_client, abrupt: bool
) -> None:
    fake.fail_next("cut", after=2, abrupt=abrupt)
    deltas = Deltas()

    with pytest.raises(LLMBadResponse) as caught:
        await make_client().complete(CONVERSATION, on_delta=deltas)

    assert len(deltas) == 2
    assert caught.value.partial_text == "".join(deltas) == "Thanks for "
    assert len(fake.requests) == 1


async def test_stream_cut_before_any_delta_is_retried(fake: FakeLLM, make_client) -> None:
    fake.fail_next("cut", after=0)
    deltas = Deltas()

    result = await make_client().complete(CONVERSATION, on_delta=deltas)

    assert "".join(deltas) == result.text
    assert len(fake.requests) == 2


async def test_non_streamed_body_cut_midway_is_retried(fake: FakeLLM, make_client) -> None:
    fake.fail_next("cut")

    assert (await make_client().complete(CONVERSATION)).text
    assert len(fake.requests) == 2


@pytest.mark.parametrize("stream", [False, True])
async def test_bad_json_is_retried_then_reported(fake: FakeLLM, make_client, stream: bool) -> None:
    client = make_client(max_retries=2)
    fake.fail_next("bad_json")

    assert (await client.complete(CONVERSATION, on_delta=Deltas() if stream else None)).text
    assert len(fake.requests) == 2

    fake.fail_next("bad_json", times=3)
    with pytest.raises(LLMBadResponse, match="malformed JSON"):
        await client.complete(CONVERSATION, on_delta=Deltas() if stream else None)
    assert len(fake.requests) == 5


async def test_bad_json_after_deltas_is_not_restreamed(fake: FakeLLM, make_client) -> None:
    fake.fail_next("bad_json", after=3)
    deltas = Deltas()

    with pytest.raises(LLMBadResponse) as caught:
        await make_client().complete(CONVERSATION, on_delta=deltas)

    assert len(deltas) == 3 and caught.value.partial_text == "".join(deltas)
    assert len(fake.requests) == 1


async def test_other_4xx_is_a_bad_response_without_retry(fake: FakeLLM, make_client) -> None:
    fake.fail_next("400", message="'messages' must contain at least one message")

    with pytest.raises(LLMBadResponse, match="400: 'messages' must contain") as caught:
        await make_client().complete(CONVERSATION)

    assert caught.value.status == 400
    assert len(fake.requests) == 1


async def test_wrong_base_url_names_the_setting(fake: FakeLLM, make_client) -> None:
    client = make_client(base_url=fake.url.removesuffix("/v1"))

    with pytest.raises(LLMBadResponse, match=r"404.*SUPPORTBOT_LLM_BASE_URL"):
        await client.complete(CONVERSATION)


async def test_unsupported_max_tokens_is_renamed_once(fake: FakeLLM, make_client) -> None:
    fake.fail_next(
        "400",
        param="max_tokens",
        code="unsupported_parameter",
        message="Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead.",
    )
    client = make_client(max_tokens=77)

    await client.complete(CONVERSATION)
    await client.complete(CONVERSATION)

    first, second, third = fake.requests
    assert first.json["max_tokens"] == 77
    assert "max_tokens" not in second.json and second.json["max_completion_tokens"] == 77
    assert third.json["max_completion_tokens"] == 77


async def test_on_delta_errors_reach_the_caller_unchanged(fake: FakeLLM, make_client) -> None:
    class Boom(Exception):
        pass

    async def explode(piece: str) -> None:
        raise Boom(piece)

    with pytest.raises(Boom):
        await make_client().complete(CONVERSATION, on_delta=explode)

    assert len(fake.requests) == 1
    assert not issubclass(Boom, LLMError)
