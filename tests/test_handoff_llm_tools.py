"""Structured handoff with an LLM: the hand_off_to_human tool, streamed and not, and the fall back
to the [[HANDOFF]] marker when a server answers 400 to ``tools`` — against the loopback FakeLLM,
through the real LLMClient and httpx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supportbot.engine import Status
from supportbot.handoff import HANDOFF_MARKER, llm_handoff, split_marker
from supportbot.llm import LLMBadResponse, LLMClient, tools
from supportbot.testing import OfflineBot, RecordingSink
from supportbot.testing.fake_llm import FakeLLM, ToolReply

SYSTEM = {"role": "system", "content": "You are the support bot of Acme. Be brief."}  # no marker
ASK = {"role": "user", "content": "I want to talk to a person about my invoice"}


@pytest.fixture(autouse=True)
def _fresh_tool_memory() -> Iterator[None]:
    tools.forget_rejections()
    yield
    tools.forget_rejections()


def _handoff(messages: list[dict[str, Any]]) -> str | ToolReply:
    return ToolReply({"reason": "customer asks for a person about an invoice"},
                     text="Let me get a colleague for you.")


def _offered_tool(body: dict[str, Any]) -> bool:
    return any(t["function"]["name"] == "hand_off_to_human" for t in body.get("tools") or [])


async def test_tool_call_without_streaming() -> None:
    with FakeLLM(responder=_handoff) as fake:
        async with LLMClient(fake.url, api_key="sk-test", max_retries=0) as llm:
            completion = await llm.complete([SYSTEM, ASK])
        body = fake.chat_requests()[-1].json
    # offered although the system prompt says nothing about handing off
    assert _offered_tool(body)
    assert completion.handoff_reason == "customer asks for a person about an invoice"
    assert completion.text == "Let me get a colleague for you."
    assert completion.finish_reason == "tool_calls"


async def test_tool_call_in_a_stream() -> None:
    shown: list[str] = []

    async def on_delta(piece: str) -> None:
        shown.append(piece)

    with FakeLLM(responder=_handoff) as fake:
        async with LLMClient(fake.url, api_key="sk-test", max_retries=0) as llm:
            completion = await llm.complete([SYSTEM, ASK], on_delta=on_delta)
        assert fake.chat_requests()[-1].json["stream"] is True
    assert "".join(shown) == "Let me get a colleague for you."
    assert completion.handoff_reason == "customer asks for a person about an invoice"


async def test_tool_call_with_no_text_and_broken_arguments_still_hands_off() -> None:
    def responder(messages: list[dict[str, Any]]) -> ToolReply:
        return ToolReply(raw_arguments='{"reason": "cut sh')

    shown: list[str] = []

    async def on_delta(piece: str) -> None:
        shown.append(piece)

    with FakeLLM(responder=responder) as fake:
        async with LLMClient(fake.url, api_key="sk-test", max_retries=0) as llm:
            plain = await llm.complete([SYSTEM, ASK])
            streamed = await llm.complete([SYSTEM, ASK], on_delta=on_delta)
    assert plain.text == "" and plain.handoff_reason == tools.DEFAULT_REASON
    assert streamed.text == "" and streamed.handoff_reason == tools.DEFAULT_REASON
    assert shown == []


async def test_other_tool_names_and_plain_answers_are_not_handoffs() -> None:
    replies: list[str | ToolReply] = [ToolReply({"city": "Paris"}, name="get_weather"), "Hello!"]

    with FakeLLM(responder=lambda messages: replies.pop(0)) as fake:
        async with LLMClient(fake.url, api_key="sk-test", max_retries=0) as llm:
            other = await llm.complete([SYSTEM, ASK])
            plain = await llm.complete([SYSTEM, ASK])
    assert other.handoff_reason is None and plain.handoff_reason is None
    assert plain.text == "Hello!"


@pytest.mark.parametrize(("stream", "refusal"), [(False, True), (True, True), (False, 500)])
async def test_server_that_rejects_tools_falls_back_to_the_marker(
    stream: bool, refusal: bool | int
) -> None:
    def responder(messages: list[dict[str, Any]]) -> str:
        # a model without tools follows the marker instructions it was given
        told = HANDOFF_MARKER in messages[0]["content"]
        return f"A colleague will take over. {HANDOFF_MARKER}" if told else "No idea."

    async def on_delta(piece: str) -> None:
        pass

    with FakeLLM(responder=responder) as fake:
        fake.reject_tools = refusal  # 400 like Ollama, or 500 like llama.cpp without --jinja
        async with LLMClient(fake.url, api_key="sk-test", max_retries=0) as llm:
            first = await llm.complete([SYSTEM, ASK], on_delta=on_delta if stream else None)
            second = await llm.complete([SYSTEM, ASK])
        # a new client for the same server and model remembers too (one per process)
        async with LLMClient(fake.url, api_key="sk-test", max_retries=0) as again:
            third = await again.complete([SYSTEM, ASK])
        bodies = [r.json for r in fake.chat_requests()]
    # the 400, the retry without tools, then no more tools at all
    assert [_offered_tool(b) for b in bodies] == [True, False, False, False]
    for body in bodies[1:]:
        assert HANDOFF_MARKER in body["messages"][0]["content"]  # instructions added...
    assert SYSTEM["content"] == "You are the support bot of Acme. Be brief."  # ...to a copy
    for completion in (first, second, third):
        assert completion.handoff_reason is None
        assert split_marker(completion.text) == ("A colleague will take over.", True)


async def test_a_different_model_on_the_same_server_is_asked_again() -> None:
    with FakeLLM(responder=_handoff) as fake:
        fake.reject_tools = True
        async with LLMClient(fake.url, api_key="sk-test", model="small", max_retries=0) as llm:
            await llm.complete([SYSTEM, ASK])
        fake.reject_tools = False
        async with LLMClient(fake.url, api_key="sk-test", model="big", max_retries=0) as llm:
            completion = await llm.complete([SYSTEM, ASK])
        url = f"{fake.url}/chat/completions"
    assert completion.handoff_reason is not None
    assert tools.tools_rejected(url, "small") and not tools.tools_rejected(url, "big")


async def test_a_400_about_something_else_is_not_blamed_on_tools() -> None:
    with FakeLLM(responder=_handoff) as fake:
        fake.fail_next("400", message="Invalid value for 'messages'.")
        async with LLMClient(fake.url, api_key="sk-test", max_retries=0) as llm:
            with pytest.raises(LLMBadResponse):
                await llm.complete([SYSTEM, ASK])
            completion = await llm.complete([SYSTEM, ASK])
        assert all(_offered_tool(r.json) for r in fake.chat_requests())
    assert completion.handoff_reason is not None


async def test_tool_can_be_turned_off() -> None:
    with FakeLLM() as fake:
        async with LLMClient(fake.url, api_key="sk-test", offer_handoff_tool=False) as llm:
            await llm.complete([SYSTEM, ASK])
        body = fake.chat_requests()[-1].json
    assert "tools" not in body and body["messages"][0] == SYSTEM


def test_collector_joins_interleaved_fragments() -> None:
    c = tools.ToolCallCollector()
    c.feed([{"index": 1, "id": "b", "function": {"name": "hand_off_", "arguments": ""}}])
    c.feed([{"index": 0, "id": "a", "function": {"name": "lookup", "arguments": "{}"}}])
    c.feed([{"index": 1, "function": {"name": "to_human", "arguments": '{"rea'}}])
    c.feed([{"index": 1, "function": {"arguments": 'son": "  angry\\n customer "}'}}])
    c.feed(None)
    c.feed(["junk"])
    assert [call["function"]["name"] for call in c.calls] == ["lookup", "hand_off_to_human"]
    assert c.handoff_reason() == "angry customer"


def test_reason_is_bounded_and_marker_instructions_are_added_once() -> None:
    long = tools.handoff_reason(
        [{"function": {"name": "hand_off_to_human", "arguments": {"reason": "x" * 500}}}]
    )
    assert long is not None and len(long) == 200
    assert tools.handoff_reason("nonsense") is None
    once = tools.with_marker_instructions([{"role": "user", "content": "hi"}])
    assert once[0]["role"] == "system" and HANDOFF_MARKER in once[0]["content"]
    assert tools.with_marker_instructions(once) is once
    assert tools.mentions_tools('"auto" tool choice requires --enable-auto-tool-choice')
    assert tools.mentions_tools("tools param requires --jinja flag")
    assert not tools.mentions_tools("Invalid value for 'messages'.")


async def test_llm_handoff_reads_the_tool_first_then_the_marker() -> None:
    with FakeLLM(responder=_handoff) as fake:
        async with LLMClient(fake.url, api_key="sk-test", max_retries=0) as llm:
            completion = await llm.complete([SYSTEM, ASK])
    assert llm_handoff(completion.text, completion) == (
        "Let me get a colleague for you.", "llm:customer asks for a person about an invoice"
    )
    assert llm_handoff(f"Sorry. {HANDOFF_MARKER}", None) == ("Sorry.", "llm")
    assert llm_handoff("Here is the answer.", None) == ("Here is the answer.", None)


# --------------------------------------------------------------------------- through the engine

CUSTOM_PROMPT = "You are Acme's assistant. Answer briefly from the FAQ.\n"  # no handoff words


def _custom_prompts(tmp_path: Path) -> Path:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "system.md.j2").write_text(CUSTOM_PROMPT, encoding="utf-8")
    return prompts


@pytest.mark.parametrize("stream", [False, True])
async def test_engine_hands_off_on_the_tool_call(tmp_path: Path, stream: bool) -> None:
    with FakeLLM(responder=_handoff) as fake:
        async with OfflineBot(tmp_path, llm_base_url=fake.url, llm_api_key="k",
                              llm_stream=stream, prompts_dir=_custom_prompts(tmp_path)) as bot:
            sink = RecordingSink()
            # a question the offline rules do not catch: only the model sees it needs a person
            reply = await bot.ask("My invoice is wrong and the numbers make no sense", sink=sink)
            conv = await bot.engine.get_conversation(reply.conversation_id)
            trail = await bot.engine.store.transitions(reply.conversation_id)
        assert CUSTOM_PROMPT.strip() in fake.chat_requests()[-1].messages[0]["content"]
        assert _offered_tool(fake.chat_requests()[-1].json)
    assert reply.handed_off and conv.status is Status.WAITING
    assert trail[-1].reason == "llm:customer asks for a person about an invoice"
    assert "Let me get a colleague for you." in "".join(sink.sent)


async def test_engine_falls_back_to_the_marker_with_a_prompt_that_forgot_it(
    tmp_path: Path,
) -> None:
    def responder(messages: list[dict[str, Any]]) -> str:
        told = HANDOFF_MARKER in messages[0]["content"]
        return f"A colleague will take over. {HANDOFF_MARKER}" if told else "No idea."

    with FakeLLM(responder=responder) as fake:
        fake.reject_tools = True
        async with OfflineBot(tmp_path, llm_base_url=fake.url, llm_api_key="k",
                              prompts_dir=_custom_prompts(tmp_path)) as bot:
            sink = RecordingSink()
            reply = await bot.ask("My invoice is wrong and the numbers make no sense", sink=sink)
            conv = await bot.engine.get_conversation(reply.conversation_id)
            trail = await bot.engine.store.transitions(reply.conversation_id)
    assert reply.handed_off and conv.status is Status.WAITING
    assert trail[-1].reason == "llm"
    assert HANDOFF_MARKER not in "".join(sink.sent)
