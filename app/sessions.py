"""Trading sessions: when an instrument's market is open, as weekly windows in a time zone.

Grammar of one window (day names ``Mon`` .. ``Sun``, case-insensitive; start inclusive, end
exclusive; ``24:00`` ends a day):

* ``"Mon-Fri 09:30-16:00"``: each day from Monday to Friday, 09:30 to 16:00 local time (a
  single day, ``"Sat 10:00-12:00"``, works too; a day range may wrap, ``"Fri-Mon"``);
* ``"Sun 22:00-Fri 22:00"``: one span, open from Sunday 22:00 until Friday 22:00 (may wrap
  across the week's end).

Local wall time in the named IANA zone decides, so daylight-saving changes are followed.
Holidays are not modelled.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY
_DAY = r"(mon|tue|wed|thu|fri|sat|sun)"
_TIME = r"(\d{1,2}):(\d{2})"
_DAILY = re.compile(rf"{_DAY}(?:\s*-\s*{_DAY})?\s+{_TIME}\s*-\s*{_TIME}", re.IGNORECASE)
_SPAN = re.compile(rf"{_DAY}\s+{_TIME}\s*-\s*{_DAY}\s+{_TIME}", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Sessions:
    """Open spans as (start, end) minutes of the week from Monday 00:00; None: always open."""

    timezone: ZoneInfo | None
    spans: tuple[tuple[int, int], ...]
    text: str

    def is_open(self, at: datetime) -> bool:
        if at.tzinfo is None:
            raise ValueError("is_open needs a timezone-aware datetime")
        if self.timezone is None:
            return True
        local = at.astimezone(self.timezone)
        minute = local.weekday() * MINUTES_PER_DAY + local.hour * 60 + local.minute
        return any(_inside(minute, start, end) for start, end in self.spans)

    def describe(self) -> str:
        return self.text


ALWAYS = Sessions(timezone=None, spans=(), text="always")


def parse_sessions(timezone: str, windows: Sequence[str]) -> Sessions:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r}") from None
    if not windows:
        raise ValueError("sessions need at least one window, or 'always'")
    spans: list[tuple[int, int]] = []
    for window in windows:
        spans.extend(_parse_window(window))
    return Sessions(timezone=zone, spans=tuple(spans), text=f"{'; '.join(windows)} {timezone}")


def _parse_window(window: str) -> list[tuple[int, int]]:
    text = window.strip()
    if match := _SPAN.fullmatch(text):
        start_day, start_hour, start_minute, end_day, end_hour, end_minute = match.groups()
        start = _day(start_day) * MINUTES_PER_DAY + _minutes(start_hour, start_minute, window)
        end = _day(end_day) * MINUTES_PER_DAY + _minutes(end_hour, end_minute, window)
        return [(start, end)]
    if match := _DAILY.fullmatch(text):
        first, last, start_hour, start_minute, end_hour, end_minute = match.groups()
        start = _minutes(start_hour, start_minute, window)
        end = _minutes(end_hour, end_minute, window)
        if end <= start:
            raise ValueError(f"window {window!r}: the end must be after the start")
        first_day = _day(first)
        count = (_day(last or first) - first_day) % 7 + 1
        days = [(first_day + offset) % 7 for offset in range(count)]
        return [(day * MINUTES_PER_DAY + start, day * MINUTES_PER_DAY + end) for day in days]
    raise ValueError(f"window {window!r}: expected 'Mon-Fri 09:30-16:00' or 'Sun 22:00-Fri 22:00'")


def _day(name: str) -> int:
    return DAYS.index(name.lower())


def _minutes(hour: str, minute: str, window: str) -> int:
    hours, minutes = int(hour), int(minute)
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"window {window!r}: {hour}:{minute} is not a time of day")
    return hours * 60 + minutes


def _inside(minute: int, start: int, end: int) -> bool:
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end  # wraps across the week's end
