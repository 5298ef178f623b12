"""The operator API through a real server: keys, filters, books."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from app.database import Database
from tests.conftest import Service, signal

ENDPOINTS = [
    "/api/positions",
    "/api/accounts/demo-paper/book",
    "/api/events",
    "/api/instruments",
    "/api/versions",
]


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("key", [None, "", "wrong-key"])
def test_every_operator_endpoint_needs_the_key(
    service: Service, path: str, key: str | None
) -> None:
    headers = {} if key is None else {"x-api-key": key}
    response = service.client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.json()["message"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_every_operator_endpoint_answers_with_the_key(service: Service, path: str) -> None:
    assert isinstance(service.api(path), dict)


def test_positions_filter_by_status_and_strategy(service: Service) -> None:
    service.send("SIGNAL_OPEN", signal())
    other = {"id": "other", "name": "Other"}
    service.send("SIGNAL_OPEN", signal(ticker="BTCUSDT", quantity=Decimal("0.01"), strategy=other))
    service.send("SIGNAL_CLOSE", signal(strategy=other, ticker="BTCUSDT"))
    assert len(service.api("/api/positions")["positions"]) == 2
    [open_position] = service.api("/api/positions", status="open")["positions"]
    assert open_position["ticker"] == "XAUUSD"
    [closed] = service.api("/api/positions", strategy="other")["positions"]
    assert closed["status"] == "closed"


def test_book_decimals_are_strings(service: Service) -> None:
    service.send("SIGNAL_OPEN", signal(ticker="BTCUSDT", quantity=Decimal("0.0123")))
    book = service.api("/api/accounts/demo-paper/book")
    assert book["holding"] == {"BTCUSDT": "0.0123"}
    [trade] = book["trades"]
    assert trade == {
        "at": trade["at"],
        "type": "buy",
        "ticker": "BTCUSDT",
        "price": "65000.00",
        "quantity": "0.0123",
        "fee": "0.07995000",
    }
    assert isinstance(book["balance"], str)
    assert [point["equity"] for point in book["value"]] == ["99999.92005000"]


def test_unknown_account_is_404(service: Service) -> None:
    response = service.client.get(
        "/api/accounts/nobody/book", headers={"x-api-key": "demo-operator-key"}
    )
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_events_show_outcome_answer_and_timings(service: Service) -> None:
    service.send("SIGNAL_OPEN", signal())
    service.send("SIGNAL_OPEN", signal(position_id="again"))
    failed, done = service.api("/api/events")["events"]
    assert (done["state"], done["answer_status"]) == ("done", 200)
    assert set(done["timings"]) >= {"receive_ms", "checks_ms", "broker_ms"}
    assert (failed["state"], failed["error_type"]) == ("failed", "PositionAlreadyExists")
    assert '"type":"PositionAlreadyExists"' in failed["answer_body"]
    assert service.api("/api/events", state="failed")["events"] == [failed]


def test_the_broker_phase_is_timed_by_the_clock_not_the_loops_cached_time(
    service: Service,
) -> None:
    # uvloop's loop.time() is libuv's time of the loop's pass, in whole milliseconds: a paper
    # fill, which never waits, measured 0.0 by it.
    service.send("SIGNAL_OPEN", signal())
    [done] = service.api("/api/events")["events"]
    assert 0 < done["timings"]["broker_ms"] < 1000


def test_a_delivery_is_received_when_it_arrives_not_when_its_first_turn_comes(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With others in flight a delivery's first turn lets each of them run a stage first
    # (Database.take_turns): its stored time of arrival must not include that wait.
    arrived = service.clock.now
    take_turns = Database.take_turns

    async def after_the_others(self: Database) -> None:
        service.clock.now = arrived + timedelta(seconds=5)
        await take_turns(self)

    monkeypatch.setattr(Database, "take_turns", after_the_others)
    service.send("SIGNAL_OPEN", signal())
    [done] = service.api("/api/events")["events"]
    assert done["state"] == "done"
    assert datetime.fromisoformat(done["received_at"]) == arrived


def test_instruments_show_rules_quote_and_session(service: Service) -> None:
    instruments = {i["ticker"]: i for i in service.api("/api/instruments")["instruments"]}
    assert set(instruments) == {"XAUUSD", "EURUSD", "AAPL", "BTCUSDT"}
    aapl = instruments["AAPL"]
    assert aapl["open_now"] is True
    assert aapl["quotes"] == {"demo-paper": "230.00"}
    assert aapl["sessions"] == "Mon-Fri 09:30-16:00 America/New_York"


def test_bodies_over_the_limit_are_refused_on_operator_endpoints_too(service: Service) -> None:
    response = service.client.request(
        "GET", "/api/events", content=b"x" * (64 * 1024 + 1), headers={"x-api-key": "k"}
    )
    assert response.status_code == 413


def test_unknown_paths_answer_json_404(service: Service) -> None:
    response = service.client.get("/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
