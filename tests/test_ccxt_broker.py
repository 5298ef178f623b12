"""The ccxt broker's exchange-independent parts: the one error mapping; market reloads."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from app import errors
from app.ccxt_broker import CcxtBroker, ccxt_async, create_exchange
from tests.fake_exchange import FakeExchange, FakeExchangeServer


class Unused:
    """An exchange stand-in: the mapping never calls the exchange."""

    number: object = float
    precisionMode = 4


@pytest.mark.parametrize(
    ("ccxt_error", "ours"),
    [
        ("InsufficientFunds", errors.InsufficientFunds),
        ("BadSymbol", errors.UnsupportedInstrument),
        ("MarketClosed", errors.MarketClosed),
        ("AuthenticationError", errors.InvalidCredentials),
        ("PermissionDenied", errors.InvalidCredentials),
        ("InvalidOrder", errors.OrderRejected),
        ("BadRequest", errors.OrderRejected),
        ("NetworkError", errors.BrokerUnavailable),
        ("RequestTimeout", errors.BrokerUnavailable),
        ("ExchangeNotAvailable", errors.BrokerUnavailable),
        ("RateLimitExceeded", errors.BrokerUnavailable),
        ("DDoSProtection", errors.BrokerUnavailable),
        ("BadResponse", errors.BrokerUnavailable),
        ("OperationFailed", errors.BrokerUnavailable),
        ("ExchangeError", errors.OrderRejected),
    ],
)
def test_each_ccxt_error_maps_once(ccxt_error: str, ours: type[Exception]) -> None:
    broker = CcxtBroker(Unused())
    translated = broker._translate(getattr(ccxt_async, ccxt_error)("boom"), None)
    assert type(translated) is ours
    assert ccxt_error in translated.message


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_reloading_markets_picks_up_changed_rules() -> None:
    with FakeExchangeServer(FakeExchange(api_key="k")) as server:
        exchange = create_exchange(
            "binance", api_key="k", secret="s", sandbox=False, timeout_seconds=2, api_url=server.url
        )
        broker = CcxtBroker(exchange)
        try:
            await broker.start()
            before = broker.instrument("BTCUSDT")
            assert before is not None
            assert before.min_quantity == Decimal("0.00001")
            markets = server.fake.markets
            markets["BTCUSDT"] = dataclasses.replace(markets["BTCUSDT"], min_qty=Decimal("0.001"))
            await broker.start()
            after = broker.instrument("BTCUSDT")
            assert after is not None
            assert after.min_quantity == Decimal("0.001")
        finally:
            await broker.close()
