"""Live trading: the real service and the real ccxt client against a local fake exchange."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import Service, ServiceFactory, check_invariants, envelope, signal
from tests.fake_exchange import FakeExchange, FakeExchangeServer

BTC = {"id": "btc-trend", "name": "BTC trend"}


@pytest.fixture
def exchange() -> Iterator[FakeExchangeServer]:
    # Timeouts are real: the client waits 0.5 s, the fake holds a "slow" answer 0.8 s.
    with FakeExchangeServer(FakeExchange(api_key="live-key", delay_seconds=0.8)) as server:
        yield server


def live_overrides(url: str) -> dict[str, Any]:
    return {
        "accounts": [
            {
                "name": "live",
                "user": "demo@example.com",
                "broker": "ccxt",
                "exchange": "binance",
                "sandbox": False,
                "currency": "USDT",
                "api_key_env": "TEST_EXCHANGE_KEY",
                "secret_env": "TEST_EXCHANGE_SECRET",
                "api_url": url,
            }
        ],
        "integrations": [
            {
                "name": "demo-proquant",
                "user": "demo@example.com",
                "account": "live",
                "tokens": ["demo-token"],
            }
        ],
        "instruments": [],
        "broker_timeout_seconds": 0.5,
    }


@pytest.fixture
def live(
    start_service: ServiceFactory,
    exchange: FakeExchangeServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Service:
    monkeypatch.setenv("TEST_EXCHANGE_KEY", "live-key")
    monkeypatch.setenv("TEST_EXCHANGE_SECRET", "live-secret")
    return start_service(brokers="app", **live_overrides(exchange.url))


def buy(quantity: str = "0.01", *, ticker: str = "BTCUSDT") -> dict[str, Any]:
    return signal(ticker=ticker, quantity=Decimal(quantity), strategy=BTC)


def book(service: Service) -> dict[str, Any]:
    result: dict[str, Any] = service.api("/api/accounts/live/book")
    return result


def test_a_buy_fills_on_the_exchange(live: Service, exchange: FakeExchangeServer) -> None:
    response = live.send("SIGNAL_OPEN", buy())
    assert response.status_code == 200, response.text
    assert exchange.fake.create_order_calls == 1
    [position] = live.api("/api/positions", status="open")["positions"]
    assert position["ticker"] == "BTCUSDT"
    assert Decimal(position["quantity"]) == Decimal("0.01")
    [fill] = live.rows("SELECT price, fee FROM fills")
    assert Decimal(fill["price"]) == Decimal(65000)
    assert Decimal(fill["fee"]) == Decimal("0.65")  # 0.1% of 650 USDT
    derived = book(live)
    assert Decimal(derived["capital"]) == Decimal(100000)  # the opening balance
    assert Decimal(derived["balance"]) == Decimal(100000) - 650 - Decimal("0.65")
    check_invariants_live(live)


def test_close_sells_what_was_bought(live: Service, exchange: FakeExchangeServer) -> None:
    live.send("SIGNAL_OPEN", buy())
    exchange.fake.prices["BTCUSDT"] = Decimal(66000)
    assert live.send("SIGNAL_CLOSE", buy()).status_code == 200
    [closed] = live.api("/api/positions", status="closed")["positions"]
    assert Decimal(closed["realized_pnl"]) == Decimal(10)
    check_invariants_live(live)


def test_a_partial_fill_opens_the_filled_quantity_and_flags_it(
    live: Service, exchange: FakeExchangeServer
) -> None:
    exchange.fake.next_order("partial")
    assert live.send("SIGNAL_OPEN", buy("0.02")).status_code == 200
    [position] = live.api("/api/positions", status="open")["positions"]
    assert Decimal(position["quantity"]) == Decimal("0.01")
    assert "partially filled" in position["attention"]
    check_invariants_live(live)


@pytest.mark.parametrize(
    ("data", "error_type"),
    [
        (buy(ticker="DOGEBTC"), "UnsupportedInstrument"),
        (buy("0.000001"), "InvalidQuantityPrecision"),
        (buy("0.00001"), "QuantityTooLow"),  # under the 5 USDT notional
        (buy("10000"), "QuantityTooHigh"),
        (buy("2"), "InsufficientFunds"),  # 130,000 USDT of 100,000 free
        (signal(ticker="XRPUSDT", quantity=10, strategy=BTC), "MarketClosed"),
    ],
)
def test_pre_flight_checks_come_from_the_market_and_send_nothing(
    live: Service, exchange: FakeExchangeServer, data: dict[str, Any], error_type: str
) -> None:
    response = live.send("SIGNAL_OPEN", data)
    assert response.status_code in (422, 401), response.text
    assert response.json()["type"] == error_type
    assert exchange.fake.create_order_calls == 0


@pytest.mark.parametrize(
    ("behaviour", "status", "answer"),
    [
        ("reject:-2010", 422, ("type", "InsufficientFunds")),
        ("reject:-2010:Market is closed.", 422, ("type", "MarketClosed")),
        ("reject:-1121", 422, ("type", "UnsupportedInstrument")),
        ("reject:-1013", 422, ("error", "order_rejected")),  # LOT_SIZE the rules do not explain
        ("reject:-1013:Filter failure: NOTIONAL", 422, ("error", "order_rejected")),
        # ccxt reports a key refused after successful signed calls as a temporary ban
        ("reject:-2015", 503, ("error", "broker_unavailable")),
    ],
)
def test_exchange_refusals_map_to_their_answers(
    live: Service,
    exchange: FakeExchangeServer,
    behaviour: str,
    status: int,
    answer: tuple[str, str],
) -> None:
    exchange.fake.next_order(behaviour)
    response = live.send("SIGNAL_OPEN", buy())
    assert response.status_code == status, response.text
    key, value = answer
    assert response.json()[key] == value
    assert live.rows("SELECT status FROM orders")[0]["status"] == "rejected"
    assert live.api("/api/positions")["positions"] == []


def test_rate_limited_is_503_and_a_redelivery_executes_once(
    live: Service, exchange: FakeExchangeServer
) -> None:
    exchange.fake.next_order("rate_limit")
    body = envelope("SIGNAL_OPEN", buy(), timestamp=live.clock.milliseconds())
    first = live.post(body)
    assert first.status_code == 503
    assert "x-proquant-error" not in first.headers
    assert live.post(body).status_code == 200
    assert len(live.api("/api/positions", status="open")["positions"]) == 1
    assert len(exchange.fake.orders) == 1
    check_invariants_live(live)


def test_a_timeout_after_the_order_was_placed_is_found_not_resent(
    live: Service, exchange: FakeExchangeServer
) -> None:
    exchange.fake.next_order("timeout_after_place")
    response = live.send("SIGNAL_OPEN", buy())
    assert response.status_code == 200, response.text
    assert exchange.fake.create_order_calls == 1
    assert len(live.api("/api/positions", status="open")["positions"]) == 1
    assert len(live.rows("SELECT id FROM ledger_transactions WHERE kind = 'trade'")) == 1
    check_invariants_live(live)


def test_a_timeout_before_the_order_was_placed_is_503_with_nothing_open(
    live: Service, exchange: FakeExchangeServer
) -> None:
    exchange.fake.next_order("timeout_before_place")
    response = live.send("SIGNAL_OPEN", buy())
    assert response.status_code == 503
    assert live.rows("SELECT status FROM orders")[0]["status"] == "rejected"
    assert live.api("/api/positions")["positions"] == []


def test_a_restart_settles_a_pending_intent_before_serving(
    start_service: ServiceFactory, live: Service, exchange: FakeExchangeServer
) -> None:
    exchange.fake.next_order("timeout_after_place")
    exchange.fake.next_fetch_order("unavailable")  # the lookup fails too: outcome unknown
    body = envelope("SIGNAL_OPEN", buy(), timestamp=live.clock.milliseconds())
    assert live.post(body).status_code == 503
    assert live.rows("SELECT status FROM orders")[0]["status"] == "pending"

    restarted = start_service(brokers="app", clock=live.clock, **live_overrides(exchange.url))

    assert restarted.rows("SELECT status FROM orders")[0]["status"] == "filled"
    assert restarted.post(body).status_code == 200
    assert len(exchange.fake.orders) == 1
    assert len(restarted.api("/api/positions", status="open")["positions"]) == 1
    check_invariants_live(restarted)


def check_invariants_live(service: Service) -> None:
    check_invariants(service, account="live")


def test_a_close_needs_the_base_asset_free_on_the_exchange(
    live: Service, exchange: FakeExchangeServer
) -> None:
    live.send("SIGNAL_OPEN", buy())
    exchange.fake.balances["BTC"].free = Decimal(0)  # sold elsewhere, by hand
    response = live.send("SIGNAL_CLOSE", buy())
    assert response.status_code == 422
    assert response.json()["type"] == "InsufficientFunds"
    assert exchange.fake.create_order_calls == 1  # the open only
    assert len(live.api("/api/positions", status="open")["positions"]) == 1


def test_a_restart_flags_a_position_the_exchange_contradicts(
    start_service: ServiceFactory, live: Service, exchange: FakeExchangeServer
) -> None:
    live.send("SIGNAL_OPEN", buy())
    exchange.fake.balances["BTC"].free = Decimal("0.004")
    restarted = start_service(brokers="app", clock=live.clock, **live_overrides(exchange.url))
    [position] = restarted.api("/api/positions", status="open")["positions"]
    assert Decimal(position["quantity"]) == Decimal("0.01")  # not silently changed
    assert "the exchange holds 0.00400000 BTC" in position["attention"]


@pytest.mark.parametrize("key", ["live-key", "a-key-the-exchange-refuses"])
def test_an_account_that_cannot_start_answers_503_and_the_service_still_serves(
    start_service: ServiceFactory, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.setenv("TEST_EXCHANGE_KEY", key)
    monkeypatch.setenv("TEST_EXCHANGE_SECRET", "live-secret")
    with FakeExchangeServer(FakeExchange(api_key="live-key")) as exchange:
        url = exchange.url if key != "live-key" else "http://127.0.0.1:9"  # closed port
        service = start_service(brokers="app", **live_overrides(url))
        response = service.send("SIGNAL_OPEN", buy())
    assert response.status_code == 503
    assert "reconciled" in response.json()["message"]
    assert service.rows("SELECT id FROM orders") == []


def test_the_background_reconciler_gives_up_after_n_lookups(
    start_service: ServiceFactory, exchange: FakeExchangeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_EXCHANGE_KEY", "live-key")
    monkeypatch.setenv("TEST_EXCHANGE_SECRET", "live-secret")
    service = start_service(
        brokers="app",
        reconcile_interval_seconds=0.1,
        reconcile_max_lookups=2,
        **live_overrides(exchange.url),
    )
    exchange.fake.next_order("timeout_before_place")
    exchange.fake.next_fetch_order(*["unavailable"] * 3)
    assert service.send("SIGNAL_OPEN", buy()).status_code == 503
    deadline = time.monotonic() + 10
    while service.rows("SELECT status FROM orders")[0]["status"] == "pending":
        assert time.monotonic() < deadline, "the reconciler never settled the intent"
        time.sleep(0.05)
    [order] = service.rows("SELECT status, reason FROM orders")
    assert order["status"] == "rejected"
    assert "after 2 lookups" in order["reason"]
    assert service.api("/api/positions")["positions"] == []


def test_a_paper_account_can_fill_at_an_exchanges_public_prices(
    start_service: ServiceFactory, exchange: FakeExchangeServer
) -> None:
    exchange.fake.prices["BTCUSDT"] = Decimal("70123.45")
    paper = {
        "name": "demo-paper",
        "user": "demo@example.com",
        "initial_deposit": "100000",
        "quotes": "ccxt:binance",
        "api_url": exchange.url,
    }
    service = start_service(brokers="app", accounts=[paper])
    assert service.send("SIGNAL_OPEN", buy()).status_code == 200
    [fill] = service.rows("SELECT price FROM fills")
    assert Decimal(fill["price"]) == Decimal("70123.45")
    assert exchange.fake.create_order_calls == 0  # simulated fills
    check_invariants(service)
