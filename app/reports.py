"""A broker's answer about an order, recorded: its fills (each once), the ledger
transaction of each, the order's final state, its position's book, and the account's cash,
inside a transaction the caller owns (:mod:`app.intents` wrote the order's intent).

Locks, on PostgreSQL: the order and position rows first, so a report is applied once; the
account's cash moves last, so the account row is held only from that update to the commit.

On PostgreSQL the usual report, one new fill, is written in one statement
(:mod:`app.one_fill`), where each of its rows took a round trip of its own. Right after the
broker's answer to an intent just made, even the transaction around it is left out
(:func:`apply_new_fill`): the position's book is the intent's own, so nothing needs reading
first, and the statement checks it under the rows' locks. Every other report, and every
report on SQLite (whose statements take microseconds and no round trip), is written row by
row. Both forms write the same rows from the same arithmetic (:func:`_booked`,
:func:`_settled`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, delete, select

from app import journal, ledger, schema, sql
from app.broker import Fill, OrderReport
from app.intents import OrderIntent
from app.one_fill import ONE_FILL, ONE_FILL_ANSWERED
from app.sql import Statement, Tx
from app.values import value

ZERO = Decimal(0)


@value
class _Book:
    """A position's quantity, cost and realized PnL."""

    quantity: Decimal
    cost: Decimal
    realized: Decimal


# The order and its position, both rows locked: a report is applied once. The account's
# cash comes along unlocked (it is locked when it moves, last); SQLite moves it by this.
_ORDER_AND_POSITION = Statement(
    select(
        schema.orders.c.status,
        schema.positions.c.quantity,
        schema.positions.c.cost,
        schema.positions.c.realized_pnl,
        schema.accounts.c.cash,
    )
    .where(
        schema.orders.c.id == bindparam("order_id"),
        schema.positions.c.id == bindparam("position_id"),
        schema.accounts.c.id == bindparam("account_id"),
    )
    .with_for_update(of=[schema.orders, schema.positions])
)
_DROP_POSITION = Statement(
    delete(schema.positions).where(schema.positions.c.id == bindparam("position_id"))
)
_NEW_FILL = sql.insert_or_ignore(
    schema.fills,
    ["order_id", "broker_fill_id", "quantity", "price", "fee", "filled_at"],
    unique=["order_id", "broker_fill_id"],
    new_id=True,
)


async def apply_report(tx: Tx, intent: OrderIntent, report: OrderReport, *, now: datetime) -> None:
    """Record the broker's answer about an intent; apply each fill once (a fill already
    recorded is skipped). The account's cash moves last (:func:`journal.move_cash`)."""
    row = await tx.first(
        _ORDER_AND_POSITION,
        order_id=intent.order_id,
        position_id=intent.position_id,
        account_id=intent.account_id,
    )
    if row is None or row[0] != "pending":  # settled before (an empty open drops its position)
        return
    _, quantity, cost, realized, cash = row
    if (
        tx.dialect.name == "postgresql"
        and len(report.fills) == 1
        and await _apply_one_fill(tx, intent, report, held=(quantity, cost), now=now)
    ):
        return
    book = _Book(quantity, cost, realized)
    moved = ZERO
    for fill in report.fills:
        fill_id = await tx.scalar_with(_NEW_FILL, _fill_row(intent, fill))
        if fill_id is None:
            continue
        trade, postings, book = _booked(intent, fill, book)
        await journal.post(
            tx,
            intent.account_id,
            reference=f"fill:{fill_id}",
            kind="trade",
            postings=postings,
            now=fill.at,
            fill_id=fill_id,
            trade=trade,
        )
        moved += journal.cash_moved(postings)
    order, position = _settled(intent, report, book, now=now)
    await sql.update_row(tx, schema.orders, intent.order_id, **order)
    if position is None:
        await tx.run(_DROP_POSITION, position_id=intent.position_id)
    else:
        await sql.update_row(tx, schema.positions, intent.position_id, **position)
    await journal.move_cash(tx, intent.account_id, moved, cash=cash)


def _fill_row(intent: OrderIntent, fill: Fill) -> dict[str, Any]:
    """The fill's row, as both forms insert it."""
    return {
        "order_id": intent.order_id,
        "broker_fill_id": fill.fill_id,
        "quantity": fill.quantity,
        "price": fill.price,
        "fee": fill.fee,
        "filled_at": fill.at,
    }


def _booked(
    intent: OrderIntent, fill: Fill, book: _Book
) -> tuple[ledger.Trade, list[ledger.Posting], _Book]:
    """A new fill's trade, its postings, and the position's book after it."""
    trade = ledger.Trade(intent.ticker, intent.side, fill.quantity, fill.price, fill.fee)
    quantity, cost = book.quantity, book.cost
    if intent.purpose == "open":
        released = None
        quantity, cost = quantity + trade.quantity, cost + trade.signed_quantity * trade.price
    else:
        released = cost if trade.quantity >= quantity else cost * trade.quantity / quantity
        quantity, cost = max(quantity - trade.quantity, ZERO), cost - released
    postings = ledger.trade_postings(trade, cost_released=released)
    realized = book.realized - sum((p.amount for p in postings if p.ledger_account == "pnl"), ZERO)
    return trade, postings, _Book(quantity, cost, realized)


def _settled(
    intent: OrderIntent, report: OrderReport, book: _Book, *, now: datetime
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The order's final values, and its position's (None: the position never existed,
    and is dropped; the order keeps the record)."""
    filled = report.filled_quantity
    fee = sum((fill.fee for fill in report.fills), ZERO)
    average = (
        sum((fill.quantity * fill.price for fill in report.fills), ZERO) / filled
        if filled
        else None
    )
    status = report.status
    if status == "rejected" and filled:
        status = "partially_filled"
    order: dict[str, Any] = {
        "status": status,
        "broker_order_id": report.broker_order_id,
        "filled_quantity": filled,
        "average_price": average,
        "fee": fee,
        "reason": report.reason,
        "updated_at": now,
    }
    if intent.purpose == "open" and book.quantity == 0:
        order["position_id"] = None
        return order, None
    # (Otherwise position_id is left out: setting it to itself costs a foreign-key check.)
    position: dict[str, Any] = {
        "quantity": book.quantity,
        "cost": book.cost,
        "realized_pnl": book.realized,
    }
    if intent.purpose == "open":
        position |= {"status": "open", "opened_at": now}
        if filled < intent.quantity:
            position["attention"] = f"partially filled: {filled} of {intent.quantity}"
    elif book.quantity == 0:
        # Every flag describes a position still open (a partial fill, what the venue
        # holds, a strategy disabled with it open): a closed one needs no attention.
        position |= {"status": "closed", "closed_at": now, "attention": None}
    else:
        position["status"] = "open"
        if filled:
            position["attention"] = f"close partially filled: {book.quantity} still open"
    return order, position


def applies_alone(dialect: str, intent: OrderIntent, report: OrderReport) -> bool:
    """Whether :func:`apply_new_fill` can record this report: on PostgreSQL, a report of
    one fill about an intent just made (its position's book known)."""
    return dialect == "postgresql" and len(report.fills) == 1 and intent.held is not None


async def apply_new_fill(
    tx: Tx,
    intent: OrderIntent,
    report: OrderReport,
    *,
    now: datetime,
    answer: Mapping[str, object] | None = None,
) -> bool:
    """Record a report :func:`applies_alone` accepts, in one statement of its own (``tx``
    outside a transaction): True when it is recorded. False, with nothing written, when the
    order is no longer pending, its position is not as the intent left it, or the fill was
    recorded before: the caller then records the report with :func:`apply_report`, which
    reads the rows first. ``answer``: the event row's values of the delivery's answer
    (:meth:`app.inbox.AnswerWithFill.values`), written with the fill, or not at all."""
    assert intent.held is not None
    return await _apply_one_fill(tx, intent, report, held=intent.held, now=now, answer=answer)


async def _apply_one_fill(
    tx: Tx,
    intent: OrderIntent,
    report: OrderReport,
    *,
    held: tuple[Decimal, Decimal],
    now: datetime,
    answer: Mapping[str, object] | None = None,
) -> bool:
    """PostgreSQL, a report of one fill, the order pending and its position's quantity and
    cost ``held``: everything :func:`apply_report` writes, in one statement (and
    ``answer``, when given). False, with nothing written, when the rows are not so or the
    fill was recorded before."""
    (fill,) = report.fills
    # Realized PnL moves by an amount: the book's own is not read (nor needed) here.
    trade, postings, booked = _booked(intent, fill, _Book(*held, ZERO))
    order, position = _settled(intent, report, booked, now=now)
    if position is None:  # an open that opened nothing: not with a fill of some quantity
        return False
    if not ledger.is_balanced(postings):  # as journal.post refuses one
        raise ValueError(f"unbalanced ledger transaction for fill {fill.fill_id}: {postings}")
    fill_id = await tx.scalar_with(
        ONE_FILL if answer is None else ONE_FILL_ANSWERED,
        {**(answer or {})}
        | _fill_row(intent, fill)
        | dict(
            held_quantity=held[0],
            held_cost=held[1],
            account_id=intent.account_id,
            ticker=trade.ticker,
            side=trade.side,
            ledger_accounts=[p.ledger_account for p in postings],
            amounts=[p.amount for p in postings],
            tickers=[p.ticker for p in postings],
            quantities=[p.quantity for p in postings],
            order_status=order["status"],
            broker_order_id=order["broker_order_id"],
            filled_quantity=order["filled_quantity"],
            average_price=order["average_price"],
            order_fee=order["fee"],
            reason=order["reason"],
            updated_at=order["updated_at"],
            position_id=intent.position_id,
            position_status=position["status"],
            position_quantity=position["quantity"],
            position_cost=position["cost"],
            realized_delta=position["realized_pnl"],
            opened_at=position.get("opened_at"),
            closed_at=position.get("closed_at"),
            attention=position.get("attention"),
            cash_moved=journal.cash_moved(postings),
        ),
    )
    return fill_id is not None
