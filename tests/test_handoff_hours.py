"""Business hours: parsing, open/closed, next opening across nights, weekends and DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from supportbot.cli.handoff import handoff
from supportbot.handoff import BusinessHours

BERLIN = ZoneInfo("Europe/Berlin")
NY = ZoneInfo("America/New_York")


def at(y: int, mo: int, d: int, h: int, mi: int = 0, tz: ZoneInfo = BERLIN) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=tz)


# 2024-06-03 is a Monday.
def test_weekdays() -> None:
    hours = BusinessHours.parse("Mon-Fri 09:00-18:00", "Europe/Berlin")
    assert hours.is_open(at(2024, 6, 3, 9))
    assert hours.is_open(at(2024, 6, 3, 17, 59))
    assert not hours.is_open(at(2024, 6, 3, 18))  # end is exclusive
    assert not hours.is_open(at(2024, 6, 3, 8, 59))
    assert not hours.is_open(at(2024, 6, 8, 12))  # Saturday
    # The same instant given in UTC: 07:30 UTC is 09:30 in Berlin (CEST).
    assert hours.is_open(datetime(2024, 6, 3, 7, 30, tzinfo=UTC))
    assert not hours.is_open(datetime(2024, 6, 3, 6, 30, tzinfo=UTC))


def test_next_open() -> None:
    hours = BusinessHours.parse("Mon-Fri 09:00-18:00; Sat 10:00-14:00", "Europe/Berlin")
    now = at(2024, 6, 3, 12)
    assert hours.next_open(now) == now  # open: now
    assert hours.next_open(at(2024, 6, 3, 19)) == at(2024, 6, 4, 9)
    assert hours.next_open(at(2024, 6, 7, 18)) == at(2024, 6, 8, 10)  # Fri evening → Sat
    assert hours.next_open(at(2024, 6, 8, 14)) == at(2024, 6, 10, 9)  # Sat → Mon (weekend wrap)
    nxt = hours.next_open(datetime(2024, 6, 3, 5, 0, tzinfo=UTC))
    assert nxt == at(2024, 6, 3, 9) and nxt.tzinfo == BERLIN


def test_overnight_and_week_wrap() -> None:
    hours = BusinessHours.parse("Fri-Mon 22:00-06:00", "UTC")
    utc = ZoneInfo("UTC")
    assert hours.is_open(at(2024, 6, 7, 23, tz=utc))  # Fri night
    assert hours.is_open(at(2024, 6, 8, 5, 59, tz=utc))  # Sat early morning
    assert hours.is_open(at(2024, 6, 4, 3, tz=utc))  # Tue 03:00 is Monday's night
    assert not hours.is_open(at(2024, 6, 4, 23, tz=utc))  # Tue night: not listed
    assert not hours.is_open(at(2024, 6, 5, 3, tz=utc))
    assert hours.next_open(at(2024, 6, 4, 12, tz=utc)) == at(2024, 6, 7, 22, tz=utc)
    # Sunday night runs into Monday morning across the week boundary.
    sun_night = BusinessHours.parse("Sun 20:00-08:00", "UTC")
    assert sun_night.is_open(at(2024, 6, 10, 7, tz=utc))  # Monday 07:00
    assert not sun_night.is_open(at(2024, 6, 10, 8, tz=utc))


def test_dst_uses_wall_clock() -> None:
    hours = BusinessHours.parse("Mon-Fri 09:00-17:00", "America/New_York")
    # Winter (EST, UTC-5) and summer (EDT, UTC-4): 09:00 local is 14:00 vs 13:00 UTC.
    assert hours.is_open(datetime(2024, 1, 8, 14, 0, tzinfo=UTC))
    assert not hours.is_open(datetime(2024, 1, 8, 13, 30, tzinfo=UTC))
    assert hours.is_open(datetime(2024, 7, 8, 13, 0, tzinfo=UTC))
    # Closed Friday evening before the March 2024 change; next open is Monday 09:00 EDT.
    nxt = hours.next_open(datetime(2024, 3, 8, 23, 0, tzinfo=UTC))
    assert nxt == at(2024, 3, 11, 9, tz=NY)
    assert nxt.utcoffset() == timedelta(hours=-4)


def test_opening_inside_dst_gap() -> None:
    # 02:30 does not exist on 2024-03-10 in New York; opening moves to a real instant.
    hours = BusinessHours.parse("Sun 02:30-05:00", "America/New_York")
    nxt = hours.next_open(datetime(2024, 3, 10, 5, 0, tzinfo=UTC))  # 00:00 EST
    assert nxt is not None
    assert nxt.astimezone(UTC) == datetime(2024, 3, 10, 7, 30, tzinfo=UTC)  # 03:30 EDT
    assert hours.is_open(nxt)


def test_several_ranges_and_day_lists() -> None:
    hours = BusinessHours.parse("mon,wed , friday 09:00-12:00, 13:00-17:30", "UTC")
    utc = ZoneInfo("UTC")
    assert hours.is_open(at(2024, 6, 5, 10, tz=utc))  # Wednesday
    assert not hours.is_open(at(2024, 6, 5, 12, 30, tz=utc))  # lunch
    assert hours.next_open(at(2024, 6, 5, 12, 30, tz=utc)) == at(2024, 6, 5, 13, tz=utc)
    assert not hours.is_open(at(2024, 6, 4, 10, tz=utc))  # Tuesday
    assert BusinessHours.parse("daily 00:00-24:00", "UTC").is_open(at(2024, 6, 9, 23, 59, tz=utc))
    assert BusinessHours.parse("weekends 10-16", "UTC").is_open(at(2024, 6, 9, 15, tz=utc))


def test_empty_means_always_open_and_closed_means_never() -> None:
    always = BusinessHours.parse("", "UTC")
    now = datetime(2024, 6, 9, 3, 0, tzinfo=UTC)
    assert always.always_open and always.is_open(now) and always.next_open(now) == now
    never = BusinessHours.parse("closed", "UTC")
    assert not never.is_open(now) and never.next_open(now) is None


def test_naive_datetime_is_local_time() -> None:
    hours = BusinessHours.parse("Mon-Fri 09:00-18:00", "Asia/Shanghai")
    assert hours.is_open(datetime(2024, 6, 3, 9, 30))
    assert not hours.is_open(datetime(2024, 6, 3, 8, 30))


@pytest.mark.parametrize(
    ("spec", "tz", "message"),
    [
        ("Mon-Fri", "UTC", "expected days then times"),
        ("09:00-18:00", "UTC", "expected days then times"),
        ("Mon-Fry 09:00-18:00", "UTC", "bad day 'mon-fry'"),
        ("Mon-Fri 9:75-18:00", "UTC", "bad time '9:75'"),
        ("Mon-Fri 09:00-25:00", "UTC", "bad time '25:00'"),
        ("Mon-Fri 09:00", "UTC", "bad time range"),
        ("Mon-Fri 09:00-09:00", "UTC", "empty time range"),
        ("Mon-Fri 24:00-09:00", "UTC", "bad time '24:00'"),
        ("Mon-Fri 09:00-18:00", "Mars/Olympus", "unknown timezone 'Mars/Olympus'"),
    ],
)
def test_bad_specs(spec: str, tz: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        BusinessHours.parse(spec, tz)
    assert message in str(info.value)


@settings(max_examples=200, deadline=None)
@given(
    minutes=st.integers(min_value=0, max_value=60 * 24 * 400),
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Sydney"]),
)
def test_next_open_is_open_and_nothing_earlier_is(minutes: int, zone: str) -> None:
    hours = BusinessHours.parse("Mon-Fri 09:00-17:00; Sat 22:00-02:00", zone)
    now = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    nxt = hours.next_open(now)
    assert nxt is not None and nxt >= now
    assert hours.is_open(nxt)
    if nxt > now:
        # One minute earlier it was still closed (the start really is the opening moment).
        assert not hours.is_open(nxt - timedelta(minutes=1))
        assert nxt - now <= timedelta(days=7)


def test_cli_hours() -> None:
    runner = CliRunner()
    args = ["hours", "--spec", "Mon-Fri 09:00-18:00", "--tz", "Europe/Berlin"]
    opened = runner.invoke(handoff, [*args, "--at", "2024-06-03T10:00:00+02:00"])
    assert opened.exit_code == 0 and opened.output.startswith("open")
    closed = runner.invoke(handoff, [*args, "--at", "2024-06-08T10:00:00+02:00"])
    assert closed.exit_code == 0
    assert "opens 2024-06-10T09:00+02:00" in closed.output
    bad = runner.invoke(handoff, ["hours", "--spec", "whenever", "--tz", "UTC"])
    assert bad.exit_code == 2 and "expected days then times" in bad.output
