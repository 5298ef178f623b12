"""Ledger arithmetic and the book derived from the journal."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from app import ledger

AT = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)


def entry(postings: list[ledger.Posting], trade: ledger.Trade | None = None) -> ledger.JournalEntry:
    return ledger.JournalEntry(AT, postings, trade)


def test_long_round_trip_balances_and_realizes_the_difference() -> None:
    buy = ledger.Trade("AAPL", "buy", Decimal(10), Decimal("100.10"), Decimal("0.5"))
    sell = ledger.Trade("AAPL", "sell", Decimal(10), Decimal("110.30"), Decimal("0.6"))
    opening = ledger.trade_postings(buy, cost_released=None)
    closing = ledger.trade_postings(sell, cost_released=Decimal("1001.0"))
    assert ledger.is_balanced(opening)
    assert ledger.is_balanced(closing)
    book = ledger.build_book(
        [entry(ledger.deposit(Decimal(5000))), entry(opening, buy), entry(closing, sell)]
    )
    assert book.realized_pnl == Decimal("102.0")
    assert book.fees == Decimal("1.1")
    assert book.balance == Decimal(5000) + Decimal("102.0") - Decimal("1.1")
    assert book.holding == {}
    assert [point.equity for point in book.value] == [Decimal("4999.5"), Decimal("5100.9")]


def test_short_round_trip_profits_when_the_price_falls() -> None:
    sell = ledger.Trade("BTC", "sell", Decimal("0.5"), Decimal(60000), Decimal(0))
    buy = ledger.Trade("BTC", "buy", Decimal("0.5"), Decimal(50000), Decimal(0))
    opening = ledger.trade_postings(sell, cost_released=None)
    closing = ledger.trade_postings(buy, cost_released=Decimal(-30000))
    book = ledger.build_book([entry(opening, sell)])
    assert book.holding == {"BTC": Decimal("-0.5")}
    assert book.value[-1].equity == Decimal(0)
    book = ledger.build_book([entry(opening, sell), entry(closing, buy)])
    assert book.realized_pnl == Decimal(5000)
    assert book.balance == Decimal(5000)


def test_amounts_stay_exact_past_fifteen_digits() -> None:
    trade = ledger.Trade("X", "buy", Decimal("0.123456789012345678"), Decimal("1.1"), Decimal(0))
    [cash, position, _fees] = ledger.trade_postings(trade, cost_released=None)
    assert cash.amount == Decimal("-0.1358024679135802458")
    assert position.amount == -cash.amount
