"""Hostile input at every door (property-based, hypothesis): Slack event and interactive
payloads, Telegram updates, FAQ and prompt files. The server never answers 500, never crashes,
and never leaves a conversation half-written; huge messages are capped with a note; invalid
UTF-8, empty text, control characters and deeply nested JSON are handled."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_auth import Bot, running_bot

from supportbot.checks import run_checks
from supportbot.config import Settings
from supportbot.knowledge import check_knowledge

REPO = Path(__file__).resolve().parents[1]
OK = {200, 400, 401, 403, 404, 413, 415, 422}
FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

hostile_text = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "Mn", "So"]),
            max_size=200),
    st.sampled_from(["", " ", "\x00", "\u202e\u2066", "\ud800".encode("utf-8", "surrogatepass")
                     .decode("utf-8", "replace"), "a\x00b\x1b[31mred", "<@UBOT>", "/human"]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | hostile_text,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def slack_event(draw_event: dict, text: object) -> dict:
    event = {"type": "message", "channel": "D42", "channel_type": "im", "user": "UFUZZ",
             "ts": "1700000000.000100", "text": text}
    event.update(draw_event)
    return event


@pytest.fixture
async def bot(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_bot(tmp_path, max_message_chars=4000) as b:
        yield b


async def assert_whole(bot: Bot) -> None:
    """Healthy, and every stored customer message has its outcome (nothing half-written)."""
    await bot.settle()
    assert (await bot.http.get("/healthz")).status_code == 200
    for _ in range(100):
        if not await bot.engine.store.unanswered():
            break
        await asyncio.sleep(0.05)
    assert list(await bot.engine.store.unanswered()) == []
    for conv in await bot.engine.store.list_conversations(limit=1000):
        messages = await bot.engine.store.messages(conv.id)
        assert all(m.state not in ("received", "pending") for m in messages), conv.id


@FUZZ
@given(extra=st.dictionaries(
    st.sampled_from(["type", "subtype", "user", "channel", "channel_type", "ts", "thread_ts",
                     "team", "bot_id", "hidden", "blocks", "files", "message", "edited"]),
    json_values, max_size=5), text=json_values)
async def test_slack_events_never_500(bot: Bot, extra: dict, text: object) -> None:
    event = slack_event(extra, text)
    event["ts"] = bot.slack.new_ts() if not isinstance(extra.get("ts"), str) else event["ts"]
    r = await bot.slack_event(event)
    assert r.status_code in OK, r.text


@FUZZ
@given(body=st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=300)),
       content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded",
                                     "text/plain"]))
async def test_slack_signed_garbage_never_500(bot: Bot, body: bytes, content_type: str) -> None:
    r = await bot.slack_raw(body, content_type)
    assert r.status_code in OK, r.text


@FUZZ
@given(payload=st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.builds(lambda action, value, user: json.dumps({
        "type": "block_actions", "user": {"id": user}, "team": {"id": "T0001"},
        "channel": {"id": "CSTAFF"}, "container": {"message_ts": "1.0"},
        "message": {"ts": "1.0"}, "actions": [{"action_id": action, "value": value}]}),
        st.sampled_from(["supportbot_take_over", "supportbot_close", "supportbot_hand_back",
                         "supportbot_x"]),
        st.one_of(st.text(max_size=20), st.integers().map(str)),
        st.sampled_from(["USTAFF", "UOTHER", ""])),
))
async def test_slack_interactive_payloads_never_500(bot: Bot, payload: str) -> None:
    body = urlencode({"payload": payload}).encode()
    r = await bot.slack_raw(body, "application/x-www-form-urlencoded")
    assert r.status_code in OK, r.text


@FUZZ
@given(update=st.one_of(
    json_values,
    st.builds(lambda uid, text, chat: {
        "update_id": uid, "message": {
            "message_id": 1, "date": 1700000000, "text": text,
            "chat": {"id": chat, "type": "private"},
            "from": {"id": chat, "is_bot": False, "first_name": "F"}}},
        st.integers(min_value=-(2**63), max_value=2**63), json_values,
        st.integers(min_value=-(2**40), max_value=2**40)),
))
async def test_telegram_updates_never_500(bot: Bot, update: object) -> None:
    r = await bot.telegram(update)
    assert r.status_code in OK, r.text


async def test_fuzzing_leaves_every_conversation_whole(bot: Bot) -> None:
    """A burst of hostile-but-valid messages, then the store is checked turn by turn."""
    for i, text in enumerate(["\x00\x01\x02", "a" * 120_000, "\u202e" * 50 + "hi", "   ",
                              "🙂" * 5000, "\r\n" * 1000 + "x"]):
        r = await bot.slack_event(bot.slack.message_event(text, channel=f"D{i}"))
        assert r.status_code == 200
        update = bot.tg.private_message(text, user_id=700 + i)
        assert (await bot.telegram(update)).status_code == 200
    await assert_whole(bot)


async def test_oversized_message_is_capped_with_a_note(bot: Bot) -> None:
    huge = "refund " * 20_000  # 140 KB
    bot.llm.responder = lambda messages: "Refunds take 5 days."
    await bot.slack_event(bot.slack.message_event(huge, channel="DHUGE"))
    [reply] = await bot.slack.async_wait_for(lambda: bot.slack.messages(channel="DHUGE"),
                                             within=10)
    await bot.settle()
    sent = bot.llm.chat_requests()[-1].messages[-1]["content"]
    assert len(sent) <= 4000  # the model saw the capped text only
    conv = await bot.engine.find_conversation("slack", "T0001:DHUGE")
    assert conv is not None
    stored = [m for m in await bot.engine.store.messages(conv.id) if m.role == "user"]
    assert len(stored[0].text) <= 4000
    note = bot.engine.prompts.message("message_truncated", "en", limit=4000)
    assert note.split()[0] in reply.text and "4" in reply.text  # the customer is told
    await bot.telegram(bot.tg.private_message(huge, user_id=808))
    await bot.tg.wait_for(lambda: bot.tg.texts(808), within=10)


async def test_invalid_utf8_and_deep_json_are_refused_cleanly(bot: Bot) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    deep_obj = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
    for body in (b"\xff\xfe\xfa not utf-8", b'{"type": "event_callback", "event": "\xc3\x28"}',
                 deep, deep_obj):
        r = await bot.slack_raw(body)
        assert r.status_code in OK, (body[:20], r.status_code)
        r = await bot.telegram(None, raw=body)
        assert r.status_code in OK, (body[:20], r.status_code)
    form = b"payload=" + deep
    assert (await bot.slack_raw(form, "application/x-www-form-urlencoded")).status_code != 500
    await assert_whole(bot)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.text(max_size=400), st.binary(max_size=400).map(
    lambda b: b.decode("latin-1"))), name=st.sampled_from(["faq.md", "faq.yaml", "zh.yaml"]))
def test_faq_files_never_crash_the_checker(tmp_path: Path, content: str, name: str) -> None:
    folder = tmp_path / "kb"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / name).write_text(content, encoding="utf-8", errors="surrogateescape")
    problems = check_knowledge(folder)
    assert all(str(p) for p in problems)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(template=st.one_of(st.text(max_size=300), st.sampled_from([
    "{{", "{% for %}", "{{ undefined_var.attr }}", "{% include 'nope' %}", "{{ 1/0 }}",
    "{% raw %}", "{{ ''.__class__.__mro__ }}", "{% extends 'system.md.j2' %}"])),
    messages=st.one_of(st.text(max_size=200), st.just("llm_failed: [1, 2"), st.just("- a\n- b")))
def test_prompt_files_never_crash_check(tmp_path: Path, template: str, messages: str) -> None:
    prompts = tmp_path / "prompts"
    shutil.rmtree(prompts, ignore_errors=True)
    # the fuzzed files only: the handoff phrases come from the package (compiled once per
    # process), the system prompt and English messages from here
    shutil.copytree(REPO / "supportbot/defaults/prompts", prompts,
                    ignore=shutil.ignore_patterns("handoff_phrases.yaml"))
    (prompts / "system.md.j2").write_text(template, encoding="utf-8")
    (prompts / "messages" / "en.yaml").write_text(messages, encoding="utf-8")
    (tmp_path / "kb").mkdir(exist_ok=True)
    cfg = Settings(_env_file=None, data_dir=tmp_path, prompts_dir=prompts,
                   knowledge_dir=tmp_path / "kb")
    problems, summary = run_checks(cfg)
    assert all(str(p) for p in problems) and isinstance(summary, str)


# --- the four 500s of issue 23 (finding 8), each pinned ---------------------------------------


async def test_the_four_odd_inputs_that_once_gave_500(bot: Bot) -> None:
    # 1. a 400-digit timestamp, unauthenticated
    body = json.dumps(bot.slack.event_callback(bot.slack.message_event("hi"))).encode()
    r = await bot.http.post("/slack/events", content=body, headers={
        "Content-Type": "application/json", "X-Slack-Request-Timestamp": "9" * 400,
        "X-Slack-Signature": "v0=" + "0" * 64})
    assert r.status_code == 401, r.text
    # 2. a signed event callback whose "event" is a string
    envelope = bot.slack.event_callback({"type": "message"})
    envelope["event"] = "str"
    r = await bot.slack_raw(json.dumps(envelope).encode())
    assert r.status_code in OK, r.text
    # 3. a signed interactive payload whose "actions" is a string
    headers, form = bot.slack.signed_interaction({
        "type": "block_actions", "user": {"id": "USTAFF"}, "team": {"id": "T0001"},
        "channel": {"id": "CSTAFF"}, "message": {"ts": "1.0"}, "actions": "x"})
    r = await bot.http.post("/slack/events", headers=headers, content=form)
    assert r.status_code in OK, r.text
    # 4. a Telegram update dated 1e20, with the right secret
    update = bot.tg.private_message("hello from the far future", user_id=4040)
    update["message"]["date"] = 1e20
    r = await bot.telegram(None, raw=json.dumps(update).encode())
    assert r.status_code in OK, r.text
    await assert_whole(bot)


header_text = st.one_of(  # what an HTTP client can send: printable, no outer spaces
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
    .map(str.strip),
    st.sampled_from(["", "0", "-1", "9" * 400, "9" * 5000, "1e20", "NaN", "v0=", "v1=abc"]),
)


@FUZZ
@given(stamp=header_text, signature=header_text, secret=header_text,
       body=st.binary(max_size=200))
async def test_auth_headers_never_500(bot: Bot, stamp: str, signature: str, secret: str,
                                      body: bytes) -> None:
    """Whatever the authentication headers say, the doors answer 4xx, never 500."""
    r = await bot.http.post("/slack/events", content=body, headers={
        "Content-Type": "application/json", "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature})
    assert r.status_code in OK, r.text
    r = await bot.telegram(None, secret=secret, raw=body)
    assert r.status_code in OK, r.text
