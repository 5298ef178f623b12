"""The live broker: any exchange ccxt supports, behind :class:`app.broker.Broker`.

This is the one module that imports ccxt, and it is imported only when an account uses
it, so a paper-only service never pays ccxt's import time and memory. ccxt's shapes become
the project's value objects here, and ccxt's errors the project's errors in one mapping.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ccxt.async_support as ccxt_async

from app.broker import Fill, OrderReport, OrderRequest, OrderStatus
from app.errors import (
    BrokerUnavailable,
    InsufficientFunds,
    InvalidCredentials,
    MarketClosed,
    OrderRejected,
    ProtocolError,
    SignalbridgeError,
    UnsupportedInstrument,
)
from app.instruments import Instrument
from app.sessions import ALWAYS, NEVER
from app.settings import InstrumentConfig

ResultT = TypeVar("ResultT")

Exchange = Any  # ccxt's exchange classes are untyped


def create_exchange(
    exchange_id: str,
    *,
    api_key: str | None,
    secret: str | None,
    sandbox: bool,
    timeout_seconds: float,
    api_url: str | None = None,
) -> Exchange:
    """One async ccxt exchange, rate limiting on, spot markets only.

    ``api_url`` sends every API call to one base URL instead (a local fake exchange in
    tests, or a proxy): each of the exchange's API URLs keeps its path under that base.
    """
    try:
        exchange_class = getattr(ccxt_async, exchange_id)
    except AttributeError:
        raise ValueError(f"ccxt has no exchange {exchange_id!r}") from None
    exchange = exchange_class(
        {
            "apiKey": api_key,
            "secret": secret,
            "enableRateLimit": True,
            "timeout": int(timeout_seconds * 1000),
            "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False},
        }
    )
    if sandbox:
        exchange.set_sandbox_mode(True)
    if api_url is not None:
        exchange.urls["api"] = _rebase(exchange.urls["api"], api_url.rstrip("/"))
    return exchange


def _rebase(urls: Any, base: str) -> Any:
    if isinstance(urls, str):
        return base + urlsplit(urls).path
    if isinstance(urls, dict):
        return {key: _rebase(value, base) for key, value in urls.items()}
    return urls


# ccxt's precision modes (ccxt.DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE)
DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE = 2, 3, 4
FINAL_STATUSES = {"closed", "canceled", "expired", "rejected"}


def _decimal(value: Any) -> Decimal | None:
    """ccxt's numbers (strings, with ``exchange.number = str``) as exact decimals."""
    if value is None or value == "":
        return None
    return Decimal(str(value))


def instrument_from_market(
    market: Mapping[str, Any],
    *,
    ticker: str,
    precision_mode: int,
    override: InstrumentConfig | None = None,
) -> Instrument:
    """An exchange market's order rules as an :class:`Instrument`, in every precision mode;
    the fields a config instrument sets explicitly win."""
    precision = _decimal(market.get("precision", {}).get("amount"))
    step, significant = Decimal(0), None
    if precision is not None:
        if precision_mode == TICK_SIZE:
            step = precision
        elif precision_mode == DECIMAL_PLACES:
            step = Decimal(1).scaleb(-int(precision))
        elif precision_mode == SIGNIFICANT_DIGITS:
            significant = int(precision)
    limits = market.get("limits", {})
    values: dict[str, Any] = {
        "ticker": ticker,
        "symbol": market["symbol"],
        "quantity_step": step if step > 0 else Decimal("1e-18"),
        "min_quantity": _decimal(limits.get("amount", {}).get("min")) or Decimal(0),
        "max_quantity": _decimal(limits.get("amount", {}).get("max")),
        "min_notional": _decimal(limits.get("cost", {}).get("min")) or Decimal(0),
        "sessions": ALWAYS if market.get("active", True) is not False else NEVER,
        "price": None,
        "significant_digits": significant,
    }
    if override is not None:
        for field in override.model_fields_set & {
            "quantity_step",
            "min_quantity",
            "max_quantity",
            "min_notional",
            "sessions",
        }:
            values[field] = getattr(Instrument.from_config(override), field)
        if "quantity_step" in override.model_fields_set:
            values["significant_digits"] = None
    return Instrument(**values)


class CcxtBroker:
    """One exchange account through ccxt. Build it with :func:`create_exchange`."""

    def __init__(
        self,
        exchange: Exchange,
        *,
        overrides: Iterable[InstrumentConfig] = (),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        exchange.number = str  # every number ccxt parses stays a string: exact as Decimal
        self._exchange = exchange
        self._overrides = {config.ticker: config for config in overrides}
        self._instruments: dict[str, Instrument] = {}
        self._last_quotes: dict[str, Decimal] = {}
        self._clock = clock

    is_live = True
    is_local = False

    async def start(self) -> None:
        """Load (or reload) the exchange's markets and rebuild the instruments."""
        markets = await self._call(self._exchange.load_markets(True))
        by_id = {market["id"]: market for market in markets.values()}
        instruments = {}
        for ticker, override in self._overrides.items():
            market = markets.get(override.symbol) or by_id.get(ticker)
            if market is not None:
                instruments[ticker] = self._instrument(market, ticker, override)
        for market_id, market in by_id.items():
            if market.get("spot", True) and market_id not in instruments:
                instruments[market_id] = self._instrument(market, market_id, None)
        self._instruments = instruments

    def _instrument(
        self, market: Mapping[str, Any], ticker: str, override: InstrumentConfig | None
    ) -> Instrument:
        return instrument_from_market(
            market, ticker=ticker, precision_mode=self._exchange.precisionMode, override=override
        )

    def instrument(self, ticker: str) -> Instrument | None:
        return self._instruments.get(ticker)

    async def quote(self, symbol: str) -> Decimal:
        ticker = await self._call(self._exchange.fetch_ticker(symbol))
        for field in ("last", "close", "ask", "bid"):
            price = _decimal(ticker.get(field))
            if price is not None and price > 0:
                self._last_quotes[symbol] = price
                return price
        raise BrokerUnavailable(f"the exchange gave no price for {symbol}")

    async def submit(self, order: OrderRequest) -> OrderReport:
        params = {"clientOrderId": order.client_order_id}
        try:
            answer = await self._exchange.create_order(
                order.symbol, "market", order.side, str(order.quantity), None, params
            )
        except ccxt_async.BaseError as exc:
            raise self._translate(exc, order) from exc
        return await self._report(answer, order.client_order_id, order.symbol)

    async def fetch_order(self, client_order_id: str, *, symbol: str) -> OrderReport | None:
        try:
            answer = await self._exchange.fetch_order(
                None, symbol, {"clientOrderId": client_order_id}
            )
        except ccxt_async.OrderNotFound:
            return None
        except ccxt_async.BaseError as exc:
            raise self._translate(exc, None) from exc
        return await self._report(answer, client_order_id, symbol)

    async def balances(self) -> Mapping[str, Decimal]:
        balance = await self._call(self._exchange.fetch_balance())
        free = balance.get("free", {})
        return {asset: amount for asset, value in free.items() if (amount := _decimal(value))}

    async def close(self) -> None:
        await self._exchange.close()

    async def _report(
        self, answer: Mapping[str, Any], client_order_id: str, symbol: str
    ) -> OrderReport:
        """Normalize ccxt's order; fetch it or its trades when the answer is incomplete."""
        order_id = str(answer.get("id") or "")
        if answer.get("status") not in FINAL_STATUSES and order_id:
            answer = await self._call(self._exchange.fetch_order(order_id, symbol))
        filled = _decimal(answer.get("filled")) or Decimal(0)
        trades = list(answer.get("trades") or [])
        if filled and not trades and self._exchange.has.get("fetchOrderTrades"):
            trades = await self._call(self._exchange.fetch_order_trades(order_id, symbol))
        fills = tuple(self._fill(trade, order_id, index) for index, trade in enumerate(trades))
        if filled and sum((fill.quantity for fill in fills), Decimal(0)) != filled:
            fills = (self._aggregate_fill(answer, order_id, filled),)
        status = answer.get("status")
        amount = _decimal(answer.get("amount"))
        report_status: OrderStatus
        if status == "open" and not filled:
            report_status = "pending"
        elif filled and (amount is None or filled >= amount):
            report_status = "filled"
        elif filled:
            report_status = "partially_filled"
        else:
            report_status = "rejected"
        return OrderReport(
            client_order_id=client_order_id,
            broker_order_id=order_id,
            status=report_status,
            fills=fills,
            reason=None if filled else f"the exchange reports the order {status}",
        )

    def _fill(self, trade: Mapping[str, Any], order_id: str, index: int) -> Fill:
        price = _decimal(trade.get("price")) or Decimal(0)
        return Fill(
            fill_id=str(trade.get("id") or f"{order_id}-{index}"),
            quantity=_decimal(trade.get("amount")) or Decimal(0),
            price=price,
            fee=self._fee_in_quote(trade.get("fee"), trade.get("symbol"), price),
            at=self._when(trade.get("timestamp")),
        )

    def _aggregate_fill(self, answer: Mapping[str, Any], order_id: str, filled: Decimal) -> Fill:
        price = _decimal(answer.get("average"))
        if price is None:
            cost = _decimal(answer.get("cost")) or Decimal(0)
            price = cost / filled
        return Fill(
            fill_id=f"{order_id}-all",
            quantity=filled,
            price=price,
            fee=self._fee_in_quote(answer.get("fee"), answer.get("symbol"), price),
            at=self._when(answer.get("timestamp")),
        )

    def _fee_in_quote(self, fee: Any, symbol: Any, price: Decimal) -> Decimal:
        """The fee in the quote currency; a fee charged in the base asset is converted at
        the fill price."""
        if not fee:
            return Decimal(0)
        cost = _decimal(fee.get("cost")) or Decimal(0)
        base = str(symbol or "").split("/")[0]
        return cost * price if fee.get("currency") == base and base else cost

    def _when(self, timestamp: Any) -> datetime:
        if timestamp is None:
            return self._clock()
        return datetime.fromtimestamp(int(timestamp) / 1000, tz=UTC)

    async def _call(self, call: Awaitable[ResultT]) -> ResultT:
        try:
            return await call
        except ccxt_async.BaseError as exc:
            raise self._translate(exc, None) from exc

    def _translate(self, error: Exception, order: OrderRequest | None) -> SignalbridgeError:
        """ccxt's errors as the project's: a refusal, or an unknown outcome (503)."""
        message = f"the exchange answered {type(error).__name__}: {error}"[:500]
        if isinstance(error, ccxt_async.InsufficientFunds):
            return InsufficientFunds(message)
        if isinstance(error, ccxt_async.BadSymbol):
            return UnsupportedInstrument(message)
        if isinstance(error, ccxt_async.MarketClosed):
            return MarketClosed(message)
        if isinstance(error, ccxt_async.AuthenticationError):
            return InvalidCredentials(message)
        if isinstance(error, ccxt_async.InvalidOrder | ccxt_async.BadRequest):
            return self._explain(order, message)
        if isinstance(error, ccxt_async.OperationFailed):
            return BrokerUnavailable(message)
        return OrderRejected(message)

    def _explain(self, order: OrderRequest | None, message: str) -> SignalbridgeError:
        """The quantity error the market's rules explain, else a generic refusal."""
        if order is not None:
            instrument = next(
                (i for i in self._instruments.values() if i.symbol == order.symbol), None
            )
            if instrument is not None:
                try:
                    instrument.check_precision(order.quantity)
                    instrument.check_size(order.quantity, price=self._last_quotes.get(order.symbol))
                except ProtocolError as explained:
                    return explained
        return OrderRejected(message)
