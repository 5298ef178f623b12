"""Parsing the versioned envelope."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.errors import MalformedBody, UnsupportedVersion
from app.protocol import parse_envelope
from tests.conftest import dumps


def raw(document: object) -> bytes:
    return dumps(document).encode()


def signal_event(**data: object) -> dict[str, object]:
    base: dict[str, object] = {
        "direction": "BUY",
        "ticker": "XAUUSD",
        "quantity": 10,
        "strategy": {"id": "s1", "name": "S"},
        "proquantPositionId": "p1",
    }
    base.update(data)
    return {"timestamp": 1, "type": "SIGNAL_OPEN", "integration": None, "data": base}


def test_quantities_are_decimal_never_float() -> None:
    body = (
        b'{"v1": {"deprecation": null, "event": {"timestamp": 1, "type": "SIGNAL_OPEN", '
        b'"data": {"direction": "SELL", "ticker": "T", "quantity": 0.100000000000000005, '
        b'"strategy": {"id": "s"}, "proquantPositionId": "p"}}}}'
    )
    parsed = parse_envelope(body)
    assert parsed.signal is not None
    assert parsed.signal.quantity == Decimal("0.100000000000000005")  # a float says 0.1


def test_the_newest_understood_version_wins_over_unknown_newer_ones() -> None:
    parsed = parse_envelope(
        raw({"v1": {"deprecation": "2027-01-01", "event": signal_event()}, "v3": {"x": 1}})
    )
    assert (parsed.version, parsed.deprecation) == ("v1", "2027-01-01")


def test_dedupe_key_is_integration_type_strategy_position_timestamp() -> None:
    parsed = parse_envelope(raw({"v1": {"deprecation": None, "event": signal_event()}}))
    assert parsed.dedupe_key(7) == "7|SIGNAL_OPEN|s1|p1|1"


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ({"v1": {"event": signal_event(quantity="10")}}, "v1.event.data.quantity"),
        ({"v1": {"event": signal_event(quantity=True)}}, "v1.event.data.quantity"),
        ({"v1": {"event": signal_event(quantity=0)}}, "v1.event.data.quantity"),
        ({"v1": {"event": signal_event(quantity=Decimal("1e-19"))}}, "v1.event.data.quantity"),
        ({"v1": {"event": signal_event(direction="UP")}}, "v1.event.data.direction"),
        ({"v1": {"event": signal_event(strategy={})}}, "v1.event.data.strategy.id"),
        ({"v1": {"event": {"type": "SIGNAL_OPEN"}}}, "v1.event.timestamp"),
        # A number as a string or a boolean is not a timestamp (pydantic alone reads both).
        ({"v1": {"event": {**signal_event(), "timestamp": "1"}}}, "v1.event.timestamp"),
        ({"v1": {"event": {**signal_event(), "timestamp": True}}}, "v1.event.timestamp"),
        ({"v1": {}}, "v1.event"),
    ],
)
def test_schema_violations_name_the_field(document: object, where: str) -> None:
    with pytest.raises(MalformedBody, match=where.replace(".", r"\.")):
        parse_envelope(raw(document))


def test_no_understood_version_is_unsupported() -> None:
    with pytest.raises(UnsupportedVersion):
        parse_envelope(raw({"v2": {}}))
    with pytest.raises(UnsupportedVersion):
        parse_envelope(raw({}))


@pytest.mark.parametrize(
    "body", [b"", b"[]", b'{"v1": Infinity}', b'{"v1": 1, "v1": 2}', b"\xff\xfe", b"[" * 100000]
)
def test_bad_json_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedBody):
        parse_envelope(body)
