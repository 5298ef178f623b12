"""A fake Binance spot REST API on loopback, to drive a real ccxt ``binance`` client in tests.

It serves the endpoints ccxt's binance calls for spot market orders, with Binance's shapes:
numbers as strings, errors as ``{"code": ..., "msg": ...}`` with the HTTP status Binance uses.
Market orders fill at once at :attr:`FakeExchange.prices`, with a fee in the quote asset.
Scenario knobs (:meth:`FakeExchange.next_order`, :meth:`FakeExchange.next_fetch_order`) make
the next calls fail the ways the real exchange does. Signatures are not checked; the
``X-MBX-APIKEY`` header is.

Run it with :class:`FakeExchangeServer` (uvicorn in a thread) or the ``fake_exchange`` fixture
(load this module as a plugin for it: ``pytest_plugins = ["tests.fake_exchange"]`` in
tests/conftest.py, or ``pytest -p tests.fake_exchange``).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any
from urllib.parse import parse_qsl

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.server import Server

Params = dict[str, str]
Handler = Callable[[Params], Awaitable[Any]]

# Binance's answers per error code: HTTP status and default message.
ERRORS: dict[int, tuple[int, str]] = {
    -1003: (429, "Too many requests"),
    -1007: (
        503,
        "Timeout waiting for response from backend server. "
        "Send status unknown; execution status unknown.",
    ),
    -1013: (400, "Filter failure: LOT_SIZE"),
    -1100: (400, "Illegal characters found in a parameter."),
    -1102: (400, "Mandatory parameter was not sent, was empty/null, or malformed."),
    -1116: (400, "Invalid orderType."),
    -1117: (400, "Invalid side."),
    -1121: (400, "Invalid symbol."),
    -2010: (400, "Account has insufficient balance for requested action."),
    -2013: (400, "Order does not exist."),
    -2015: (401, "Invalid API-key, IP, or permissions for action."),
}
FAULTS = {"rate_limit", "unavailable", "timeout"}  # and "reject:<code>[:<msg>]"
ORDER_BEHAVIOURS = {
    "fill",
    "partial",
    "partial_open",
    "timeout_before_place",
    "timeout_after_place",
    "unknown_after_place",
    "rate_limit",
    "unavailable",
}
FETCH_BEHAVIOURS = {"answer", "not_found", "timeout", "rate_limit", "unavailable"}


class BinanceError(Exception):
    """An error answer: ``{"code": code, "msg": msg}`` with Binance's HTTP status."""

    def __init__(self, code: int, msg: str | None = None) -> None:
        status, default = ERRORS.get(code, (400, "Request rejected."))
        super().__init__(msg or default)
        self.code, self.msg, self.status = code, msg or default, status

    @classmethod
    def parse(cls, behaviour: str) -> BinanceError:
        """From a ``reject:<code>`` or ``reject:<code>:<msg>`` knob."""
        _, code, *msg = behaviour.split(":", 2)
        return cls(int(code), msg[0] if msg else None)

    def response(self) -> Response:
        return JSONResponse({"code": self.code, "msg": self.msg}, status_code=self.status)


@dataclass(frozen=True)
class MarketSpec:
    """One spot symbol's order rules (Binance's LOT_SIZE, NOTIONAL and PRICE_FILTER)."""

    symbol: str
    base: str
    quote: str
    step_size: Decimal = Decimal("0.00001")
    min_qty: Decimal = Decimal("0.00001")
    max_qty: Decimal = Decimal("9000")
    min_notional: Decimal = Decimal("5")
    tick_size: Decimal = Decimal("0.01")
    status: str = "TRADING"


DEFAULT_MARKETS = (
    MarketSpec("BTCUSDT", "BTC", "USDT"),
    MarketSpec("ETHUSDT", "ETH", "USDT", step_size=Decimal("0.0001"), min_qty=Decimal("0.0001")),
    MarketSpec(
        "XRPUSDT",
        "XRP",
        "USDT",
        step_size=Decimal("0.1"),
        min_qty=Decimal("0.1"),
        max_qty=Decimal("9000000"),
        tick_size=Decimal("0.0001"),
        status="BREAK",
    ),
)
DEFAULT_PRICES = {"BTCUSDT": Decimal(65000), "ETHUSDT": Decimal(3000), "XRPUSDT": Decimal("0.5")}
DEFAULT_BALANCES = {"USDT": Decimal(100000), "BTC": Decimal(1)}


@dataclass
class Balance:
    free: Decimal = Decimal(0)
    locked: Decimal = Decimal(0)


@dataclass
class Trade:
    id: int
    order_id: int
    symbol: str
    is_buyer: bool
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int


@dataclass
class Order:
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    orig_qty: Decimal
    executed_qty: Decimal
    cummulative_quote_qty: Decimal
    status: str
    time: int
    fills: list[Trade] = field(default_factory=list)


def text(value: Decimal) -> str:
    """A Binance number: a string with 8 decimals."""
    return f"{value:.8f}"


def now_ms() -> int:
    return int(time.time() * 1000)


class FakeExchange:
    """The exchange's state, knobs and counters, and :attr:`app`, its Starlette app."""

    def __init__(
        self,
        *,
        api_key: str = "k",
        markets: Sequence[MarketSpec] = DEFAULT_MARKETS,
        prices: Mapping[str, Decimal] = DEFAULT_PRICES,
        balances: Mapping[str, Decimal] = DEFAULT_BALANCES,
        fee_rate: Decimal = Decimal("0.001"),
        delay_seconds: float = 1.5,
        unique_client_ids_among_open_only: bool = False,
    ) -> None:
        self.api_key = api_key
        self.markets = {market.symbol: market for market in markets}
        self.prices = {symbol: Decimal(price) for symbol, price in prices.items()}
        self.balances = {asset: Balance(Decimal(free)) for asset, free in balances.items()}
        self.fee_rate = fee_rate
        self.delay_seconds = delay_seconds  # how long the timeout knobs hold the answer
        # Binance itself only refuses a newClientOrderId an OPEN order already uses.
        self.unique_client_ids_among_open_only = unique_client_ids_among_open_only
        self.orders: dict[int, Order] = {}
        self.orders_by_client_id: dict[str, Order] = {}
        self.trades: list[Trade] = []
        self.create_order_calls = 0
        self.fetch_order_calls = 0
        self.requests: list[str] = []  # "GET /api/v3/exchangeInfo", ... in arrival order
        self._order_behaviours: deque[str] = deque()
        self._fetch_behaviours: deque[str] = deque()
        self._ids = itertools.count(1001)
        public: dict[str, Handler] = {
            "/api/v3/ping": self._ping,
            "/api/v3/time": self._time,
            "/api/v3/exchangeInfo": self._exchange_info,
            "/api/v3/ticker/24hr": self._ticker,
        }
        signed: dict[tuple[str, str], Handler] = {
            ("GET", "/sapi/v1/margin/allPairs"): self._margin_pairs,
            ("GET", "/sapi/v1/margin/isolated/allPairs"): self._isolated_pairs,
            ("GET", "/api/v3/account"): self._account,
            ("POST", "/api/v3/order"): self._create_order,
            ("GET", "/api/v3/order"): self._fetch_order,
            ("GET", "/api/v3/openOrders"): self._open_orders,
            ("GET", "/api/v3/allOrders"): self._all_orders,
            ("GET", "/api/v3/myTrades"): self._my_trades,
        }
        routes = [Route(path, self._endpoint(handler, False)) for path, handler in public.items()]
        routes += [
            Route(path, self._endpoint(handler, True), methods=[method])
            for (method, path), handler in signed.items()
        ]
        self.app = Starlette(routes=routes)

    # knobs

    def next_order(self, *behaviours: str) -> None:
        """Queue how the next create_order calls go, one behaviour per call, then "fill".

        "fill", "partial" (half fills, EXPIRED), "partial_open" (half fills, PARTIALLY_FILLED),
        "reject:<code>[:<msg>]", "rate_limit" (429), "unavailable" (503, not placed),
        "timeout_before_place" (answers after delay_seconds, not placed),
        "timeout_after_place" (placed, answers after delay_seconds),
        "unknown_after_place" (placed, answers at once 503 with -1007 "execution status unknown").
        """
        self._order_behaviours.extend(_checked(behaviours, ORDER_BEHAVIOURS))

    def next_fetch_order(self, *behaviours: str) -> None:
        """Queue how the next order lookups (GET /api/v3/order) go, then "answer".

        "answer", "not_found" (-2013 even if the order exists), "timeout" (answers after
        delay_seconds), "rate_limit", "unavailable", "reject:<code>[:<msg>]".
        """
        self._fetch_behaviours.extend(_checked(behaviours, FETCH_BEHAVIOURS))

    def free(self, asset: str) -> Decimal:
        return self.balances.get(asset, Balance()).free

    # plumbing

    def _endpoint(self, handler: Handler, signed: bool) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            self.requests.append(f"{request.method} {request.url.path}")
            params = dict(request.query_params)
            params.update(parse_qsl((await request.body()).decode()))
            try:
                if signed:
                    self._authenticate(request, params)
                answer = await handler(params)
            except BinanceError as error:
                return error.response()
            return answer if isinstance(answer, Response) else JSONResponse(answer)

        return endpoint

    def _authenticate(self, request: Request, params: Params) -> None:
        if request.headers.get("X-MBX-APIKEY") != self.api_key:
            raise BinanceError(-2015)
        for name in ("timestamp", "signature"):
            if not params.get(name):
                raise BinanceError(-1102, f"Mandatory parameter '{name}' was not sent.")

    async def _fault(self, behaviour: str) -> Response | None:
        """The answer for a failure knob, or None to go on normally."""
        if behaviour == "rate_limit":
            response = BinanceError(-1003).response()
            response.headers["Retry-After"] = "1"
            return response
        if behaviour == "unavailable":
            return PlainTextResponse("Service Unavailable", status_code=503)
        if behaviour.startswith("reject:"):
            raise BinanceError.parse(behaviour)
        if behaviour in {"timeout", "timeout_before_place"}:
            await asyncio.sleep(self.delay_seconds)
        if behaviour == "timeout_before_place":
            return PlainTextResponse("Gateway Timeout", status_code=504)
        return None

    def _market(self, params: Params) -> MarketSpec:
        symbol = _required(params, "symbol")
        if symbol not in self.markets:
            raise BinanceError(-1121)
        return self.markets[symbol]

    # public endpoints

    async def _ping(self, _params: Params) -> Any:
        return {}

    async def _time(self, _params: Params) -> Any:
        return {"serverTime": now_ms()}

    async def _exchange_info(self, params: Params) -> Any:
        markets = [self._market(params)] if "symbol" in params else list(self.markets.values())
        return {
            "timezone": "UTC",
            "serverTime": now_ms(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                 "limit": 100},
            ],
            "exchangeFilters": [],
            "symbols": [_symbol_json(market) for market in markets],
        }  # fmt: skip

    async def _ticker(self, params: Params) -> Any:
        market = self._market(params)
        price = self.prices[market.symbol]
        spread = market.tick_size
        return {
            "symbol": market.symbol,
            "priceChange": text(Decimal(0)),
            "priceChangePercent": "0.000",
            "weightedAvgPrice": text(price),
            "prevClosePrice": text(price),
            "lastPrice": text(price),
            "lastQty": text(market.min_qty),
            "bidPrice": text(price - spread),
            "bidQty": "1.00000000",
            "askPrice": text(price + spread),
            "askQty": "1.00000000",
            "openPrice": text(price),
            "highPrice": text(price),
            "lowPrice": text(price),
            "volume": "1000.00000000",
            "quoteVolume": text(price * 1000),
            "openTime": now_ms() - 86_400_000,
            "closeTime": now_ms(),
            "firstId": 1,
            "lastId": 1000,
            "count": 1000,
        }

    # signed endpoints

    async def _margin_pairs(self, _params: Params) -> Any:
        return [
            {"id": index, "symbol": m.symbol, "base": m.base, "quote": m.quote,
             "isMarginTrade": True, "isBuyAllowed": True, "isSellAllowed": True}
            for index, m in enumerate(self.markets.values(), start=1)
            if m.status == "TRADING"
        ]  # fmt: skip

    async def _isolated_pairs(self, _params: Params) -> Any:
        return []

    async def _account(self, params: Params) -> Any:
        omit_zero = params.get("omitZeroBalances") == "true"
        return {
            "makerCommission": 10,
            "takerCommission": 10,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": text(self.fee_rate),
                "taker": text(self.fee_rate),
                "buyer": text(Decimal(0)),
                "seller": text(Decimal(0)),
            },
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": now_ms(),
            "accountType": "SPOT",
            "balances": [
                {"asset": asset, "free": text(balance.free), "locked": text(balance.locked)}
                for asset, balance in self.balances.items()
                if not omit_zero or balance.free or balance.locked
            ],
            "permissions": ["SPOT"],
            "uid": 354937868,
        }

    async def _create_order(self, params: Params) -> Any:
        self.create_order_calls += 1
        behaviour = self._order_behaviours.popleft() if self._order_behaviours else "fill"
        if (fault := await self._fault(behaviour)) is not None:
            return fault
        order = self._place(params, behaviour)
        if behaviour == "timeout_after_place":
            await asyncio.sleep(self.delay_seconds)
        if behaviour == "unknown_after_place":
            raise BinanceError(-1007)
        return _placed_json(order, params.get("newOrderRespType", "ACK"))

    async def _fetch_order(self, params: Params) -> Any:
        self.fetch_order_calls += 1
        behaviour = self._fetch_behaviours.popleft() if self._fetch_behaviours else "answer"
        if (fault := await self._fault(behaviour)) is not None:
            return fault
        market = self._market(params)
        if "orderId" in params:
            order = self.orders.get(_integer(params, "orderId"))
        elif "origClientOrderId" in params:
            order = self.orders_by_client_id.get(params["origClientOrderId"])
        else:
            raise BinanceError(
                -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty."
            )
        if behaviour == "not_found" or order is None or order.symbol != market.symbol:
            raise BinanceError(-2013)
        return _order_json(order)

    async def _open_orders(self, params: Params) -> Any:
        symbol = self._market(params).symbol if "symbol" in params else None
        return [
            _order_json(order)
            for order in self.orders.values()
            if order.status in {"NEW", "PARTIALLY_FILLED"} and symbol in {None, order.symbol}
        ]

    async def _all_orders(self, params: Params) -> Any:
        symbol = self._market(params).symbol
        orders = [
            order
            for order in self.orders.values()
            if order.symbol == symbol
            and order.order_id >= int(params.get("orderId", 0))
            and int(params.get("startTime", 0)) <= order.time <= int(params.get("endTime", 2**63))
        ]
        return [_order_json(order) for order in orders[: int(params.get("limit", 500))]]

    async def _my_trades(self, params: Params) -> Any:
        symbol = self._market(params).symbol
        trades = [
            trade
            for trade in self.trades
            if trade.symbol == symbol
            and int(params.get("orderId", trade.order_id)) == trade.order_id
            and trade.id >= int(params.get("fromId", 0))
            and int(params.get("startTime", 0)) <= trade.time <= int(params.get("endTime", 2**63))
        ]
        return [_trade_json(trade) for trade in trades[: int(params.get("limit", 500))]]

    # the matching engine

    def _place(self, params: Params, behaviour: str) -> Order:
        """Check the order as Binance does, fill it and move the balances."""
        market = self._market(params)
        side = _required(params, "side")
        if side not in {"BUY", "SELL"}:
            raise BinanceError(-1117)
        if _required(params, "type") != "MARKET":
            raise BinanceError(-1116, "The fake exchange takes MARKET orders only.")
        quantity = _decimal(params, "quantity")
        client_order_id = params.get("newClientOrderId") or f"fake-{next(self._ids)}"
        previous = self.orders_by_client_id.get(client_order_id)
        if previous is not None and (
            not self.unique_client_ids_among_open_only
            or previous.status in {"NEW", "PARTIALLY_FILLED"}
        ):
            raise BinanceError(-2010, "Duplicate order sent.")
        if market.status != "TRADING":
            raise BinanceError(-2010, "Market is closed.")
        if not (market.min_qty <= quantity <= market.max_qty) or (
            (quantity - market.min_qty) % market.step_size
        ):
            raise BinanceError(-1013, "Filter failure: LOT_SIZE")
        price = self.prices[market.symbol]
        if quantity * price < market.min_notional:
            raise BinanceError(-1013, "Filter failure: NOTIONAL")
        base = self.balances.setdefault(market.base, Balance())
        quote = self.balances.setdefault(market.quote, Balance())
        needed = quantity * price * (1 + self.fee_rate) if side == "BUY" else quantity
        if needed > (quote.free if side == "BUY" else base.free):
            raise BinanceError(-2010)

        partial = behaviour in {"partial", "partial_open"}
        filled = (quantity / 2).quantize(market.step_size, ROUND_DOWN) if partial else quantity
        cost = filled * price
        fee = (cost * self.fee_rate).quantize(Decimal("1e-8"))
        if side == "BUY":
            quote.free -= cost + fee
            base.free += filled
        else:
            base.free -= filled
            quote.free += cost - fee
        status = {"partial": "EXPIRED", "partial_open": "PARTIALLY_FILLED"}.get(behaviour, "FILLED")
        order = Order(
            order_id=next(self._ids),
            client_order_id=client_order_id,
            symbol=market.symbol,
            side=side,
            orig_qty=quantity,
            executed_qty=filled,
            cummulative_quote_qty=cost,
            status=status,
            time=now_ms(),
        )
        if filled:
            trade = Trade(
                id=next(self._ids),
                order_id=order.order_id,
                symbol=market.symbol,
                is_buyer=side == "BUY",
                price=price,
                qty=filled,
                commission=fee,
                commission_asset=market.quote,
                time=order.time,
            )
            order.fills.append(trade)
            self.trades.append(trade)
        self.orders[order.order_id] = order
        self.orders_by_client_id[client_order_id] = order
        return order


def _checked(behaviours: Sequence[str], allowed: set[str]) -> Sequence[str]:
    for behaviour in behaviours:
        if behaviour not in allowed and not behaviour.startswith("reject:"):
            raise ValueError(f"unknown behaviour {behaviour!r}; expected one of {sorted(allowed)}")
    return behaviours


def _required(params: Params, name: str) -> str:
    value = params.get(name)
    if not value:
        raise BinanceError(
            -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
        )
    return value


def _integer(params: Params, name: str) -> int:
    value = _required(params, name)
    if not value.isdigit():
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'.")
    return int(value)


def _decimal(params: Params, name: str) -> Decimal:
    value = _required(params, name)
    try:
        return Decimal(value)
    except ArithmeticError:
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'.") from None


def _symbol_json(market: MarketSpec) -> dict[str, Any]:
    return {
        "symbol": market.symbol,
        "status": market.status,
        "baseAsset": market.base,
        "baseAssetPrecision": 8,
        "quoteAsset": market.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": True,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": text(market.tick_size),
             "maxPrice": "1000000.00000000", "tickSize": text(market.tick_size)},
            {"filterType": "LOT_SIZE", "minQty": text(market.min_qty),
             "maxQty": text(market.max_qty), "stepSize": text(market.step_size)},
            {"filterType": "MARKET_LOT_SIZE", "minQty": text(Decimal(0)),
             "maxQty": text(market.max_qty), "stepSize": text(Decimal(0))},
            {"filterType": "NOTIONAL", "minNotional": text(market.min_notional),
             "applyMinToMarket": True, "maxNotional": "9000000.00000000",
             "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT", "MARGIN"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }  # fmt: skip


def _order_fields(order: Order) -> dict[str, Any]:
    return {
        "symbol": order.symbol,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "price": text(Decimal(0)),
        "origQty": text(order.orig_qty),
        "executedQty": text(order.executed_qty),
        "origQuoteOrderQty": text(Decimal(0)),
        "cummulativeQuoteQty": text(order.cummulative_quote_qty),
        "status": order.status,
        "timeInForce": "GTC",
        "type": "MARKET",
        "side": order.side,
        "workingTime": order.time,
        "selfTradePreventionMode": "EXPIRE_MAKER",
    }


def _placed_json(order: Order, response_type: str) -> dict[str, Any]:
    """The answer to POST /api/v3/order for newOrderRespType ACK, RESULT or FULL."""
    if response_type == "ACK":
        return {
            "symbol": order.symbol,
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": order.client_order_id,
            "transactTime": order.time,
        }
    answer = {**_order_fields(order), "transactTime": order.time}
    if response_type == "FULL":
        answer["fills"] = [
            {"price": text(trade.price), "qty": text(trade.qty),
             "commission": text(trade.commission), "commissionAsset": trade.commission_asset,
             "tradeId": trade.id}
            for trade in order.fills
        ]  # fmt: skip
    return answer


def _order_json(order: Order) -> dict[str, Any]:
    """GET /api/v3/order's shape."""
    return {
        **_order_fields(order),
        "stopPrice": text(Decimal(0)),
        "icebergQty": text(Decimal(0)),
        "time": order.time,
        "updateTime": order.time,
        "isWorking": True,
    }


def _trade_json(trade: Trade) -> dict[str, Any]:
    return {
        "symbol": trade.symbol,
        "id": trade.id,
        "orderId": trade.order_id,
        "orderListId": -1,
        "price": text(trade.price),
        "qty": text(trade.qty),
        "quoteQty": text(trade.price * trade.qty),
        "commission": text(trade.commission),
        "commissionAsset": trade.commission_asset,
        "time": trade.time,
        "isBuyer": trade.is_buyer,
        "isMaker": False,
        "isBestMatch": True,
    }


class FakeExchangeServer:
    """A :class:`FakeExchange` served on 127.0.0.1 in a background thread.

    It serves whatever :attr:`fake` is at the time of each request: assign a new
    :class:`FakeExchange` to start over without restarting the server.
    """

    def __init__(self, fake: FakeExchange | None = None) -> None:
        self.fake = fake or FakeExchange()
        self._server = Server(self._app, lifespan="off")
        self.url = self._server.url

    def __enter__(self) -> FakeExchangeServer:
        self._server.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.stop()

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.fake.app(scope, receive, send)


@pytest.fixture(name="fake_exchange")
def fake_exchange_fixture() -> Iterator[FakeExchangeServer]:
    """A running fake Binance with the default state; ``.fake`` is its state, ``.url`` its
    base URL for ``create_exchange(..., api_url=...)``."""
    with FakeExchangeServer() as server:
        yield server
