"""Instruments: a provider ticker mapped to a broker symbol, with its order rules.

Pure values and checks; no I/O. The checks raise the protocol's typed errors, in the order
the protocol fixes: precision, then too low (quantity or notional), then too high.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import ROUND_DOWN, Decimal

from app.errors import InvalidQuantityPrecision, QuantityTooHigh, QuantityTooLow
from app.sessions import ALWAYS, Sessions, parse_sessions
from app.settings import InstrumentConfig
from app.values import value


@value
class Instrument:
    ticker: str
    symbol: str
    quantity_step: Decimal
    min_quantity: Decimal
    max_quantity: Decimal | None
    min_notional: Decimal
    sessions: Sessions
    price: Decimal | None
    significant_digits: int | None = None
    """Set for venues that count precision in significant digits; the step is then unused."""

    @classmethod
    def from_config(cls, config: InstrumentConfig) -> Instrument:
        sessions = (
            ALWAYS
            if config.sessions == "always"
            else parse_sessions(config.sessions.timezone, config.sessions.windows)
        )
        return cls(
            ticker=config.ticker,
            symbol=config.symbol,
            quantity_step=config.quantity_step,
            min_quantity=config.min_quantity,
            max_quantity=config.max_quantity,
            min_notional=config.min_notional,
            sessions=sessions,
            price=config.price,
        )

    def check_precision(self, quantity: Decimal) -> None:
        if self.significant_digits is not None:
            digits = len(quantity.normalize().as_tuple().digits)
            if digits > self.significant_digits:
                raise InvalidQuantityPrecision(
                    f"{self.ticker} takes at most {self.significant_digits} significant digits; "
                    f"{quantity} has {digits}"
                )
            return
        if quantity % self.quantity_step != 0:
            raise InvalidQuantityPrecision(
                f"{self.ticker} trades in steps of {self.quantity_step}; {quantity} is not one"
            )

    def check_size(self, quantity: Decimal, *, price: Decimal | None) -> None:
        """Min and max quantity, and (with a price) min notional."""
        if quantity <= 0 or quantity < self.min_quantity:
            raise QuantityTooLow(
                f"{self.ticker} needs at least {self.min_quantity} units; got {quantity}"
            )
        notional = None if price is None else quantity * price
        if notional is not None and notional < self.min_notional:
            raise QuantityTooLow(
                f"{self.ticker} orders need a notional of at least {self.min_notional}; "
                f"{quantity} at {price} is {notional}"
            )
        if self.max_quantity is not None and quantity > self.max_quantity:
            raise QuantityTooHigh(
                f"{self.ticker} allows at most {self.max_quantity} units; got {quantity}"
            )

    def floor_to_step(self, quantity: Decimal) -> Decimal:
        """The quantity rounded down to the step (unchanged, digits and all, when on it)."""
        if self.significant_digits is not None:
            exponent = quantity.adjusted() - self.significant_digits + 1
            unit = Decimal(1).scaleb(exponent)
            return quantity if quantity % unit == 0 else quantity.quantize(unit, ROUND_DOWN)
        remainder = quantity % self.quantity_step
        return quantity - remainder if remainder else quantity


def instruments_by_ticker(configs: Iterable[InstrumentConfig]) -> Mapping[str, Instrument]:
    return {config.ticker: Instrument.from_config(config) for config in configs}
