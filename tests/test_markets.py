"""Exchange markets as instruments, in each of ccxt's precision modes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from app import errors
from app.ccxt_broker import DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE, instrument_from_market
from app.settings import AccountConfig, InstrumentConfig


def market(amount_precision: str, *, active: bool = True) -> dict[str, Any]:
    return {
        "id": "BTCUSDT",
        "symbol": "BTC/USDT",
        "active": active,
        "precision": {"amount": amount_precision, "price": "0.01"},
        "limits": {"amount": {"min": "0.0001", "max": "100"}, "cost": {"min": "5"}},
    }


def test_tick_size_mode_is_the_step() -> None:
    instrument = instrument_from_market(
        market("0.0001"), ticker="BTCUSDT", precision_mode=TICK_SIZE
    )
    assert instrument.quantity_step == Decimal("0.0001")
    assert (instrument.min_quantity, instrument.max_quantity) == (Decimal("0.0001"), Decimal(100))
    assert instrument.min_notional == Decimal(5)
    instrument.check_precision(Decimal("0.0123"))
    with pytest.raises(errors.InvalidQuantityPrecision):
        instrument.check_precision(Decimal("0.00001"))


def test_decimal_places_mode_becomes_a_step() -> None:
    instrument = instrument_from_market(
        market("3"), ticker="BTCUSDT", precision_mode=DECIMAL_PLACES
    )
    assert instrument.quantity_step == Decimal("0.001")
    with pytest.raises(errors.InvalidQuantityPrecision):
        instrument.check_precision(Decimal("0.0005"))


def test_significant_digits_mode_counts_digits() -> None:
    instrument = instrument_from_market(
        market("2"), ticker="BTCUSDT", precision_mode=SIGNIFICANT_DIGITS
    )
    assert instrument.significant_digits == 2
    instrument.check_precision(Decimal("0.00012"))
    instrument.check_precision(Decimal("1200"))
    with pytest.raises(errors.InvalidQuantityPrecision):
        instrument.check_precision(Decimal("0.000123"))
    assert instrument.floor_to_step(Decimal("0.000129")) == Decimal("0.00012")


def test_an_inactive_market_is_closed() -> None:
    instrument = instrument_from_market(
        market("0.0001", active=False), ticker="BTCUSDT", precision_mode=TICK_SIZE
    )
    assert instrument.sessions.describe().startswith("closed")


def test_config_fields_set_explicitly_override_the_exchange() -> None:
    override = InstrumentConfig(
        ticker="BTCUSDT", symbol="BTC/USDT", quantity_step=Decimal("0.01"), max_quantity=Decimal(1)
    )
    instrument = instrument_from_market(
        market("0.0001"), ticker="BTCUSDT", precision_mode=TICK_SIZE, override=override
    )
    assert instrument.quantity_step == Decimal("0.01")
    assert instrument.max_quantity == Decimal(1)
    assert instrument.min_notional == Decimal(5)  # not set in the override: the exchange's


def test_a_ccxt_account_cannot_allow_shorts() -> None:
    with pytest.raises(ValueError, match="spot"):
        AccountConfig(
            name="live", user="a@b.c", broker="ccxt", exchange="binance", allow_short=True
        )
