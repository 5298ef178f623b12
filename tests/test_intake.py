"""What the receiver decides from a delivery alone (app/intake.py): pure functions."""

from __future__ import annotations

import json

import pytest

from app import intake
from app.directory import Integration, IntegrationStatus
from app.errors import IdempotencyConflict, MarketClosed, UnsupportedMediaType
from app.protocol import parse_envelope

OPEN = json.dumps(
    {
        "v1": {
            "event": {
                "timestamp": 1700000000000,
                "type": "SIGNAL_OPEN",
                "data": {
                    "direction": "BUY",
                    "ticker": "BTCUSDT",
                    "quantity": 1,
                    "strategy": {"id": "s1", "name": "One"},
                    "proquantPositionId": "p1",
                },
            }
        }
    }
).encode()
STRATEGY_PAUSED = json.dumps(
    {"v1": {"event": {"timestamp": 1, "type": "STRATEGY_PAUSED", "data": {"id": "s1"}}}}
).encode()


def _integration(
    *, status: IntegrationStatus = "approved", sandbox: bool = True, verified: bool = False
) -> Integration:
    return Integration(7, "i", status, 1, "paper", sandbox, verified)


@pytest.mark.parametrize(
    "content_type", [None, "application/json", "Application/JSON; charset=utf-8", "x/vnd.a+json"]
)
def test_json_media_types_pass(content_type: str | None) -> None:
    intake.check_content_type(content_type)


@pytest.mark.parametrize("content_type", ["text/plain", "", "application/jsonx"])
def test_other_media_types_are_refused_by_name(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType, match="send application/json, not"):
        intake.check_content_type(content_type)


def test_a_signal_needs_an_approved_integration_and_a_verified_production_account() -> None:
    signal = parse_envelope(OPEN)
    assert intake.credentials_error(signal, _integration()) is None
    assert intake.credentials_error(signal, _integration(sandbox=False, verified=True)) is None
    refusals = [
        (None, "no integration owns"),
        (_integration(status="pending"), "is pending, not approved"),
        (_integration(sandbox=False), "production account paper is not verified"),
    ]
    for integration, message in refusals:
        error = intake.credentials_error(signal, integration)
        assert error is not None
        assert message in error.message
    # A strategy's lifecycle event needs only an integration that owns the token.
    lifecycle = parse_envelope(STRATEGY_PAUSED)
    assert intake.credentials_error(lifecycle, _integration(status="pending")) is None


def test_the_dedupe_key_is_the_idempotency_header_first_then_the_event() -> None:
    signal = parse_envelope(OPEN)
    by_event = intake.dedupe_key(signal, 7, {})
    assert by_event == signal.dedupe_key(7)
    assert intake.dedupe_key(signal, 7, {"webhook-id": "w"}) == "7|key|w"
    assert intake.dedupe_key(signal, 7, {"webhook-id": "w", "idempotency-key": "k"}) == "7|key|k"


def test_an_errors_answer_is_typed_for_the_protocol_and_generic_otherwise() -> None:
    typed = intake.answer_for(MarketClosed("closed"))
    assert (typed.status, typed.typed, typed.error_type) == (
        MarketClosed.status_code,
        True,
        "MarketClosed",
    )
    assert json.loads(typed.body) == {"type": "MarketClosed", "message": "closed"}
    generic = intake.answer_for(IdempotencyConflict("again"))
    assert (generic.status, generic.typed) == (422, False)
    assert json.loads(generic.body) == {"error": IdempotencyConflict.code, "message": "again"}


def test_the_stored_details_come_from_the_event_and_the_integration() -> None:
    details = intake.details_of(parse_envelope(OPEN), _integration())
    assert (details.integration_id, details.version, details.event_type) == (7, "v1", "SIGNAL_OPEN")
    assert (details.strategy_external_id, details.provider_position_id) == ("s1", "p1")
    assert intake.details_of(None, None) == type(details)(integration_id=None)
