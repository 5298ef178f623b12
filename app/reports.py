"""A broker's answer about an order, recorded: its fills (each once), the ledger
transaction of each, the order's final state, its position's book, and the account's cash,
inside a transaction the caller owns (:mod:`app.trading` wrote the order's intent).

Locks, on PostgreSQL: the order and position rows first, so a report is applied once; the
account's cash moves last, so the account row is held only from that update to the commit.

On PostgreSQL the usual report, one new fill, is written in one statement (data-modifying
CTEs: :data:`_ONE_FILL`), where each of its rows took a round trip of its own: the fill,
its ledger transaction, the postings, the order, the position, the cash. Each round trip
costs both the service and the database CPU that the two share on one machine (README,
Performance). Every other report, and every report on SQLite (whose statements take
microseconds and no round trip), is written row by row. Both forms write the same rows
from the same arithmetic (:func:`_booked`, :func:`_settled`).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Numeric,
    String,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    true,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import ClauseElement

from app import journal, ledger, schema, sql
from app.broker import Fill, OrderReport
from app.columns import ExactDecimal, UTCDateTime
from app.sql import Statement, Tx
from app.trading import OrderIntent
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
    returning=[schema.fills.c.id],
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
    book = _Book(quantity, cost, realized)
    if (
        tx.dialect.name == "postgresql"
        and len(report.fills) == 1
        and await _apply_one_fill(tx, intent, report, book, now=now)
    ):
        return
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
        position |= {"status": "closed", "closed_at": now}
    else:
        position["status"] = "open"
        if filled:
            position["attention"] = f"close partially filled: {book.quantity} still open"
    return order, position


async def _apply_one_fill(
    tx: Tx, intent: OrderIntent, report: OrderReport, book: _Book, *, now: datetime
) -> bool:
    """PostgreSQL, a report of one fill: everything :func:`apply_report` writes, in one
    statement. False, with nothing written, when the fill was recorded before (a repeated
    report of an order still pending): the caller then writes row by row, skipping it."""
    (fill,) = report.fills
    trade, postings, booked = _booked(intent, fill, book)
    order, position = _settled(intent, report, booked, now=now)
    if position is None:  # an open that opened nothing: not with a fill of some quantity
        return False
    if not ledger.is_balanced(postings):  # as journal.post refuses one
        raise ValueError(f"unbalanced ledger transaction for fill {fill.fill_id}: {postings}")
    fill_id = await tx.scalar_with(
        _ONE_FILL,
        _fill_row(intent, fill)
        | dict(
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
            realized_pnl=position["realized_pnl"],
            opened_at=position.get("opened_at"),
            closed_at=position.get("closed_at"),
            attention=position.get("attention"),
            cash_moved=journal.cash_moved(postings),
        ),
    )
    return fill_id is not None


def _one_fill(_dialect: str) -> ClauseElement:
    """The statement of :func:`_apply_one_fill` (PostgreSQL only). Every write but the
    fill's own is conditional on the fill being new (``EXISTS (SELECT FROM fill)``); the
    statement returns the new fill's id, or no row."""
    fills, transactions, postings = schema.fills, schema.ledger_transactions, schema.postings
    orders, positions, accounts = schema.orders, schema.positions, schema.accounts

    def amount(name: str) -> Any:
        return bindparam(name, type_=ExactDecimal())

    def moment(name: str) -> Any:
        return bindparam(name, type_=UTCDateTime())

    def text(name: str) -> Any:
        return bindparam(name, type_=String())

    order_id: Any = bindparam("order_id", type_=schema.orders.c.id.type)
    account_id: Any = bindparam("account_id", type_=schema.accounts.c.id.type)
    fill = (
        postgresql.insert(fills)
        .values(
            order_id=order_id,
            broker_fill_id=text("broker_fill_id"),
            quantity=amount("quantity"),
            price=amount("price"),
            fee=amount("fee"),
            filled_at=moment("filled_at"),
        )
        .on_conflict_do_nothing(index_elements=["order_id", "broker_fill_id"])
        .returning(fills.c.id)
        .cte("fill")
    )
    is_new = exists(select(fill.c.id))
    transaction = (
        insert(transactions)
        .from_select(
            [
                *("account_id", "reference", "kind", "at", "fill_id"),
                *("ticker", "side", "quantity", "price", "fee"),
            ],
            select(
                account_id,
                literal("fill:") + cast(fill.c.id, String),
                literal("trade"),
                moment("filled_at"),
                fill.c.id,
                text("ticker"),
                text("side"),
                amount("quantity"),
                amount("price"),
                amount("fee"),
            ),
        )
        .returning(transactions.c.id)
        .cte("trade")
    )
    rows = (
        func.unnest(
            bindparam("ledger_accounts", type_=postgresql.ARRAY(String())),
            bindparam("amounts", type_=postgresql.ARRAY(ExactDecimal())),
            bindparam("tickers", type_=postgresql.ARRAY(String())),
            bindparam("quantities", type_=postgresql.ARRAY(ExactDecimal())),
        )
        .table_valued("ledger_account", "amount", "ticker", "quantity")
        .render_derived(name="posting")
    )
    posted = (
        insert(postings)
        .from_select(
            ["transaction_id", "account_id", "ledger_account", "amount", "ticker", "quantity"],
            select(
                transaction.c.id,
                account_id,
                rows.c.ledger_account,
                rows.c.amount,
                rows.c.ticker,
                rows.c.quantity,
            ).select_from(transaction.join(rows, true())),
        )
        .cte("posted")
    )
    ordered = (
        update(orders)
        .where(orders.c.id == order_id, is_new)
        .values(
            status=text("order_status"),
            broker_order_id=text("broker_order_id"),
            filled_quantity=amount("filled_quantity"),
            average_price=amount("average_price"),
            fee=amount("order_fee"),
            reason=text("reason"),
            updated_at=moment("updated_at"),
        )
        .cte("ordered")
    )
    # opened_at, closed_at and attention are set only when given, as update_row would.
    positioned = (
        update(positions)
        .where(positions.c.id == bindparam("position_id"), is_new)
        .values(
            status=text("position_status"),
            quantity=amount("position_quantity"),
            cost=amount("position_cost"),
            realized_pnl=amount("realized_pnl"),
            opened_at=func.coalesce(moment("opened_at"), positions.c.opened_at),
            closed_at=func.coalesce(moment("closed_at"), positions.c.closed_at),
            attention=func.coalesce(text("attention"), positions.c.attention),
        )
        .cte("positioned")
    )
    # Last, as journal.move_cash: NUMERIC arithmetic, exact.
    moved = (
        update(accounts)
        .where(accounts.c.id == account_id, is_new)
        .values(cash=type_coerce(accounts.c.cash, Numeric(asdecimal=True)) + amount("cash_moved"))
        .cte("moved")
    )
    return select(fill.c.id).add_cte(transaction, posted, ordered, positioned, moved)


_ONE_FILL = Statement(_one_fill)
