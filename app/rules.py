"""The position manager's rules: pure checks and sizing over plain values.

``plan_open`` runs the protocol's checks for ``SIGNAL_OPEN`` in their fixed order (after
credentials, which the caller has checked):

``UnsupportedInstrument`` -> ``InvalidQuantityPrecision`` -> ``QuantityTooLow`` ->
``QuantityTooHigh`` -> ``MarketClosed`` -> ``PositionAlreadyExists`` -> ``InsufficientFunds``.

Sizing: the provider's quantity must be on the instrument's step; it is then multiplied by
the strategy's multiplier and floored to the step, and the size checks apply to the result.

Funds model (paper and cash accounts alike):

* ``free = cash - reserved - short_collateral``, where ``reserved`` is what order intents
  still waiting for their fill have set aside and ``short_collateral`` is, for every open
  short, its entry notional times ``1 + short_margin`` (the proceeds plus the margin);
* a buy needs ``quantity * quote * (1 + slippage) * (1 + fee)`` of free funds, so cash never
  goes below zero through a buy;
* a short sell needs ``quantity * quote * short_margin`` plus the fee, and only where the
  account allows shorts (a margin account: a short's loss beyond its collateral can take
  cash below zero, which is what margin means);
* allocation: the new position's notional may be at most ``allocation_percent`` of equity.

Closing orders are never refused for funds: reducing risk is always allowed.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from app.errors import (
    InsufficientFunds,
    MarketClosed,
    PositionAlreadyExists,
    QuantityTooHigh,
    UnsupportedInstrument,
)
from app.instruments import Instrument
from app.values import value

Side = Literal["buy", "sell"]
Direction = Literal["long", "short"]
BASIS_POINT = Decimal("0.0001")
HUNDRED = Decimal(100)


@value
class StrategyRules:
    quantity_multiplier: Decimal = Decimal(1)
    max_order_quantity: Decimal | None = None
    allocation_percent: Decimal = HUNDRED


@value
class AccountTerms:
    allow_short: bool
    short_margin: Decimal
    fee_bps: Decimal
    slippage_bps: Decimal


@value
class Funds:
    cash: Decimal
    reserved: Decimal
    short_collateral: Decimal
    equity: Decimal

    @property
    def free(self) -> Decimal:
        return self.cash - self.reserved - self.short_collateral


# Funds no order is refused for (unless its strategy allocates nothing): on PostgreSQL an
# open's order is planned with these before its funds are read, in the statement that also
# makes its intent, and planned again with the funds read (app.intents.reserve_open).
UNLIMITED = Funds(
    cash=Decimal("1e30"), reserved=Decimal(0), short_collateral=Decimal(0), equity=Decimal("1e30")
)


@value
class OrderPlan:
    """What to send: the sized quantity, and the funds to set aside until it fills."""

    instrument: Instrument
    side: Side
    quantity: Decimal
    reserve: Decimal


def side_for(direction: Direction, *, closing: bool = False) -> Side:
    opening_side: Side = "buy" if direction == "long" else "sell"
    if not closing:
        return opening_side
    return "sell" if opening_side == "buy" else "buy"


def check_session(instrument: Instrument, *, now: datetime) -> None:
    if not instrument.sessions.is_open(now):
        raise MarketClosed(
            f"the market for {instrument.ticker} is closed now "
            f"(sessions: {instrument.sessions.describe()})"
        )


def plan_open(
    instrument: Instrument | None,
    ticker: str,
    *,
    direction: Direction,
    quantity: Decimal,
    quote: Decimal,
    rules: StrategyRules,
    terms: AccountTerms,
    funds: Funds,
    has_open_position: bool,
    now: datetime,
) -> OrderPlan:
    """Run the ``SIGNAL_OPEN`` checks in order and size the order, or raise the typed error."""
    if instrument is None:
        raise UnsupportedInstrument(f"{ticker} is not an instrument this account trades")
    instrument.check_precision(quantity)
    sized = instrument.floor_to_step(quantity * rules.quantity_multiplier)
    instrument.check_size(sized, price=quote)
    if rules.max_order_quantity is not None and sized > rules.max_order_quantity:
        raise QuantityTooHigh(
            f"the strategy allows at most {rules.max_order_quantity} units an order; got {sized}"
        )
    check_session(instrument, now=now)
    if has_open_position:
        raise PositionAlreadyExists("the strategy already has an open position")
    side = side_for(direction)
    reserve = _required_funds(side, quantity=sized, quote=quote, terms=terms)
    notional = sized * quote
    if side == "sell" and not terms.allow_short:
        raise InsufficientFunds("this account does not allow short positions")
    if reserve > funds.free:
        raise InsufficientFunds(f"the order needs {reserve} of free funds; {funds.free} is free")
    allowed = funds.equity * rules.allocation_percent / HUNDRED
    if notional > allowed:
        raise InsufficientFunds(
            f"the order's notional {notional} is over the strategy's allocation of "
            f"{rules.allocation_percent}% of equity ({allowed})"
        )
    return OrderPlan(instrument=instrument, side=side, quantity=sized, reserve=reserve)


def _required_funds(
    side: Side, *, quantity: Decimal, quote: Decimal, terms: AccountTerms
) -> Decimal:
    notional = quantity * quote
    fee_rate = terms.fee_bps * BASIS_POINT
    if side == "buy":
        return notional * (1 + terms.slippage_bps * BASIS_POINT) * (1 + fee_rate)
    return notional * terms.short_margin + notional * fee_rate


def short_collateral(entry_notional: Decimal, *, terms: AccountTerms) -> Decimal:
    """What an open short of this entry notional holds out of free funds."""
    return entry_notional * (1 + terms.short_margin)
