"""The fake Binance answers a real ccxt binance client the way the real exchange does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest

from app.ccxt_broker import create_exchange
from tests.fake_exchange import FakeExchange, FakeExchangeServer

pytestmark = pytest.mark.anyio

DELAY = 1.2  # seconds the timeout knobs hold an answer; the client gives up after 1


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def running_server() -> Iterator[FakeExchangeServer]:
    with FakeExchangeServer() as running:
        yield running


@pytest.fixture
def server(running_server: FakeExchangeServer) -> FakeExchangeServer:
    """The module's server with a fresh exchange behind it."""
    running_server.fake = FakeExchange(delay_seconds=DELAY)
    return running_server


@asynccontextmanager
async def connect(server: FakeExchangeServer, *, api_key: str = "k") -> AsyncIterator[Any]:
    exchange = create_exchange(
        "binance", api_key=api_key, secret="s", sandbox=False, timeout_seconds=1, api_url=server.url
    )
    exchange.timeout_on_exit = 0  # close() waits 250 ms for TLS transports; there are none
    exchange.enableRateLimit = False  # client-side pacing only: 200 ms after exchangeInfo
    try:
        yield exchange
    finally:
        await exchange.close()


async def error(call: Awaitable[Any]) -> Exception:
    """The error a ccxt call raises (tests don't import ccxt: compare class names)."""
    try:
        await call
    except Exception as exc:
        return exc
    raise AssertionError("the call succeeded")


async def buy(exchange: Any, client_order_id: str = "sb-abc-o1") -> Any:
    """A market buy of 0.01 BTC, as the broker sends it."""
    params = {"clientOrderId": client_order_id}
    return await exchange.create_order("BTC/USDT", "market", "buy", "0.01", None, params)


async def find(exchange: Any, client_order_id: str = "sb-abc-o1") -> Any:
    """The order by its client id, as the broker looks it up."""
    return await exchange.fetch_order(None, "BTC/USDT", {"clientOrderId": client_order_id})


def dec(value: Any) -> Decimal:
    return Decimal(str(value))


async def test_load_markets(server: FakeExchangeServer) -> None:
    async with connect(server) as exchange:
        markets = await exchange.load_markets()

    btc = markets["BTC/USDT"]
    assert exchange.precisionMode == 4  # TICK_SIZE
    assert (btc["id"], btc["spot"], btc["active"]) == ("BTCUSDT", True, True)
    assert dec(btc["precision"]["amount"]) == Decimal("0.00001")
    assert dec(btc["precision"]["price"]) == Decimal("0.01")
    assert dec(btc["limits"]["amount"]["min"]) == Decimal("0.00001")
    assert dec(btc["limits"]["amount"]["max"]) == 9000
    assert dec(btc["limits"]["cost"]["min"]) == 5
    assert markets["ETH/USDT"]["active"] is True
    assert markets["XRP/USDT"]["active"] is False
    assert sorted(server.fake.requests) == [
        "GET /api/v3/exchangeInfo",
        "GET /sapi/v1/margin/allPairs",
        "GET /sapi/v1/margin/isolated/allPairs",
    ]


async def test_ticker_and_balance(server: FakeExchangeServer) -> None:
    async with connect(server) as exchange:
        ticker = await exchange.fetch_ticker("BTC/USDT")
        balance = await exchange.fetch_balance()

    assert dec(ticker["last"]) == 65000
    assert dec(balance["free"]["USDT"]) == 100000
    assert dec(balance["total"]["BTC"]) == 1


async def test_market_buy_fills_and_is_found_by_client_id(server: FakeExchangeServer) -> None:
    fake = server.fake
    async with connect(server) as exchange:
        order = await exchange.create_order(
            "BTC/USDT", "market", "buy", 0.01, params={"newClientOrderId": "sb-abc-o1"}
        )
        by_client_id = await find(exchange)
        by_orig_id = await exchange.fetch_order(
            None, "BTC/USDT", {"origClientOrderId": "sb-abc-o1"}
        )
        by_id = await exchange.fetch_order(order["id"], "BTC/USDT")
        trades = await exchange.fetch_order_trades(order["id"], "BTC/USDT")

    assert (order["status"], order["clientOrderId"]) == ("closed", "sb-abc-o1")
    assert dec(order["filled"]) == Decimal("0.01")
    assert dec(order["average"]) == 65000
    assert dec(order["cost"]) == 650
    assert order["fee"]["currency"] == "USDT"
    assert dec(order["fee"]["cost"]) == Decimal("0.65")
    assert [dec(trade["amount"]) for trade in order["trades"]] == [Decimal("0.01")]
    for found in (by_client_id, by_orig_id, by_id):
        assert (found["id"], found["status"]) == (order["id"], "closed")
        assert dec(found["filled"]) == Decimal("0.01")
    assert [(trade["order"], trade["side"]) for trade in trades] == [(order["id"], "buy")]
    assert dec(trades[0]["fee"]["cost"]) == Decimal("0.65")
    assert fake.create_order_calls == 1
    assert fake.free("USDT") == Decimal("99349.35")
    assert fake.free("BTC") == Decimal("1.01")


async def test_market_sell_moves_balances_back(server: FakeExchangeServer) -> None:
    async with connect(server) as exchange:
        order = await exchange.create_order("BTC/USDT", "market", "sell", 0.5)

    assert order["status"] == "closed"
    assert order["clientOrderId"]  # ccxt makes one up when none is given
    assert server.fake.free("BTC") == Decimal("0.5")
    assert server.fake.free("USDT") == Decimal(100000 + 32500) - Decimal("32.5")


async def test_partial_fills(server: FakeExchangeServer) -> None:
    server.fake.next_order("partial", "partial_open")
    async with connect(server) as exchange:
        expired = await exchange.create_order("BTC/USDT", "market", "buy", 0.01)
        still_open = await exchange.create_order("BTC/USDT", "market", "buy", 0.01)
        open_orders = await exchange.fetch_open_orders("BTC/USDT")

    assert expired["status"] == "expired"
    assert (dec(expired["amount"]), dec(expired["filled"])) == (Decimal("0.01"), Decimal("0.005"))
    assert still_open["status"] == "open"
    assert dec(still_open["filled"]) == Decimal("0.005")
    assert [order["id"] for order in open_orders] == [still_open["id"]]
    assert server.fake.free("BTC") == Decimal("1.01")


@pytest.mark.parametrize(
    ("knob", "symbol", "side", "amount", "expected"),
    [
        pytest.param(None, "BTC/USDT", "buy", 10, "InsufficientFunds", id="buy-over-balance"),
        pytest.param(None, "BTC/USDT", "sell", 2, "InsufficientFunds", id="sell-over-holding"),
        pytest.param(None, "BTC/USDT", "buy", 9001, "InvalidOrder", id="lot-size"),
        pytest.param(None, "BTC/USDT", "buy", 0.00005, "BadRequest", id="notional"),
        pytest.param(None, "XRP/USDT", "buy", 100, "MarketClosed", id="halted"),
        pytest.param("delist", "ETH/USDT", "buy", 0.01, "BadSymbol", id="unknown-symbol"),
        pytest.param("reject:-2010", "BTC/USDT", "buy", 0.01, "InsufficientFunds", id="-2010"),
        pytest.param("reject:-1013:Filter failure: NOTIONAL", "BTC/USDT", "buy", 0.01,
                     "BadRequest", id="-1013"),
        pytest.param("rate_limit", "BTC/USDT", "buy", 0.01, "DDoSProtection", id="429"),
        pytest.param("unavailable", "BTC/USDT", "buy", 0.01, "ExchangeNotAvailable", id="503"),
    ],
)  # fmt: skip
async def test_refusals(
    server: FakeExchangeServer,
    knob: str | None,
    symbol: str,
    side: str,
    amount: float,
    expected: str,
) -> None:
    fake = server.fake
    async with connect(server) as exchange:
        await exchange.load_markets()
        if knob == "delist":
            del fake.markets["ETHUSDT"]
        elif knob is not None:
            fake.next_order(knob)
        refused = await error(exchange.create_order(symbol, "market", side, amount))

    assert type(refused).__name__ == expected, refused
    assert fake.create_order_calls == 1
    assert fake.orders == {}
    assert (fake.free("USDT"), fake.free("BTC")) == (Decimal(100000), Decimal(1))


async def test_duplicate_client_order_id(server: FakeExchangeServer) -> None:
    fake = server.fake
    async with connect(server) as exchange:
        await buy(exchange)
        duplicate = await error(buy(exchange))
        assert type(duplicate).__name__ == "InvalidOrder"
        assert "Duplicate order sent." in str(duplicate)
        assert (fake.create_order_calls, len(fake.orders)) == (2, 1)

        # Binance itself only refuses a client id an open order uses: a filled one is reused.
        fake.unique_client_ids_among_open_only = True
        await buy(exchange)
    assert len(fake.orders) == 2


async def test_timeout_after_place_leaves_the_order(server: FakeExchangeServer) -> None:
    server.fake.next_order("timeout_after_place")
    async with connect(server) as exchange:
        timed_out = await error(buy(exchange))
        found = await find(exchange)

    assert type(timed_out).__name__ == "RequestTimeout"
    assert (found["clientOrderId"], found["status"]) == ("sb-abc-o1", "closed")
    assert server.fake.create_order_calls == 1


async def test_timeout_before_place_leaves_nothing(server: FakeExchangeServer) -> None:
    server.fake.next_order("timeout_before_place")
    async with connect(server) as exchange:
        timed_out = await error(buy(exchange))
        missing = await error(find(exchange))

    assert type(timed_out).__name__ == "RequestTimeout"
    assert type(missing).__name__ == "OrderNotFound"
    assert (server.fake.create_order_calls, server.fake.orders) == (1, {})


async def test_unknown_outcome_after_place(server: FakeExchangeServer) -> None:
    server.fake.next_order("unknown_after_place")
    async with connect(server) as exchange:
        unknown = await error(buy(exchange))
        found = await find(exchange)

    assert type(unknown).__name__ == "RequestTimeout"  # Binance's -1007, at once
    assert found["status"] == "closed"


async def test_order_lookup_failures(server: FakeExchangeServer) -> None:
    async with connect(server) as exchange:
        await buy(exchange)
        server.fake.next_fetch_order("not_found", "unavailable", "rate_limit", "timeout")
        failures = [type(await error(find(exchange))).__name__ for _ in range(4)]
        found = await find(exchange)

    assert failures == ["OrderNotFound", "ExchangeNotAvailable", "DDoSProtection", "RequestTimeout"]
    assert found["status"] == "closed"
    assert server.fake.fetch_order_calls == 5


async def test_authentication(server: FakeExchangeServer) -> None:
    async with connect(server, api_key="wrong") as exchange:
        refused = await error(exchange.load_markets())  # it reads the signed margin pairs
    assert type(refused).__name__ == "AuthenticationError"

    async with connect(server) as exchange:
        await exchange.fetch_balance()
        server.fake.api_key = "rotated"
        refused = await error(exchange.fetch_balance())
    # ccxt reads -2015 after a successful signed call as a temporary ban, not a bad key
    assert type(refused).__name__ == "DDoSProtection"
