"""Which Slack events are customer text, and how they map to conversations."""

from __future__ import annotations

from supportbot.adapters.slack.events import parse_text_event, strip_mention


def ev(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "type": "message",
        "channel": "C1",
        "channel_type": "channel",
        "user": "U1",
        "text": "hi",
        "ts": "100.000001",
        "team": "T1",
    }
    base.update(kw)
    return base


def parse(event: dict[str, object]):
    return parse_text_event(event, "T1", "UBOT", "BBOT")


def test_channel_message_keys() -> None:
    t = parse(ev())
    assert t is not None
    assert t.thread_key == "T1:C1:100.000001"
    assert t.reply_thread_ts == "100.000001"
    assert t.message_id == "C1:100.000001"


def test_thread_reply_keys() -> None:
    t = parse(ev(ts="101.000000", thread_ts="100.000001"))
    assert t is not None
    assert t.thread_key == "T1:C1:100.000001"
    assert t.reply_thread_ts == "100.000001"
    assert t.message_id == "C1:101.000000"


def test_thread_parent_is_top_level() -> None:
    t = parse(ev(thread_ts="100.000001"))
    assert t is not None and t.thread_ts is None


def test_dm_without_thread_is_one_conversation() -> None:
    a = parse(ev(channel="D1", channel_type="im", ts="1.0"))
    b = parse(ev(channel="D1", channel_type="im", ts="2.0"))
    assert a is not None and b is not None
    assert a.thread_key == b.thread_key == "T1:D1"
    assert a.reply_thread_ts is None
    threaded = parse(ev(channel="D1", channel_type="im", ts="3.0", thread_ts="2.0"))
    assert threaded is not None and threaded.thread_key == "T1:D1:2.0"


def test_same_message_id_for_mention_and_message() -> None:
    m = parse(ev(text="<@UBOT> hi"))
    a = parse(ev(type="app_mention", text="<@UBOT> hi", channel_type=None))
    assert m is not None and a is not None and m.message_id == a.message_id


def test_ignored_events() -> None:
    assert parse(ev(user="UBOT")) is None  # our own
    assert parse(ev(bot_id="B2")) is None  # other bots
    assert parse(ev(subtype="bot_message", user=None, bot_id="B2")) is None
    assert parse(ev(subtype="message_changed")) is None  # edits
    assert parse(ev(subtype="message_deleted")) is None  # deletions
    assert parse(ev(subtype="channel_join")) is None
    assert parse(ev(type="reaction_added")) is None
    assert parse(ev(user=None)) is None
    assert parse(ev(subtype="file_share")) is not None
    assert parse(ev(subtype="thread_broadcast", thread_ts="99.0")) is not None


def test_mentions_and_strip() -> None:
    t = parse(ev(text="<@UBOT> how do I reset?"))
    assert t is not None and t.mentions("UBOT") and not t.mentions("UOTHER")
    assert strip_mention("<@UBOT>: how do I <@UOTHER> reset?", "UBOT") == (
        "how do I <@UOTHER> reset?"
    )
