"""Trading sessions: weekly windows in a time zone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.sessions import ALWAYS, parse_sessions

US_EQUITY = parse_sessions("America/New_York", ["Mon-Fri 09:30-16:00"])
FX = parse_sessions("UTC", ["Sun 22:00-Fri 22:00"])


def utc(day: int, hour: int, minute: int = 0, second: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (utc(18, 14, 29, 59), False),  # Wed 09:29:59 EST
        (utc(18, 14, 30), True),  # Wed 09:30
        (utc(18, 20, 59), True),  # Wed 15:59
        (utc(18, 21, 0), False),  # Wed 16:00
        (utc(21, 15, 0), False),  # Saturday
        (datetime(2026, 7, 15, 14, 0, tzinfo=UTC), True),  # 10:00 EDT in summer
        (datetime(2026, 1, 15, 14, 0, tzinfo=UTC), False),  # 09:00 EST in winter
    ],
)
def test_us_equity_hours(at: datetime, expected: bool) -> None:
    assert US_EQUITY.is_open(at) is expected


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (utc(21, 12), False),  # Saturday
        (utc(22, 21, 59), False),  # Sunday 21:59
        (utc(22, 22, 0), True),  # Sunday 22:00
        (utc(18, 3), True),  # Wednesday
        (utc(20, 21, 59), True),  # Friday 21:59
        (utc(20, 22, 0), False),  # Friday 22:00
    ],
)
def test_fx_and_metals_hours(at: datetime, expected: bool) -> None:
    assert FX.is_open(at) is expected


def test_spans_and_day_ranges_may_wrap_across_the_weeks_end() -> None:
    weekend = parse_sessions("UTC", ["Fri 20:00 - Mon 02:00"])
    assert weekend.is_open(utc(21, 12))  # Saturday
    assert weekend.is_open(utc(23, 1, 59))  # Monday 01:59
    assert not weekend.is_open(utc(23, 2))
    days = parse_sessions("UTC", ["Sat-Mon 10:00-11:00"])
    assert days.is_open(utc(22, 10, 30))  # Sunday
    assert not days.is_open(utc(24, 10, 30))  # Tuesday


def test_always_and_descriptions() -> None:
    assert ALWAYS.is_open(utc(21, 3))
    assert ALWAYS.describe() == "always"
    assert US_EQUITY.describe() == "Mon-Fri 09:30-16:00 America/New_York"
    assert parse_sessions("UTC", ["Mon 00:00-24:00"]).is_open(utc(23, 23, 59))


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        US_EQUITY.is_open(datetime(2026, 11, 18, 15, 0))


@pytest.mark.parametrize(
    "window",
    ["", "Mon-Fri", "Mon-Fri 9-16", "Xyz 09:00-10:00", "Mon 25:00-26:00", "Mon 10:00-09:00"],
)
def test_malformed_windows_are_refused(window: str) -> None:
    with pytest.raises(ValueError, match="window"):
        parse_sessions("UTC", [window])


def test_an_unknown_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        parse_sessions("Mars/Olympus", ["Mon 09:00-10:00"])
