"""Trading sessions: weekly windows in a time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.sessions import ALWAYS, parse_sessions

US_EQUITY = parse_sessions("America/New_York", ["Mon-Fri 09:30-16:00"])
FX = parse_sessions("UTC", ["Sun 22:00-Fri 22:00"])


def utc(text: str) -> datetime:
    """An aware UTC datetime from ``"YYYY-MM-DD HH:MM[:SS]"`` (2026-11-18 is a Wednesday)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        ("2026-11-18 14:29:59", False),  # Wednesday 09:29:59 EST
        ("2026-11-18 14:30", True),  # Wednesday 09:30 EST
        ("2026-11-18 20:59", True),  # Wednesday 15:59 EST
        ("2026-11-18 20:59:59", True),  # Wednesday 15:59:59 EST
        ("2026-11-18 21:00", False),  # Wednesday 16:00 EST
        ("2026-11-21 15:00", False),  # Saturday 10:00 EST
        ("2026-11-22 15:00", False),  # Sunday 10:00 EST
        ("2026-07-15 14:00", True),  # Wednesday 10:00 EDT (summer)
        ("2026-07-15 13:29", False),  # Wednesday 09:29 EDT (summer)
        ("2026-01-15 14:00", False),  # Thursday 09:00 EST (winter)
        ("2026-01-15 14:30", True),  # Thursday 09:30 EST (winter)
        ("2026-03-09 13:30", True),  # Monday 09:30 EDT, the day after the spring change
    ],
)
def test_us_equity_hours_follow_new_york_wall_time(at: str, expected: bool) -> None:
    assert US_EQUITY.is_open(utc(at)) is expected


def test_other_aware_time_zones_are_converted() -> None:
    tokyo = timezone(timedelta(hours=9))
    assert US_EQUITY.is_open(datetime(2026, 11, 19, 0, 0, tzinfo=tokyo))  # 10:00 EST Wednesday
    assert not US_EQUITY.is_open(datetime(2026, 11, 19, 8, 0, tzinfo=tokyo))  # 18:00 EST


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        ("2026-11-21 12:00", False),  # Saturday
        ("2026-11-22 21:59", False),  # Sunday 21:59
        ("2026-11-22 22:00", True),  # Sunday 22:00
        ("2026-11-18 03:00", True),  # Wednesday
        ("2026-11-23 00:00", True),  # Monday midnight
        ("2026-11-20 21:59", True),  # Friday 21:59
        ("2026-11-20 22:00", False),  # Friday 22:00
    ],
)
def test_fx_hours_run_continuously_from_sunday_to_friday(at: str, expected: bool) -> None:
    assert FX.is_open(utc(at)) is expected


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        ("2026-11-20 19:59", False),  # Friday 19:59
        ("2026-11-20 20:00", True),  # Friday 20:00
        ("2026-11-21 12:00", True),  # Saturday
        ("2026-11-22 23:59", True),  # Sunday 23:59
        ("2026-11-23 01:59", True),  # Monday 01:59
        ("2026-11-23 02:00", False),  # Monday 02:00
        ("2026-11-18 12:00", False),  # Wednesday
    ],
)
def test_a_span_may_wrap_across_the_weeks_end(at: str, expected: bool) -> None:
    weekend = parse_sessions("UTC", ["Fri 20:00 - Mon 02:00"])
    assert weekend.is_open(utc(at)) is expected


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        ("2026-11-20 10:30", True),  # Friday
        ("2026-11-22 10:30", True),  # Sunday
        ("2026-11-23 10:59", True),  # Monday
        ("2026-11-23 11:00", False),  # Monday, at the end
        ("2026-11-22 09:59", False),  # Sunday, before the start
        ("2026-11-24 10:30", False),  # Tuesday
        ("2026-11-19 10:30", False),  # Thursday
    ],
)
def test_a_day_range_may_wrap_across_the_weeks_end(at: str, expected: bool) -> None:
    days = parse_sessions("UTC", ["fri-MON 10:00-11:00"])
    assert days.is_open(utc(at)) is expected


def test_several_windows_combine_and_24_00_ends_the_day() -> None:
    sessions = parse_sessions("UTC", ["Sat 10:00-12:00", "Sun 00:00-24:00"])
    assert sessions.is_open(utc("2026-11-21 11:00"))  # Saturday
    assert not sessions.is_open(utc("2026-11-21 12:00"))
    assert sessions.is_open(utc("2026-11-22 23:59:59"))  # Sunday, last second
    assert not sessions.is_open(utc("2026-11-23 00:00"))  # Monday
    span = parse_sessions("UTC", ["Fri 22:00-Sun 24:00"])
    assert span.is_open(utc("2026-11-22 23:59"))
    assert not span.is_open(utc("2026-11-23 00:00"))


def test_always_is_open_at_every_minute_of_the_week() -> None:
    start = utc("2026-11-16 00:00")  # Monday
    assert all(ALWAYS.is_open(start + timedelta(minutes=step)) for step in range(0, 7 * 1440, 7))
    assert ALWAYS.describe() == "always"


def test_descriptions_name_the_windows_and_the_zone() -> None:
    assert US_EQUITY.describe() == "Mon-Fri 09:30-16:00 America/New_York"
    messy = parse_sessions("UTC", ["  Sun 22:00  -  Fri 22:00 ", "Sat 10:00-12:00"])
    assert messy.describe() == "Sun 22:00 - Fri 22:00; Sat 10:00-12:00 UTC"


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        US_EQUITY.is_open(datetime(2026, 11, 18, 15, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        ALWAYS.is_open(datetime(2026, 11, 18, 15, 0))


@pytest.mark.parametrize(
    "window",
    [
        "",
        "   ",
        "Mon-Fri",
        "09:30-16:00",
        "Mon-Fri 9-16",
        "Mon-Fri 0930-1600",
        "Xyz 09:00-10:00",
        "Monday 09:00-10:00",
        "Mon-Fri 09:30-16:00 extra",
        "Mon 25:00-26:00",
        "Mon 09:60-10:00",
        "Mon 10:00-09:00",
        "Mon 10:00-10:00",
        "Mon 24:00-24:00",
        "Mon 09:00-Mon 09:00",
        "Sat 24:00-Sun 02:00",
        "Sun 22:00-Fri 24:30",
        "Mon 10:00-Fri",
    ],
)
def test_malformed_windows_are_refused_with_the_window_named(window: str) -> None:
    with pytest.raises(ValueError, match=f"window {window!r}"):
        parse_sessions("UTC", [window])


def test_an_unrecognised_window_says_what_is_expected() -> None:
    with pytest.raises(ValueError, match="expected 'Mon-Fri 09:30-16:00'"):
        parse_sessions("UTC", ["weekdays"])


@pytest.mark.parametrize("windows", [[], "Mon 09:00-10:00"])
def test_window_lists_must_be_non_empty_lists(windows: list[str] | str) -> None:
    with pytest.raises(ValueError, match="window"):
        parse_sessions("UTC", windows)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../etc/passwd"])
def test_an_unknown_zone_is_refused(zone: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        parse_sessions(zone, ["Mon 09:00-10:00"])
