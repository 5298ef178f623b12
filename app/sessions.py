"""Trading sessions: when an instrument's market is open, as weekly windows in a time zone.

Grammar of one window (whitespace tolerant; day names ``Mon Tue Wed Thu Fri Sat Sun``,
case-insensitive; times ``HH:MM``; start inclusive, end exclusive; ``24:00`` is allowed only as
an end and means the end of that day):

* daily window, ``"<day>[-<day>] HH:MM-HH:MM"``: ``"Mon-Fri 09:30-16:00"`` is open each day from
  Monday to Friday, 09:30 to 16:00 local time; a single day (``"Sat 10:00-12:00"``) works too,
  and a day range may wrap across the week's end (``"Fri-Mon 10:00-11:00"``); the end must be
  after the start;
* continuous span, ``"<day> HH:MM-<day> HH:MM"``: ``"Sun 22:00-Fri 22:00"`` (or
  ``"Sun 22:00 - Fri 22:00"``) is open from Sunday 22:00 without a break until Friday 22:00; a
  span may wrap across the week's end (``"Fri 20:00-Mon 02:00"``).

Local wall time in the named IANA zone decides, so daylight-saving changes are followed.
Holidays are not modelled.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.values import value

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MINUTES_PER_DAY = 24 * 60
_MINUTES_PER_WEEK = 7 * _MINUTES_PER_DAY
_ALL_WEEK = ((0, _MINUTES_PER_WEEK),)
_DAY = r"(mon|tue|wed|thu|fri|sat|sun)"
_TIME = r"([0-9]{1,2}):([0-9]{2})"
_DAILY = re.compile(rf"{_DAY}(?:\s*-\s*{_DAY})?\s+{_TIME}\s*-\s*{_TIME}", re.IGNORECASE)
_SPAN = re.compile(rf"{_DAY}\s+{_TIME}\s*-\s*{_DAY}\s+{_TIME}", re.IGNORECASE)
_EXPECTED = "expected 'Mon-Fri 09:30-16:00' (daily) or 'Sun 22:00-Fri 22:00' (continuous)"


@value
class Sessions:
    """Open spans as (start, end) minutes of the week from Monday 00:00 local time.

    A span whose end is not after its start wraps across the week's end.
    """

    timezone: tzinfo
    spans: tuple[tuple[int, int], ...]
    text: str

    def is_open(self, at: datetime) -> bool:
        """Whether the market is open at ``at``, which must be timezone-aware."""
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"is_open needs a timezone-aware datetime, got {at!r}")
        if self.spans == _ALL_WEEK:  # "always", the usual crypto market: nothing to work out
            return True
        local = at.astimezone(self.timezone)
        minute = local.weekday() * _MINUTES_PER_DAY + local.hour * 60 + local.minute
        return any(_inside(minute, start, end) for start, end in self.spans)

    def describe(self) -> str:
        """Short human text, e.g. ``"always"`` or ``"Mon-Fri 09:30-16:00 America/New_York"``."""
        return self.text


ALWAYS = Sessions(timezone=UTC, spans=_ALL_WEEK, text="always")
NEVER = Sessions(timezone=UTC, spans=(), text="closed (the venue lists the market inactive)")


def parse_sessions(timezone: str, windows: Sequence[str]) -> Sessions:
    """Sessions open during any of ``windows`` (see the module grammar) in IANA ``timezone``."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r}: expected an IANA name") from None
    if isinstance(windows, str):
        raise ValueError(f"windows must be a list of window texts, not the string {windows!r}")
    if not windows:
        raise ValueError("sessions need at least one window (or use 'always')")
    spans = tuple(span for window in windows for span in _parse_window(window))
    described = "; ".join(" ".join(window.split()) for window in windows)
    return Sessions(timezone=zone, spans=spans, text=f"{described} {timezone}")


def _parse_window(window: str) -> list[tuple[int, int]]:
    text = window.strip()
    if match := _SPAN.fullmatch(text):
        start_day, start_hour, start_minute, end_day, end_hour, end_minute = match.groups()
        start = _day(start_day) * _MINUTES_PER_DAY
        start += _minutes(start_hour, start_minute, window=window, is_end=False)
        end = _day(end_day) * _MINUTES_PER_DAY
        end += _minutes(end_hour, end_minute, window=window, is_end=True)
        start, end = start % _MINUTES_PER_WEEK, end % _MINUTES_PER_WEEK
        if start == end:
            raise ValueError(f"window {window!r}: the span is empty (its end equals its start)")
        return [(start, end)]
    if match := _DAILY.fullmatch(text):
        first, last, start_hour, start_minute, end_hour, end_minute = match.groups()
        start = _minutes(start_hour, start_minute, window=window, is_end=False)
        end = _minutes(end_hour, end_minute, window=window, is_end=True)
        if end <= start:
            raise ValueError(f"window {window!r}: the end time must be after the start time")
        first_day = _day(first)
        count = (_day(last or first) - first_day) % 7 + 1
        days = [(first_day + offset) % 7 for offset in range(count)]
        return [(day * _MINUTES_PER_DAY + start, day * _MINUTES_PER_DAY + end) for day in days]
    raise ValueError(f"window {window!r}: {_EXPECTED}")


def _day(name: str) -> int:
    return _DAY_NAMES.index(name.lower())


def _minutes(hour: str, minute: str, *, window: str, is_end: bool) -> int:
    hours, minutes = int(hour), int(minute)
    end_of_day = hours == 24 and minutes == 0
    if minutes > 59 or (hours > 23 and not end_of_day) or (end_of_day and not is_end):
        allowed = "00:00-24:00" if is_end else "00:00-23:59"
        raise ValueError(f"window {window!r}: {hour}:{minute} is not a time in {allowed}")
    return hours * 60 + minutes


def _inside(minute: int, start: int, end: int) -> bool:
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end  # wraps across the week's end
