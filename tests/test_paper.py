"""The paper broker's book: bounded, and still answering for the orders in flight."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from app import paper
from app.broker import OrderRequest
from app.instruments import instruments_by_ticker
from app.settings import load_settings
from tests.conftest import CONFIG


def test_the_book_remembers_the_latest_orders_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paper, "MAX_REMEMBERED_ORDERS", 3)
    asyncio.run(_fill_five())


async def _fill_five() -> None:
    instruments = instruments_by_ticker(load_settings(CONFIG).instruments)
    broker = paper.PaperBroker(instruments, currency="USD", cash=Decimal(10**9))
    symbol = instruments["XAUUSD"].symbol
    reports = [
        await broker.submit(OrderRequest(f"order-{n}", symbol, "buy", Decimal(1))) for n in range(5)
    ]
    assert [report.broker_order_id for report in reports] == [f"paper-{n}" for n in range(1, 6)]
    assert await broker.fetch_order("order-0", symbol=symbol) is None  # forgotten
    assert await broker.fetch_order("order-4", symbol=symbol) == reports[4]
    again = await broker.submit(OrderRequest("order-3", symbol, "buy", Decimal(1)))
    assert again == reports[3]  # a repeated submit of a remembered order places nothing
    assert (await broker.balances())[symbol.split("/")[0]] == Decimal(5)
