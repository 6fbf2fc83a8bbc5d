"""Hostile but correctly signed payloads at both doors of a real ``supportbot serve``.

Whatever JSON Slack (signed with the app's secret) or Telegram (with the webhook secret) sends,
the answer is never a 5xx and no worker logs a traceback: wrong types, missing fields and
unknown shapes are ignored with one log line. The named cases come from issue 15; the rest is
generated (hypothesis), on both doors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supportbot.testing.fake_llm import FakeLLM
from supportbot.testing.fake_slack import FakeSlack
from supportbot.testing.fake_telegram import FakeTelegram
from supportbot.testing.serve import ServeProcess

SECRET = "fuzz-webhook-secret"
TG_HEADERS = {"X-Telegram-Bot-Api-Secret-Token": SECRET}

# any JSON value, nested a little
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip
ID_LIKE = st.one_of(JSON, st.text(alphabet="CDUT0123456789.", min_size=1, max_size=12))


@pytest.fixture
def doors(tmp_path: Path) -> Iterator[tuple[ServeProcess, FakeSlack, FakeTelegram]]:
    with FakeSlack() as slack, FakeTelegram() as tg, FakeLLM() as llm:
        tg.add_chat(-100777, "supergroup", "Support staff", forum=True)
        env = {
            "SUPPORTBOT_SLACK_BOT_TOKEN": slack.bot_token,
            "SUPPORTBOT_SLACK_SIGNING_SECRET": slack.signing_secret,
            "SUPPORTBOT_SLACK_API_URL": slack.api_url,
            "SUPPORTBOT_SLACK_STAFF_CHANNEL": "CSTAFF",
            "SUPPORTBOT_SLACK_STAFF_USER_IDS": '["USTAFF"]',
            "SUPPORTBOT_SLACK_SUPPORT_CHANNELS": '["#help", "CHELP"]',
            "SUPPORTBOT_TELEGRAM_BOT_TOKEN": tg.token,
            "SUPPORTBOT_TELEGRAM_API_URL": tg.url,
            "SUPPORTBOT_TELEGRAM_WEBHOOK_URL": "https://bot.example.com/telegram/webhook",
            "SUPPORTBOT_TELEGRAM_WEBHOOK_SECRET": SECRET,
            "SUPPORTBOT_TELEGRAM_STAFF_CHAT_ID": "-100777",
            "SUPPORTBOT_LLM_BASE_URL": llm.url,
            "SUPPORTBOT_LLM_API_KEY": "sk-fuzz",
            "SUPPORTBOT_LLM_STREAM": "false",
        }
        with ServeProcess(tmp_path, env) as serve:
            serve.start()
            yield serve, slack, tg


def post_slack(http: httpx.Client, slack: FakeSlack, body: bytes, *, form: bool = False,
               timestamp: int | None = None) -> int:
    headers = {
        "Content-Type": "application/x-www-form-urlencoded" if form else "application/json",
        **slack.sign(body, timestamp=timestamp),
    }
    return http.post("/slack/events", headers=headers, content=body).status_code


def post_telegram(http: httpx.Client, body: bytes) -> int:
    headers = {**TG_HEADERS, "Content-Type": "application/json"}
    return http.post("/telegram/webhook", headers=headers, content=body).status_code


def interaction(payload: Any) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def test_the_named_hostile_payloads_are_refused_or_ignored(doors) -> None:
    serve, slack, tg = doors
    good = slack.message_event("hello", channel="D1")
    text_object = {**good, "text": {"not": "a string"}}
    actions_x = {**slack.block_action("supportbot_take_over", "1", user="USTAFF",
                                      channel="CSTAFF", message_ts="1.000001"), "actions": "x"}
    huge_date = tg.private_message("hello", user_id=4242)
    huge_date["message"]["date"] = 1e20
    with httpx.Client(base_url=serve.url, timeout=10) as http:
        oops = json.dumps({**slack.event_callback(good), "event": "oops"}).encode()
        assert post_slack(http, slack, oops) in (200, 400)
        assert post_slack(http, slack, json.dumps(slack.event_callback(text_object)).encode()) \
            == 200
        assert post_slack(http, slack, interaction(actions_x), form=True) in (200, 400)
        body = json.dumps(slack.event_callback(good)).encode()
        assert post_slack(http, slack, body, timestamp=int("9" * 400)) == 401  # unauthenticated
        assert post_telegram(http, json.dumps(huge_date).encode()) == 200
        assert post_telegram(http, b"[1, 2]") == 400
        assert post_telegram(http, b"not json") == 400
        # the doors still work: a proper message is answered
        assert post_slack(http, slack, body) == 200
    slack.wait_for(lambda: slack.messages(channel="D1"), timeout=15)
    assert serve.tracebacks() == []
    assert tg.texts(4242) == []  # the unreadable update was not answered either


def test_fuzzed_signed_payloads_never_get_a_5xx_or_a_traceback(doors) -> None:
    serve, slack, _ = doors
    http = httpx.Client(base_url=serve.url, timeout=10)
    statuses: list[int] = []

    message_event = st.fixed_dictionaries(
        {"type": st.sampled_from(["message", "app_mention"])},
        optional={k: ID_LIKE for k in ("user", "channel", "text", "ts", "thread_ts", "team",
                                       "channel_type", "subtype", "bot_id", "hidden")},
    )
    slack_json = st.one_of(
        JSON,
        st.builds(lambda e, extra: {**slack.event_callback({}), **extra, "event": e},
                  st.one_of(JSON, message_event), st.dictionaries(
                      st.sampled_from(["team_id", "event_id", "type", "authorizations",
                                       "api_app_id"]), JSON, max_size=2)),
        st.builds(lambda c: {"type": "url_verification", "challenge": c}, JSON),
    )
    action = st.fixed_dictionaries({}, optional={
        "action_id": st.one_of(JSON, st.sampled_from(
            ["supportbot_take_over", "supportbot_close", "supportbot_feedback_yes"])),
        "value": st.one_of(JSON, st.integers(0, 10**30).map(str)),
    })
    slack_interaction = st.builds(
        lambda actions, user, extra: {
            **slack.block_action("supportbot_take_over", "1", user="USTAFF", channel="CSTAFF",
                                 message_ts="1.000001"),
            "actions": actions, "user": user, **extra,
        },
        st.one_of(JSON, st.lists(st.one_of(action, JSON), max_size=2)),
        st.one_of(JSON, st.fixed_dictionaries({"id": ID_LIKE})),
        st.dictionaries(st.sampled_from(["channel", "container", "message", "type", "team"]),
                        JSON, max_size=2),
    )

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(slack_json.map(lambda b: (json.dumps(b).encode(), False)),
                     st.one_of(slack_interaction, JSON).map(lambda p: (interaction(p), True))))
    def slack_case(case: tuple[bytes, bool]) -> None:
        body, form = case
        statuses.append(post_slack(http, slack, body, form=form))

    user = st.fixed_dictionaries({"id": st.one_of(st.integers(1, 10**6), JSON),
                                  "is_bot": st.one_of(st.booleans(), JSON),
                                  "first_name": st.one_of(st.text(max_size=10), JSON)})
    chat = st.fixed_dictionaries({"id": st.one_of(st.integers(-10**13, 10**6), JSON),
                                  "type": st.one_of(st.sampled_from(
                                      ["private", "group", "supergroup", "channel"]), JSON)})
    message = st.fixed_dictionaries(
        {"message_id": st.one_of(st.integers(1, 10**6), JSON),
         "date": st.one_of(st.integers(0, 2**40), st.floats(allow_nan=False), JSON),
         "chat": st.one_of(chat, JSON)},
        optional={"from": st.one_of(user, JSON), "text": JSON, "entities": JSON,
                  "message_thread_id": JSON, "is_topic_message": JSON, "photo": JSON,
                  "reply_to_message": JSON},
    )
    ids = iter(range(10_000, 10**9))
    telegram_json = st.one_of(
        JSON,
        st.builds(lambda m, kind: {"update_id": next(ids), kind: m}, st.one_of(message, JSON),
                  st.sampled_from(["message", "edited_message", "channel_post"])),
        st.builds(lambda q: {"update_id": next(ids), "callback_query": q}, st.one_of(
            st.fixed_dictionaries({"id": ID_LIKE, "from": st.one_of(user, JSON),
                                   "chat_instance": ID_LIKE},
                                  optional={"data": JSON, "message": JSON}), JSON)),
    )

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(telegram_json)
    def telegram_case(update: Any) -> None:
        statuses.append(post_telegram(http, json.dumps(update).encode()))

    try:
        slack_case()
        telegram_case()
    finally:
        http.close()
    print({code: statuses.count(code) for code in sorted(set(statuses))})  # with -s
    assert statuses and max(statuses) < 500, sorted(set(statuses))
    health = serve.health()  # still serving, and whatever was accepted got processed
    assert health["status"] == "ok"
    assert serve.tracebacks() == []
