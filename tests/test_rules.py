"""The position manager's rules, as plain functions: no server, no database."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from app import errors
from app.instruments import Instrument
from app.rules import AccountTerms, Funds, StrategyRules, plan_open
from app.sessions import ALWAYS, parse_sessions

NOW = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)
GOLD = Instrument(
    ticker="XAUUSD",
    symbol="XAU/USD",
    quantity_step=Decimal("0.01"),
    min_quantity=Decimal("0.01"),
    max_quantity=Decimal(100),
    min_notional=Decimal(10),
    sessions=ALWAYS,
    price=Decimal(2000),
)
CASH = AccountTerms(
    allow_short=False, short_margin=Decimal(1), fee_bps=Decimal(10), slippage_bps=Decimal(5)
)
RICH = Funds(
    cash=Decimal(100000), reserved=Decimal(0), short_collateral=Decimal(0), equity=Decimal(100000)
)


def plan(quantity: str, **changes: object):  # type: ignore[no-untyped-def]
    arguments: dict[str, object] = {
        "direction": "long",
        "quantity": Decimal(quantity),
        "quote": Decimal(2000),
        "rules": StrategyRules(),
        "terms": CASH,
        "funds": RICH,
        "has_open_position": False,
        "now": NOW,
    }
    instrument = changes.pop("instrument", GOLD)
    arguments.update(changes)
    return plan_open(instrument, "XAUUSD", **arguments)  # type: ignore[arg-type]


def test_a_buy_reserves_cost_with_slippage_and_fee() -> None:
    planned = plan("10")
    assert planned.side == "buy"
    assert planned.quantity == Decimal("10")
    assert planned.reserve == Decimal(20000) * Decimal("1.0005") * Decimal("1.001")


def test_the_multiplier_scales_and_floors_to_the_step() -> None:
    planned = plan("1.01", rules=StrategyRules(quantity_multiplier=Decimal("0.5")))
    assert planned.quantity == Decimal("0.50")


@pytest.mark.parametrize(
    ("quantity", "changes", "error"),
    [
        ("1", {"instrument": None}, errors.UnsupportedInstrument),
        ("0.001", {"instrument": None}, errors.UnsupportedInstrument),
        ("0.001", {}, errors.InvalidQuantityPrecision),
        ("0.001", {"has_open_position": True}, errors.InvalidQuantityPrecision),
        ("0.001", {"quote": Decimal(1)}, errors.InvalidQuantityPrecision),
        ("0.01", {"quote": Decimal(1)}, errors.QuantityTooLow),
        ("101", {}, errors.QuantityTooHigh),
        ("101", {"has_open_position": True}, errors.QuantityTooHigh),
        ("5", {"rules": StrategyRules(max_order_quantity=Decimal(4))}, errors.QuantityTooHigh),
        ("5", {"has_open_position": True}, errors.PositionAlreadyExists),
        ("60", {}, errors.InsufficientFunds),
        ("5", {"direction": "short"}, errors.InsufficientFunds),
        ("30", {"rules": StrategyRules(allocation_percent=Decimal(50))}, errors.InsufficientFunds),
    ],
)
def test_checks_fail_in_the_protocols_order(
    quantity: str, changes: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        plan(quantity, **changes)


def test_market_closed_comes_before_position_already_exists() -> None:
    weekdays = parse_sessions("UTC", ["Mon-Fri 09:00-17:00"])
    saturday = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    instrument = dataclasses.replace(GOLD, sessions=weekdays)
    with pytest.raises(errors.MarketClosed):
        plan("1", instrument=instrument, now=saturday, has_open_position=True)


def test_reserved_funds_count_against_a_new_order() -> None:
    busy = Funds(
        cash=Decimal(30000),
        reserved=Decimal(15000),
        short_collateral=Decimal(0),
        equity=Decimal(30000),
    )
    with pytest.raises(errors.InsufficientFunds):
        plan("10", funds=busy)


def test_a_short_needs_margin_where_the_account_allows_shorts() -> None:
    margin = AccountTerms(
        allow_short=True, short_margin=Decimal("0.5"), fee_bps=Decimal(0), slippage_bps=Decimal(0)
    )
    planned = plan("10", direction="short", terms=margin)
    assert (planned.side, planned.reserve) == ("sell", Decimal(10000))
