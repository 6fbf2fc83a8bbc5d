"""Slack assistant threads end to end: signed events into ``supportbot serve``'s app (uvicorn on
loopback), the real Bolt ``AsyncAssistant`` middleware and engine, FakeSlack + FakeLLM outside.

Thread start -> greeting and the staff-edited suggested prompts in the customer's language; a
question -> status, title, one answer; a handoff from the thread; and a workspace without the
AI-app features, where DMs work exactly as before.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from test_slack_adapter import CUSTOMER, STAFF, STAFF_CHANNEL, Env, running

from supportbot.checks import run_checks
from supportbot.config import Settings
from supportbot.engine import Status
from supportbot.prompts import PromptLibrary
from supportbot.prompts.suggested import (
    FILENAME,
    SuggestedPrompts,
    check_suggested_prompts,
)

ROOT = Path(__file__).resolve().parents[1]
DM = "D0001"
SET_STATUS, SET_TITLE = "assistant.threads.setStatus", "assistant.threads.setTitle"
SET_PROMPTS = "assistant.threads.setSuggestedPrompts"
ANSWERS = {"chat.postMessage", "chat.startStream"}  # an answer is posted or streamed
WORDS = PromptLibrary()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with running(tmp_path) as e:
        yield e


async def start_thread(env: Env, user: str = CUSTOMER) -> str:
    """The customer opens a new assistant thread; returns its ts once the bot set it up."""
    event = env.slack.assistant_thread_started_event(user=user, channel=DM)
    r = await env.post_event(event)
    assert r.status_code == 200
    ts = event["assistant_thread"]["thread_ts"]
    await env.wait(lambda: env.slack.calls(SET_PROMPTS))
    await env.settle()
    return ts


def prompts_offered(env: Env) -> list[dict[str, str]]:
    [call] = env.slack.calls(SET_PROMPTS)
    assert call.error is None
    return call.params["prompts"]


def in_thread(env: Env, ts: str) -> list[str]:
    return [m.text for m in env.slack.messages(channel=DM, thread_ts=ts)]


def expected(language: str) -> list[dict[str, str]]:
    return [p.as_slack() for p in SuggestedPrompts(None).for_language(language)]


async def ask(env: Env, ts: str, text: str, done: Callable[[], object]) -> None:
    r = await env.post_event(env.slack.assistant_message_event(text, thread_ts=ts, channel=DM))
    assert r.status_code == 200
    await env.wait(done)
    await env.settle()


# -- thread start --------------------------------------------------------------------------


async def test_thread_start_greets_and_offers_the_english_prompts(env: Env) -> None:
    ts = await start_thread(env)
    assert prompts_offered(env) == expected("en")
    call = env.slack.calls(SET_PROMPTS)[0]
    assert (call.params["channel_id"], call.params["thread_ts"]) == (DM, ts)
    [greeting] = in_thread(env, ts)
    assert greeting == WORDS.message("greeting", "en", customer_name="User UCUSTOMER",
                                     bot_name="Ada", company_name="Acme Cloud")
    assert env.llm.chat_requests() == []  # opening a thread is not a question


async def test_a_chinese_speaker_gets_the_chinese_prompts_and_greeting(env: Env) -> None:
    env.slack.users["UZH"] = {"id": "UZH", "name": "li", "real_name": "李雷", "locale": "zh-CN"}
    ts = await start_thread(env, user="UZH")
    assert prompts_offered(env) == expected("zh") != expected("en")
    [greeting] = in_thread(env, ts)
    assert greeting.startswith("你好") or "李雷" in greeting
    assert greeting == WORDS.message("greeting", "zh", customer_name="李雷", bot_name="Ada",
                                     company_name="Acme Cloud")


async def test_staff_override_of_the_prompts_is_offered(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / FILENAME).write_text("en:\n  - title: Opening hours\n"
                                    "    message: When are you open?\n")
    async with running(tmp_path, prompts_dir=prompts) as env:
        await start_thread(env)
        assert prompts_offered(env) == [{"title": "Opening hours",
                                         "message": "When are you open?"}]


# -- a question in the thread ----------------------------------------------------------------


async def test_a_question_gets_status_title_and_one_answer(env: Env) -> None:
    ts = await start_thread(env)
    question = "How long does a refund take when I paid by card last month? " * 2
    await ask(env, ts, question, lambda: any(
        question.split("?")[0] in t and "…" not in t[-2:] for t in in_thread(env, ts)))
    _greeting, answer = in_thread(env, ts)
    assert question.split("?")[0] in answer

    [status] = env.slack.calls(SET_STATUS)
    assert status.params == {
        "channel_id": DM, "thread_ts": ts,
        "status": WORDS.message("assistant_status", "en"),
        "loading_messages": [WORDS.message("assistant_loading", "en")],
    }
    calls = env.slack.calls()
    greeted = next(i for i, c in enumerate(calls) if c.method == "chat.postMessage")
    answered = next(i for i, c in enumerate(calls) if i > greeted and c.method in ANSWERS)
    assert calls.index(status) < answered  # the status shows before the answer, never after
    assert env.slack.assistant_status(DM, ts) is None  # the answer cleared it

    [title] = env.slack.calls(SET_TITLE)
    assert title.params["thread_ts"] == ts
    assert title.params["title"].startswith("How long does a refund take")
    assert len(title.params["title"]) <= 60 and title.params["title"].endswith("…")

    conv = await env.engine.find_conversation("slack", f"T0001:{DM}:{ts}")
    assert conv is not None and [t.role for t in conv.recent] == ["user", "assistant"]

    await ask(env, ts, "and for PayPal?",
              lambda: any("and for PayPal?" in t for t in in_thread(env, ts)))
    assert len(env.slack.calls(SET_TITLE)) == 1  # the first question names the thread
    assert len(env.slack.calls(SET_STATUS)) == 2


async def test_a_chinese_question_shows_a_chinese_status(env: Env) -> None:
    ts = await start_thread(env)
    await ask(env, ts, "退款需要多长时间？", lambda: len(in_thread(env, ts)) == 2)
    [status] = env.slack.calls(SET_STATUS)
    assert status.params["status"] == WORDS.message("assistant_status", "zh")
    assert status.params["status"] != WORDS.message("assistant_status", "en")


async def test_handoff_in_an_assistant_thread(env: Env) -> None:
    ts = await start_thread(env)
    await ask(env, ts, "I want to talk to a human",
              lambda: env.slack.messages(channel=STAFF_CHANNEL))
    [note] = env.slack.messages(channel=STAFF_CHANNEL)
    assert f"<@{CUSTOMER}>" in note.text
    assert env.llm.chat_requests() == []  # the bot does not answer the question itself
    conv = await env.engine.find_conversation("slack", f"T0001:{DM}:{ts}")
    assert conv is not None and conv.status == Status.WAITING
    assert env.slack.assistant_status(DM, ts) is None

    # while waiting the customer's words go to staff: no "looking for an answer" status, as
    # the bot will not answer
    statuses = len(env.slack.calls(SET_STATUS))
    await ask(env, ts, "hello? anyone?", lambda: any(
        "hello? anyone?" in m.text for m in env.slack.messages(channel=STAFF_CHANNEL,
                                                               thread_ts=note.ts)))
    before = in_thread(env, ts)
    assert len(env.slack.calls(SET_STATUS)) == statuses
    assert env.slack.assistant_status(DM, ts) is None
    assert env.llm.chat_requests() == []

    # a staff reply in the notification's thread reaches the assistant thread
    staff = env.slack.message_event("Hi, I'm Sam from support.", channel=STAFF_CHANNEL,
                                    channel_type="channel", user=STAFF, thread_ts=note.ts)
    assert (await env.post_event(staff)).status_code == 200
    await env.wait(lambda: "Hi, I'm Sam from support." in in_thread(env, ts))
    await env.settle()
    assert in_thread(env, ts) == [*before, "Hi, I'm Sam from support."]
    conv = await env.engine.find_conversation("slack", f"T0001:{DM}:{ts}")
    assert conv is not None and conv.status == Status.HUMAN


async def test_context_changes_never_read_slack_history(env: Env) -> None:
    ts = await start_thread(env)
    event = env.slack.assistant_thread_started_event(channel=DM, thread_ts=ts,
                                                     context_channel="C0042")
    event["type"] = "assistant_thread_context_changed"
    assert (await env.post_event(event)).status_code == 200
    await env.settle()
    assert env.adapter.listeners.assistant.contexts[(DM, ts)]["channel_id"] == "C0042"
    assert not [c for c in env.slack.calls() if c.method.startswith("conversations.")]


async def test_a_reply_that_cannot_be_posted_clears_the_status(env: Env) -> None:
    ts = await start_thread(env)
    for method in ("chat.postMessage", "chat.startStream"):  # the channel refuses the bot
        env.slack.fail(method, "not_in_channel", times=50)
    r = await env.post_event(env.slack.assistant_message_event("hi?", thread_ts=ts, channel=DM))
    assert r.status_code == 200
    await env.wait(lambda: [c.params.get("status") for c in env.slack.calls(SET_STATUS)]
                   == [WORDS.message("assistant_status", "en"), ""])
    assert env.slack.assistant_status(DM, ts) is None
    assert in_thread(env, ts) == [WORDS.message("greeting", "en", customer_name="User UCUSTOMER",
                                                bot_name="Ada", company_name="Acme Cloud")]


# -- a workspace without the AI-app features ---------------------------------------------------


@pytest.mark.parametrize("error", ["not_allowed_token_type", "unknown_method"])
async def test_without_ai_features_dms_work_as_before(env: Env, error: str, caplog) -> None:
    env.slack.without_ai_features(error)
    caplog.set_level(logging.WARNING)
    r = await env.post_event(env.slack.message_event("how do refunds work?", channel=DM))
    assert r.status_code == 200
    await env.wait(lambda: any("how do refunds work?" in m.text
                               for m in env.slack.messages(channel=DM)))
    await env.settle()
    [answer] = env.slack.messages(channel=DM)
    assert answer.thread_ts is None  # a DM outside threads stays flat, as before
    assert not [c for c in env.slack.calls() if c.method.startswith("assistant.")]

    # a reply in a DM thread looks like an assistant thread message to Bolt: answered as
    # before; Slack refuses the status once, it is logged once and never tried again
    root = answer.ts
    for question in ("and for PayPal?", "and for cards?"):
        await ask(env, root, question, lambda q=question: any(
            q in t for t in in_thread(env, root)))
    assert len(in_thread(env, root)) == 2
    refused = [c for c in env.slack.calls() if c.method.startswith("assistant.")]
    assert [c.error for c in refused] == [error]
    assert sum("no assistant threads" in r.getMessage() for r in caplog.records) == 1


async def test_a_failing_status_call_never_delays_or_breaks_the_answer(env: Env) -> None:
    ts = await start_thread(env)
    env.slack.fail(SET_STATUS, "internal_error", times=5, status=500)
    env.slack.fail(SET_TITLE, "invalid_arguments")
    await ask(env, ts, "what are your prices?",
              lambda: any("what are your prices?" in t for t in in_thread(env, ts)))
    assert len(in_thread(env, ts)) == 2


# -- supportbot check ------------------------------------------------------------------------


def test_the_shipped_prompts_are_valid_in_every_language() -> None:
    assert check_suggested_prompts(None) == []
    lists = SuggestedPrompts(None)
    for lang in ("en", "zh", "es", "fr", "de", "ja", "pt", "ru"):
        offered = lists.for_language(lang)
        assert 1 <= len(offered) <= 4
        assert lang == "en" or offered != lists.for_language("en")


def test_check_reports_broken_prompts_with_file_and_line(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    path = prompts / FILENAME
    path.write_text(
        "en:\n"
        "  - title: Refunds\n"
        "    message: How long do refunds take?\n"
        "  - title: No message here\n"          # line 4
        "zh:\n"
        "  - title: 退款\n"
        "    mesage: 退款需要多长时间？\n"         # line 7: a typo
        "english: []\n"                           # line 8: not a language code
    )
    found = {(p.line, p.message.split(":")[0]) for p in check_suggested_prompts(prompts)}
    assert {(4, "en"), (7, "zh")} <= found
    assert any(line == 8 and "not a language code" in why for line, why in found)
    settings = Settings(_env_file=None, data_dir=tmp_path / "data",  # type: ignore[call-arg]
                        prompts_dir=prompts)
    problems, _ = run_checks(settings)
    assert any(str(p).startswith(f"{path}:7: ") for p in problems)

    path.write_text("en: [\n")
    [problem] = check_suggested_prompts(prompts)
    assert problem.path == path and problem.line >= 1 and "invalid YAML" in problem.message
