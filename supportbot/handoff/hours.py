"""Business hours: when staff are around to take a handed-off thread.

Spec (``Settings.business_hours``), in the business's local time (``Settings.timezone``)::

    Mon-Fri 09:00-18:00
    Mon-Fri 09:00-12:30, 13:30-18:00; Sat 10:00-14:00
    Fri-Mon 22:00-06:00          # overnight: opens Fri 22:00, closes Sat 06:00, ...
    daily 00:00-24:00            # "" also means always open; "closed" means never

Days: Mon..Sun (or full names), ranges may wrap the weekend (Fri-Mon), lists with commas
(``Mon,Wed,Fri``), ``daily``/``weekdays``/``weekends``. Times are wall-clock times, so DST
moves nothing: 09:00 is 09:00 local all year.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["BusinessHours"]

_DAYS = {
    "mon": 0, "monday": 0, "tue": 1, "tues": 1, "tuesday": 1, "wed": 2, "wednesday": 2,
    "thu": 3, "thur": 3, "thurs": 3, "thursday": 3, "fri": 4, "friday": 4,
    "sat": 5, "saturday": 5, "sun": 6, "sunday": 6,
}  # fmt: skip
_DAY_SETS = {
    "daily": range(7), "everyday": range(7), "weekdays": range(5), "weekends": range(5, 7),
}  # fmt: skip
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_WEEK = 7 * 1440
_TIME = re.compile(r"(\d{1,2})(?::(\d{2}))?")
_CLAUSE = re.compile(r"^\s*(?P<days>[A-Za-z][A-Za-z,\s-]*?)\s+(?P<times>\d.*)$")


def _tz(name: str | ZoneInfo | None) -> ZoneInfo:
    if isinstance(name, ZoneInfo):
        return name
    try:
        return ZoneInfo((name or "UTC").strip())
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {name!r} (use a name like 'Europe/Berlin')") from exc


def _minutes(text: str, clause: str, *, end: bool) -> int:
    m = _TIME.fullmatch(text.strip())
    if not m:
        raise ValueError(f"bad time {text.strip()!r} in {clause!r} (use HH:MM, e.g. 09:00)")
    hours, minutes = int(m.group(1)), int(m.group(2) or 0)
    value = hours * 60 + minutes
    if minutes > 59 or value > 1440 or (value == 1440 and not end):
        raise ValueError(f"bad time {text.strip()!r} in {clause!r} (00:00 to 24:00)")
    return value


def _days(text: str, clause: str) -> list[int]:
    days: list[int] = []
    for part in re.split(r"\s*,\s*", text.strip().lower()):
        if part in _DAY_SETS:
            days.extend(_DAY_SETS[part])
            continue
        ends = [p.strip() for p in part.split("-")]
        if len(ends) not in (1, 2) or any(e not in _DAYS for e in ends):
            raise ValueError(
                f"bad day {part!r} in {clause!r} (use Mon..Sun, ranges like Mon-Fri, or daily)"
            )
        first, last = _DAYS[ends[0]], _DAYS[ends[-1]]
        days.extend((first + i) % 7 for i in range((last - first) % 7 + 1))
    return days


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """Opening intervals in minutes since Monday 00:00 local time (end may pass the week)."""

    spec: str
    tz: ZoneInfo
    intervals: tuple[tuple[int, int], ...] | None  # None = always open

    @classmethod
    def parse(cls, spec: str | None, tz: str | ZoneInfo | None = "UTC") -> BusinessHours:
        """Parse a spec; :class:`ValueError` says what is wrong and how to write it."""
        zone = _tz(tz)
        spec = (spec or "").strip()
        if not spec or spec.lower() in ("always", "24/7"):
            return cls(spec, zone, None)
        if spec.lower() in ("closed", "never"):
            return cls(spec, zone, ())
        intervals: list[tuple[int, int]] = []
        for clause in filter(None, (c.strip() for c in spec.split(";"))):
            m = _CLAUSE.match(clause)
            if not m:
                raise ValueError(
                    f"bad business hours {clause!r}: expected days then times, "
                    "e.g. 'Mon-Fri 09:00-18:00'"
                )
            days = _days(m.group("days"), clause)
            for rng in m.group("times").split(","):
                bounds = rng.split("-")
                if len(bounds) != 2:
                    raise ValueError(f"bad time range {rng.strip()!r} in {clause!r} (HH:MM-HH:MM)")
                start = _minutes(bounds[0], clause, end=False)
                end = _minutes(bounds[1], clause, end=True)
                if end == start:
                    raise ValueError(
                        f"empty time range {rng.strip()!r} in {clause!r} "
                        "(for all day use 00:00-24:00)"
                    )
                if end < start:
                    end += 1440  # overnight: closes the next morning
                intervals.extend((d * 1440 + start, d * 1440 + end) for d in days)
        if not intervals:
            raise ValueError(f"bad business hours {spec!r}: no opening times")
        return cls(spec, zone, tuple(sorted(set(intervals))))

    @property
    def always_open(self) -> bool:
        return self.intervals is None

    def _local(self, now: datetime) -> datetime:
        # Naive datetimes are taken as already being local business time.
        return now.replace(tzinfo=self.tz) if now.tzinfo is None else now.astimezone(self.tz)

    def is_open(self, now: datetime | None = None) -> bool:
        if self.intervals is None:
            return True
        local = self._local(now or datetime.now(UTC))
        minute = local.weekday() * 1440 + local.hour * 60 + local.minute
        return any(s <= m < e for s, e in self.intervals for m in (minute, minute + _WEEK))

    def next_open(self, now: datetime | None = None) -> datetime | None:
        """``now`` if open, else the next opening (in the business's zone); ``None`` if never."""
        now = now or datetime.now(UTC)
        if self.is_open(now):
            return now
        if not self.intervals:
            return None
        local = self._local(now)
        starts = sorted({s % _WEEK for s, _ in self.intervals})
        best: datetime | None = None
        monday = local.date() - timedelta(days=local.weekday())
        for week in (0, 1, 2):
            for start in starts:
                day = monday + timedelta(days=week * 7 + start // 1440)
                wall = datetime.combine(day, time(start % 1440 // 60, start % 60), tzinfo=self.tz)
                # Round-trip through UTC so a start inside a DST gap moves to a real instant.
                candidate = wall.astimezone(UTC).astimezone(self.tz)
                if candidate > local and (best is None or candidate < best):
                    best = candidate
            if best is not None:
                return best
        return best  # pragma: no cover - there is always a start within two weeks

    def describe(self) -> str:
        """Human-readable summary for prompts and status output."""
        if self.intervals is None:
            return "always open"
        if not self.intervals:
            return "closed"
        return f"{self.spec} ({self.tz.key})"

    def __str__(self) -> str:
        return self.describe()
