"""The broker seam: the small contract every execution venue implements.

The rest of the service sees only these value objects; a venue's own shapes and errors are
translated inside its implementation (the paper broker in :mod:`app.paper`). A venue raises
only :class:`~app.errors.BrokerUnavailable` (outcome unknown: query before retrying),
:class:`~app.errors.OrderRejected` (refused: do not retry unchanged), or the protocol error
that explains a refusal (``InsufficientFunds``, ``QuantityTooLow``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol

from app.instruments import Instrument
from app.values import value

OrderStatus = Literal["pending", "filled", "partially_filled", "rejected"]
FINAL_STATUSES: frozenset[OrderStatus] = frozenset({"filled", "partially_filled", "rejected"})


@value
class OrderRequest:
    """A market order. ``client_order_id`` is derived from the event, so a retry of the same
    event asks for the same order."""

    client_order_id: str
    symbol: str
    side: Literal["buy", "sell"]
    quantity: Decimal


@value
class Fill:
    fill_id: str
    quantity: Decimal
    price: Decimal
    fee: Decimal
    at: datetime


@value
class OrderReport:
    """The venue's answer about one order, normalized."""

    client_order_id: str
    broker_order_id: str
    status: OrderStatus
    fills: tuple[Fill, ...] = ()
    reason: str | None = None

    @property
    def filled_quantity(self) -> Decimal:
        return sum((fill.quantity for fill in self.fills), Decimal(0))


class Broker(Protocol):
    """One account's venue."""

    is_live: bool
    """True when the venue's balances are the truth (an exchange); False for paper."""

    @property
    def is_local(self) -> bool:
        """True when it answers from this process's memory and never waits on a network
        (a paper broker on prices set by hand): its calls need no timeout."""
        ...

    async def start(self) -> None:
        """Get ready to trade: load (or reload) markets. Called at start-up and periodically."""
        ...

    def instrument(self, ticker: str) -> Instrument | None:
        """The provider ticker's instrument and its order rules on this venue, if it trades it."""
        ...

    async def quote(self, symbol: str) -> Decimal:
        """The current price of ``symbol`` in the account currency."""
        ...

    async def submit(self, order: OrderRequest) -> OrderReport:
        """Place a market order; submitting a client order id again returns the first order."""
        ...

    async def fetch_order(self, client_order_id: str, *, symbol: str) -> OrderReport | None:
        """The order with this client id, or None when the venue has no such order."""
        ...

    async def balances(self) -> Mapping[str, Decimal]:
        """Free balance per currency or asset, as the venue sees it."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
