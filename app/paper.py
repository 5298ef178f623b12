"""The paper broker: fills every market order at once, at the current quote.

It is a broker like any other (it implements :class:`app.broker.Broker`), not a flag inside
a live one. Quotes are the configured instrument prices, or, with ``quotes``, another
source's (real prices from an exchange's public tickers: forward testing). A buy fills at
``quote * (1 + slippage)``, a sell at ``quote * (1 - slippage)``; the fee is ``fee_bps`` of
the fill's notional, rounded half-even to 8 decimal places. Its order book and balances live
in memory: after a restart it knows no orders, so start-up reconciliation treats an intent it
does not know as never placed. The ledger, not this object, is the record of a paper account.
It remembers the last ``MAX_REMEMBERED_ORDERS`` orders (for lookups and repeated submits, which
concern the orders still in flight), so its memory does not grow with every order it fills.
A thousand is thirty times what a server at concurrency 32 has in flight, and about 0.7 MiB;
a delivery redelivered after more orders than that finds its unrecorded fill forgotten and
is filled again, which the ledger, recording only what it was told, still gets right.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

from app.broker import Fill, OrderReport, OrderRequest
from app.errors import OrderRejected
from app.instruments import Instrument, instruments_by_ticker
from app.settings import AccountConfig, Settings

QuoteSource = Callable[[str], Awaitable[Decimal]]

BASIS_POINT = Decimal("0.0001")
FEE_UNIT = Decimal("0.00000001")  # fees are rounded half-even to 8 decimal places
MAX_REMEMBERED_ORDERS = 1_000


class PaperBroker:
    def __init__(
        self,
        instruments: Mapping[str, Instrument],
        *,
        currency: str,
        cash: Decimal = Decimal(0),
        fee_bps: Decimal = Decimal(0),
        slippage_bps: Decimal = Decimal(0),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        quotes: QuoteSource | None = None,
    ) -> None:
        self._instruments = dict(instruments)
        self._prices = {i.symbol: i.price for i in instruments.values() if i.price is not None}
        self._quotes = quotes
        self._currency = currency
        self._fee_rate = fee_bps * BASIS_POINT
        self._slippage = slippage_bps * BASIS_POINT
        self._clock = clock
        self._orders: dict[str, OrderReport] = {}  # the most recent, oldest first
        self._placed = 0
        self._balances: dict[str, Decimal] = {currency: cash}

    def set_price(self, symbol: str, price: Decimal) -> None:
        """Move the simulated market (tests and forward-testing drivers use this)."""
        self._prices[symbol] = price

    is_live = False

    @property
    def is_local(self) -> bool:
        return self._quotes is None  # else its prices come from an exchange

    @classmethod
    def for_account(
        cls,
        settings: Settings,
        account: AccountConfig,
        *,
        clock: Callable[[], datetime],
        quotes: QuoteSource | None = None,
    ) -> PaperBroker:
        """The paper broker of one account: the configured instruments, its terms."""
        return cls(
            instruments_by_ticker(settings.instruments),
            currency=account.currency,
            cash=account.initial_deposit,
            fee_bps=account.fee_bps,
            slippage_bps=account.slippage_bps,
            clock=clock,
            quotes=quotes,
        )

    async def start(self) -> None:
        return None

    def instrument(self, ticker: str) -> Instrument | None:
        return self._instruments.get(ticker)

    async def quote(self, symbol: str) -> Decimal:
        if self._quotes is not None:
            return await self._quotes(symbol)
        try:
            return self._prices[symbol]
        except KeyError:
            raise OrderRejected(f"the paper broker has no price for {symbol}") from None

    async def submit(self, order: OrderRequest) -> OrderReport:
        known = self._orders.get(order.client_order_id)
        if known is not None:
            return known
        quote = await self.quote(order.symbol)
        sign = 1 if order.side == "buy" else -1
        price = quote * (1 + sign * self._slippage) if self._slippage else quote
        fee = (order.quantity * price * self._fee_rate).quantize(FEE_UNIT, ROUND_HALF_EVEN)
        self._placed += 1
        number = self._placed
        fill = Fill(
            fill_id=f"paper-fill-{number}",
            quantity=order.quantity,
            price=price,
            fee=fee,
            at=self._clock(),
        )
        report = OrderReport(
            client_order_id=order.client_order_id,
            broker_order_id=f"paper-{number}",
            status="filled",
            fills=(fill,),
        )
        self._orders[order.client_order_id] = report
        if len(self._orders) > MAX_REMEMBERED_ORDERS:
            del self._orders[next(iter(self._orders))]
        base = order.symbol.split("/")[0]
        self._balances[base] = self._balances.get(base, Decimal(0)) + sign * order.quantity
        self._balances[self._currency] -= sign * order.quantity * price + fee
        return report

    async def fetch_order(self, client_order_id: str, *, symbol: str) -> OrderReport | None:
        return self._orders.get(client_order_id)

    async def balances(self) -> Mapping[str, Decimal]:
        return dict(self._balances)

    async def close(self) -> None:
        return None
