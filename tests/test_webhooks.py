"""The webhook endpoint through a real server: every event type, every answer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from tests.conftest import (
    STRATEGY,
    TOKEN,
    Clock,
    Service,
    ServiceFactory,
    check_invariants,
    dumps,
    envelope,
    signal,
)
from tests.test_admin import post

GUIDE_EXAMPLE = {
    "v1": {
        "deprecation": None,
        "event": {
            "timestamp": 1549623690730,
            "type": "SIGNAL_OPEN",
            "integration": {
                "name": "[email protected]",
                "description": "Foo Bar FX",
                "imageUrl": "https://foo.bar/logo.png",
                "webhook": {
                    "url": "https://foo.bar/api/proquant",
                    "headers": {"x-foo-bar-api-token": "baz"},
                },
            },
            "data": {
                "direction": "BUY",
                "ticker": "XAUUSD",
                "quantity": 10,
                "strategy": {"id": "6bbc583bf6d70605bbbc892f66367ab7", "name": "Gold High-Risk"},
                "proquantPositionId": "960fe1a63d264d0f4e19a0ebf385497e",
            },
        },
    }
}


def assert_typed(response: httpx.Response, status: int, error_type: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["x-proquant-error"] == "1"
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["type"] == error_type
    assert body["message"]


def assert_generic(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert "x-proquant-error" not in response.headers
    assert response.json()["error"] == error


def open_positions(service: Service) -> list[dict[str, object]]:
    positions: list[dict[str, object]] = service.api("/api/positions", status="open")["positions"]
    return positions


def test_the_guides_example_opens_a_position_with_an_order_a_fill_and_balanced_ledger(
    service: Service,
) -> None:
    body = json.loads(json.dumps(GUIDE_EXAMPLE))
    body["v1"]["event"]["timestamp"] = service.clock.milliseconds()

    response = service.post(body)

    assert response.status_code == 200
    assert response.content == b""
    [position] = open_positions(service)
    assert position["ticker"] == "XAUUSD"
    assert position["direction"] == "long"
    assert Decimal(str(position["quantity"])) == 10
    assert Decimal(str(position["average_entry"])) == Decimal("2350.00")
    [order] = service.rows("SELECT * FROM orders")
    assert order["status"] == "filled"
    assert order["client_order_id"].startswith("sb-")
    [fill] = service.rows("SELECT * FROM fills")
    assert Decimal(fill["price"]) == Decimal("2350.00")
    assert Decimal(fill["fee"]) == Decimal("2.35")  # 1 bp of 23,500
    book = service.api("/api/accounts/demo-paper/book")
    assert Decimal(book["balance"]) == Decimal("100000") - Decimal("23500") - Decimal("2.35")
    assert book["holding"] == {"XAUUSD": "10"}
    check_invariants(service)


def test_close_settles_the_position_and_realizes_pnl(service: Service) -> None:
    assert service.send("SIGNAL_OPEN", signal()).status_code == 200
    service.brokers["demo-paper"].set_price("XAU/USD", Decimal("2400.00"))  # type: ignore[attr-defined]

    response = service.send("SIGNAL_CLOSE", signal(direction="SELL"))

    assert response.status_code == 200
    assert open_positions(service) == []
    [closed] = service.api("/api/positions", status="closed")["positions"]
    assert Decimal(closed["realized_pnl"]) == Decimal("500.00")  # 10 * (2400 - 2350)
    book = service.api("/api/accounts/demo-paper/book")
    assert Decimal(book["realized_pnl"]) == Decimal("500.00")
    assert book["holding"] == {}
    assert Decimal(book["balance"]) == Decimal("100000") + 500 - Decimal("2.35") - Decimal("2.40")
    assert [t["type"] for t in book["trades"]] == ["buy", "sell"]
    assert len(book["value"]) == 2
    check_invariants(service)


def test_close_with_another_quantity_closes_all_and_records_the_difference(
    service: Service,
) -> None:
    service.send("SIGNAL_OPEN", signal())
    assert service.send("SIGNAL_CLOSE", signal(quantity=4)).status_code == 200
    assert open_positions(service) == []
    [event] = service.api("/api/events", type="SIGNAL_CLOSE")["events"]
    assert "differs" in event["note"]


def test_a_close_naming_another_ticker_closes_the_position_in_its_own(service: Service) -> None:
    """The position decides what is sold, not the close's signal: on PostgreSQL the quick
    close (one statement, checked by the signal's ticker) does not apply, and the close
    claims and checks the position itself."""
    service.send("SIGNAL_OPEN", signal())
    close = signal(direction="SELL", ticker="BTCUSDT", quantity=10)
    assert service.send("SIGNAL_CLOSE", close).status_code == 200
    assert open_positions(service) == []
    (order,) = service.rows(
        "SELECT ticker, symbol, side, quantity, average_price FROM orders WHERE purpose = 'close'"
    )
    assert (order["ticker"], order["symbol"], order["side"]) == ("XAUUSD", "XAU/USD", "sell")
    assert Decimal(order["quantity"]) == 10
    assert Decimal(order["average_price"]) == Decimal("2350.00")
    check_invariants(service, settled=True)


def test_reopen_closes_and_opens_the_opposite_direction(service: Service) -> None:
    service.send("SIGNAL_OPEN", signal())
    response = service.send("SIGNAL_REOPEN", signal(direction="SELL", position_id="p2"))
    assert response.status_code == 200
    [position] = open_positions(service)
    assert position["direction"] == "short"
    assert len(service.api("/api/positions", status="closed")["positions"]) == 1
    check_invariants(service)


def test_reopen_without_a_position_opens_and_says_so(service: Service) -> None:
    assert service.send("SIGNAL_REOPEN", signal()).status_code == 200
    [position] = open_positions(service)
    assert position["direction"] == "long"
    [event] = service.api("/api/events", type="SIGNAL_REOPEN")["events"]
    assert "no position to close" in event["note"]


def test_reopen_whose_open_leg_fails_answers_its_error_and_keeps_the_close(
    service: Service,
) -> None:
    service.send("SIGNAL_OPEN", signal(quantity=1))
    response = service.send("SIGNAL_REOPEN", signal(direction="SELL", quantity=101))
    assert_typed(response, 422, "QuantityTooHigh")
    assert open_positions(service) == []
    assert len(service.api("/api/positions", status="closed")["positions"]) == 1
    check_invariants(service)


def test_a_signal_registers_an_unknown_strategy_as_enabled(service: Service) -> None:
    new = {"id": "new-strategy", "name": "Brand New"}
    assert service.send("SIGNAL_OPEN", signal(strategy=new)).status_code == 200
    [row] = service.rows("SELECT enabled, name FROM strategies WHERE external_id = 'new-strategy'")
    assert row["enabled"] == 1
    assert row["name"] == "Brand New"


def test_strategy_enabled_and_disabled_set_the_flag_and_flag_an_open_position(
    service: Service,
) -> None:
    assert service.send("STRATEGY_ENABLED", STRATEGY).status_code == 200
    assert service.rows("SELECT enabled FROM strategies")[0]["enabled"] == 1
    service.send("SIGNAL_OPEN", signal())

    assert service.send("STRATEGY_DISABLED", STRATEGY).status_code == 200

    assert service.rows("SELECT enabled FROM strategies")[0]["enabled"] == 0
    [position] = open_positions(service)
    assert "disabled" in str(position["attention"])


def test_disabling_can_close_the_position_instead(start_service) -> None:  # type: ignore[no-untyped-def]
    service = start_service(close_position_on_disable=True)
    service.send("SIGNAL_OPEN", signal())
    assert service.send("STRATEGY_DISABLED", STRATEGY).status_code == 200
    assert open_positions(service) == []
    check_invariants(service)


def test_integration_lifecycle_sets_status_and_deleted_tokens_stop_working(
    service: Service,
) -> None:
    for event_type, status in [
        ("INTEGRATION_REJECTED", "rejected"),
        ("INTEGRATION_APPROVED", "approved"),
    ]:
        assert service.send(event_type).status_code == 200
        assert service.rows("SELECT status FROM integrations")[0]["status"] == status

    assert service.send("INTEGRATION_DELETED").status_code == 200
    assert service.rows("SELECT status FROM integrations")[0]["status"] == "deleted"
    assert_typed(service.send("SIGNAL_OPEN", signal()), 401, "InvalidCredentials")
    assert_typed(service.send("STRATEGY_ENABLED", STRATEGY), 401, "InvalidCredentials")


def test_signals_of_a_rejected_integration_are_refused(service: Service) -> None:
    service.send("INTEGRATION_REJECTED")
    response = service.send("SIGNAL_OPEN", signal())
    assert_typed(response, 401, "InvalidCredentials")
    assert "rejected" in response.json()["message"]


def test_unknown_event_types_answer_200_and_are_stored_as_ignored(service: Service) -> None:
    response = service.send("SOMETHING_NEW", {"anything": 1})
    assert response.status_code == 200
    assert response.content == b""
    [event] = service.api("/api/events")["events"]
    assert event["state"] == "ignored"


@pytest.mark.parametrize(
    ("data", "status", "error_type"),
    [
        (signal(ticker="DOGEUSD"), 422, "UnsupportedInstrument"),
        (signal(quantity=Decimal("0.001")), 422, "InvalidQuantityPrecision"),
        (signal(ticker="EURUSD", quantity=999), 422, "QuantityTooLow"),
        (signal(ticker="BTCUSDT", quantity=Decimal("0.0001")), 422, "QuantityTooLow"),
        (signal(quantity=101), 422, "QuantityTooHigh"),
        (signal(ticker="BTCUSDT", quantity=2), 422, "InsufficientFunds"),
        # the order of the checks: the first failing one answers
        (signal(ticker="DOGEUSD", quantity=Decimal("0.001")), 422, "UnsupportedInstrument"),
        (signal(quantity=Decimal("100.001")), 422, "InvalidQuantityPrecision"),
    ],
)
def test_open_checks_answer_their_typed_error_and_execute_nothing(
    service: Service, data: object, status: int, error_type: str
) -> None:
    assert_typed(service.send("SIGNAL_OPEN", data), status, error_type)
    assert service.rows("SELECT * FROM orders") == []
    assert open_positions(service) == []
    [event] = service.api("/api/events")["events"]
    assert (event["state"], event["error_type"]) == ("failed", error_type)


def test_market_closed_on_the_weekend(start_service) -> None:  # type: ignore[no-untyped-def]
    saturday = Clock(datetime(2026, 11, 21, 12, 0, tzinfo=UTC))
    service = start_service(clock=saturday)
    assert_typed(service.send("SIGNAL_OPEN", signal()), 422, "MarketClosed")
    assert service.send("SIGNAL_OPEN", signal(ticker="BTCUSDT", quantity=1)).status_code == 200


def test_close_in_a_closed_market_is_refused_and_the_position_stays(service: Service) -> None:
    service.send("SIGNAL_OPEN", signal())
    service.clock.now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert_typed(service.send("SIGNAL_CLOSE", signal()), 422, "MarketClosed")
    assert len(open_positions(service)) == 1


def test_position_already_exists_and_position_not_found(service: Service) -> None:
    assert_typed(service.send("SIGNAL_CLOSE", signal()), 404, "PositionNotFound")
    service.send("SIGNAL_OPEN", signal())
    again = service.send("SIGNAL_OPEN", signal(position_id="other"))
    assert_typed(again, 409, "PositionAlreadyExists")
    assert len(service.rows("SELECT * FROM orders")) == 1


def test_allocation_limits_a_strategy_to_a_share_of_equity(start_service) -> None:  # type: ignore[no-untyped-def]
    service = start_service(
        strategy_defaults={"allocation_percent": Decimal(10)},
    )
    # 10 oz at 2350 is 23,500: over 10% of 100,000.
    assert_typed(service.send("SIGNAL_OPEN", signal()), 422, "InsufficientFunds")
    assert service.send("SIGNAL_OPEN", signal(quantity=4)).status_code == 200


def test_wrong_or_missing_token_is_invalid_credentials(service: Service) -> None:
    assert_typed(service.send("SIGNAL_OPEN", signal(), token="wrong"), 401, "InvalidCredentials")
    assert_typed(service.send("SIGNAL_OPEN", signal(), token=None), 401, "InvalidCredentials")
    assert len(service.rows("SELECT * FROM events WHERE error_type = 'InvalidCredentials'")) == 2


def test_of_a_repeated_header_the_first_counts_and_names_are_not_case_sensitive(
    service: Service,
) -> None:
    """The endpoint reads the raw ASGI headers: the first of a repeated token header is the
    one presented (as Starlette's ``Headers.get`` does), whatever case the sender wrote."""
    body = dumps(envelope("SIGNAL_OPEN", signal(), timestamp=service.clock.milliseconds()))
    twice = [("X-Signalbridge-Token", "wrong"), ("x-signalbridge-token", TOKEN)]
    refused = service.client.post(
        "/webhooks/proquant", content=body, headers=[*twice, ("Content-Type", "application/json")]
    )
    assert_typed(refused, 401, "InvalidCredentials")
    assert refused.headers["content-length"] == str(len(refused.content))
    accepted = service.client.post(
        "/webhooks/proquant",
        content=body,
        headers=[*reversed(twice), ("Content-Type", "application/json")],
    )
    assert accepted.status_code == 200, accepted.text
    assert (accepted.content, accepted.headers["content-length"]) == (b"", "0")
    assert "content-type" not in accepted.headers
    assert len(open_positions(service)) == 1


def test_the_token_is_redacted_from_the_stored_body(service: Service) -> None:
    service.send("SIGNAL_OPEN", signal())
    [row] = service.rows("SELECT raw_body FROM events")
    assert b"demo-token" not in row["raw_body"]
    assert b"[redacted]" in row["raw_body"]


def test_malformed_json_is_400_and_stored(service: Service) -> None:
    response = service.post(b'{"v1": ')
    assert_generic(response, 400, "malformed_body")
    [row] = service.rows("SELECT raw_body, answer_status FROM events")
    assert (row["raw_body"], row["answer_status"]) == (b'{"v1": ', 400)


def test_schema_violation_names_the_field(service: Service) -> None:
    response = service.send("SIGNAL_OPEN", {**signal(), "quantity": "ten"})
    assert_generic(response, 400, "malformed_body")
    assert "v1.event.data.quantity" in response.json()["message"]
    response = service.send("SIGNAL_OPEN", {**signal(), "quantity": -1})
    assert "v1.event.data.quantity" in response.json()["message"]


@pytest.mark.parametrize(
    "raw",
    [b'{"v1": {"deprecation": null, "event": {"timestamp": NaN}}}', b'{"a": 1, "a": 2}', b"[" * 70],
)
def test_nan_duplicate_keys_and_deep_nesting_are_malformed(service: Service, raw: bytes) -> None:
    assert_generic(service.post(raw), 400, "malformed_body")


def test_unsupported_version_is_stored_and_answered_400(service: Service) -> None:
    body = {"v9": {"deprecation": None, "event": {}}}
    response = service.post(body)
    assert_generic(response, 400, "unsupported_version")
    assert "v9" in response.json()["message"]
    assert len(service.rows("SELECT * FROM events WHERE error_type = 'unsupported_version'")) == 1


def test_the_newest_understood_version_is_used_and_deprecation_is_visible(
    service: Service,
) -> None:
    body = envelope(
        "SIGNAL_OPEN", signal(), timestamp=service.clock.milliseconds(), deprecation="2027-01-01"
    )
    body["v2"] = {"deprecation": None, "event": {"shape": "unknown to this build"}}
    assert service.post(body).status_code == 200
    [event] = service.api("/api/events")["events"]
    assert (event["version"], event["deprecation"]) == ("v1", "2027-01-01")
    [warning] = service.api("/api/versions")["deprecated_versions"]
    assert (warning["version"], warning["deprecation"]) == ("v1", "2027-01-01")


def test_body_over_64_kib_is_413_and_not_stored(service: Service) -> None:
    big = b'{"pad": "' + b"x" * (64 * 1024) + b'"}'
    assert_generic(service.post(big), 413, "body_too_large")

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(70):
            yield b"x" * 1024

    response = service.client.post(
        "/webhooks/proquant", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_generic(response, 413, "body_too_large")
    assert service.rows("SELECT * FROM events") == []


def test_a_body_of_exactly_the_limit_is_read(service: Service) -> None:
    exact = b'{"pad": "' + b"x" * (64 * 1024 - 11) + b'"}'
    assert len(exact) == 64 * 1024
    assert_generic(service.post(exact), 400, "unsupported_version")


def test_non_json_content_type_is_415_and_stored(service: Service) -> None:
    response = service.client.post(
        "/webhooks/proquant", content=b"a=1", headers={"content-type": "text/plain"}
    )
    assert_generic(response, 415, "unsupported_media_type")
    assert len(service.rows("SELECT * FROM events")) == 1


def test_stale_signal_is_422(service: Service) -> None:
    old = service.clock.milliseconds() - 301_000
    response = service.send("SIGNAL_OPEN", signal(), timestamp=old)
    assert_generic(response, 422, "stale_signal")
    future = service.clock.now + timedelta(seconds=301)
    response = service.send("SIGNAL_OPEN", signal(), timestamp=int(future.timestamp() * 1000))
    assert_generic(response, 422, "stale_signal")
    assert service.rows("SELECT * FROM orders") == []


def test_without_shorts_a_second_open_is_refused_for_its_position_first(
    start_service: ServiceFactory,
) -> None:
    """The order of an open's checks on an account that allows no shorts: a sell with the
    strategy's position open is refused for the position (PositionAlreadyExists), one
    without it for the account (InsufficientFunds); neither leaves an order behind. On
    PostgreSQL such a sell is the open whose funds are read before its intent is made
    (app.intents.reserve_open), where any other is planned first."""
    no_shorts = {
        "name": "demo-paper",
        "user": "demo@example.com",
        "initial_deposit": "100000",
        "allow_short": False,
    }
    service = start_service(accounts=[no_shorts])
    assert service.send("SIGNAL_OPEN", signal(quantity=1)).status_code == 200
    assert_typed(
        service.send("SIGNAL_OPEN", signal(direction="SELL", quantity=1)),
        409,
        "PositionAlreadyExists",
    )
    other = {"id": "no-position-yet", "name": "Fresh"}
    refused = service.send("SIGNAL_OPEN", signal(direction="SELL", quantity=1, strategy=other))
    assert_typed(refused, 422, "InsufficientFunds")
    assert refused.json()["message"] == "this account does not allow short positions"
    assert len(service.rows("SELECT id FROM orders")) == 1
    assert len(open_positions(service)) == 1


def test_a_signal_of_a_known_strategy_enables_and_renames_it(service: Service) -> None:
    """A signal's strategy is read with its delivery's token check (app.directory); one the
    provider disabled, or renamed, is enabled and renamed by the signal all the same."""
    assert service.send("SIGNAL_OPEN", signal()).status_code == 200
    assert service.send("STRATEGY_DISABLED", STRATEGY).status_code == 200
    renamed = {**STRATEGY, "name": "Gold, renamed"}
    assert service.send("SIGNAL_CLOSE", signal(strategy=renamed)).status_code == 200
    [row] = service.rows("SELECT enabled, name FROM strategies")
    assert (bool(row["enabled"]), row["name"]) == (True, "Gold, renamed")
    assert open_positions(service) == []


def test_two_integrations_keep_their_own_strategy_of_one_external_id(service: Service) -> None:
    """The strategy a delivery's token check reads is its own integration's: another
    integration's signal naming the same external id opens a position of its own."""
    assert service.send("SIGNAL_OPEN", signal(quantity=1)).status_code == 200
    ada = post(service, "/api/users", {"email": "ada@example.com"}).json()["users"]
    sandbox = f"sandbox-{next(u['id'] for u in ada if u['email'] == 'ada@example.com')}"
    post(service, f"/api/accounts/{sandbox}/deposits", {"amount": 5000})
    integration = {"name": "ada", "user": "ada@example.com", "account": sandbox}
    token = post(service, "/api/integrations", integration).json()["token"]
    assert service.send("INTEGRATION_APPROVED", token=token).status_code == 200
    opened = service.send("SIGNAL_OPEN", signal(quantity=1), token=token)
    assert opened.status_code == 200, opened.text
    rows = service.rows(
        "SELECT strategies.integration_id, positions.account_id FROM strategies"
        " JOIN positions ON positions.strategy_id = strategies.id"
        " WHERE positions.status = 'open' ORDER BY strategies.id"
    )
    assert len({row["integration_id"] for row in rows}) == 2
    assert len({row["account_id"] for row in rows}) == 2
