"""The one mapping from ccxt's errors to the project's (the exchange-independent part)."""

from __future__ import annotations

import pytest

from app import errors
from app.ccxt_broker import CcxtBroker, ccxt_async


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
