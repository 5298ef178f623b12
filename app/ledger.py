"""The double-entry ledger, as pure arithmetic: postings for each kind of transaction, and
the book derived from the journal.

Amounts are signed in the account currency: a debit is positive, a credit negative, and
every transaction's postings sum to exactly zero. The ledger accounts:

=============  ===================================================================
``cash``       money at the broker (asset)
``positions``  open positions at cost (asset for longs; negative, a liability, for shorts);
               its postings also carry the signed quantity moved, so holdings come from
               the journal alone
``fees``       fees paid (expense)
``pnl``        realized profit and loss (income: a profit is a credit, i.e. negative)
``capital``    deposits and withdrawals (the owner's equity)
=============  ===================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from app.values import value

LedgerAccount = Literal["cash", "positions", "fees", "pnl", "capital"]
ZERO = Decimal(0)


@value
class Posting:
    ledger_account: LedgerAccount
    amount: Decimal
    ticker: str | None = None
    quantity: Decimal | None = None


@value
class Trade:
    """One fill, as the journal describes it."""

    ticker: str
    side: Literal["buy", "sell"]
    quantity: Decimal
    price: Decimal
    fee: Decimal

    @property
    def signed_quantity(self) -> Decimal:
        return self.quantity if self.side == "buy" else -self.quantity


@value
class JournalEntry:
    at: datetime
    postings: Sequence[Posting]
    trade: Trade | None = None


def is_balanced(postings: Iterable[Posting]) -> bool:
    return sum((posting.amount for posting in postings), ZERO) == ZERO


def deposit(amount: Decimal) -> list[Posting]:
    """Money in (positive) or out (negative, a withdrawal)."""
    return [Posting("cash", amount), Posting("capital", -amount)]


def trade_postings(trade: Trade, *, cost_released: Decimal | None) -> list[Posting]:
    """Postings for one fill.

    ``cost_released`` is None for a fill that opens or adds to a position, and otherwise the
    signed at-cost amount of the position that this fill closes (positive for a long,
    negative for a short). The difference between what the position cost and what the fill
    brought is realized PnL.
    """
    cash = -(trade.signed_quantity * trade.price) - trade.fee
    position_amount = (
        trade.signed_quantity * trade.price if cost_released is None else -cost_released
    )
    postings = [
        Posting("cash", cash),
        Posting("positions", position_amount, ticker=trade.ticker, quantity=trade.signed_quantity),
        Posting("fees", trade.fee),
    ]
    pnl = -(cash + position_amount + trade.fee)
    if pnl != ZERO:
        postings.append(Posting("pnl", pnl))
    return postings


@value
class ValuePoint:
    at: datetime
    equity: Decimal


@dataclass(slots=True)
class Book:
    """The account as the journal tells it."""

    balance: Decimal = ZERO
    holding: dict[str, Decimal] = field(default_factory=dict)
    trades: list[tuple[datetime, Trade]] = field(default_factory=list)
    value: list[ValuePoint] = field(default_factory=list)
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    capital: Decimal = ZERO


def build_book(entries: Iterable[JournalEntry]) -> Book:
    """Replay the journal in order. Equity is marked at the latest fill price of each
    ticker; a value point is recorded at every fill."""
    book = Book()
    last_price: dict[str, Decimal] = {}
    for entry in entries:
        for posting in entry.postings:
            _apply(book, posting)
        if entry.trade is not None:
            book.trades.append((entry.at, entry.trade))
            last_price[entry.trade.ticker] = entry.trade.price
            equity = book.balance + sum(
                (quantity * last_price[ticker] for ticker, quantity in book.holding.items()), ZERO
            )
            book.value.append(ValuePoint(at=entry.at, equity=equity))
    book.holding = {ticker: quantity for ticker, quantity in book.holding.items() if quantity}
    return book


def _apply(book: Book, posting: Posting) -> None:
    match posting.ledger_account:
        case "cash":
            book.balance += posting.amount
        case "positions":
            if posting.ticker is not None and posting.quantity is not None:
                book.holding[posting.ticker] = (
                    book.holding.get(posting.ticker, ZERO) + posting.quantity
                )
        case "fees":
            book.fees += posting.amount
        case "pnl":
            book.realized_pnl -= posting.amount
        case "capital":
            book.capital -= posting.amount
