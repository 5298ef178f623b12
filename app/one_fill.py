"""PostgreSQL: a broker's report of one new fill, written in one statement.

Data-modifying CTEs write the fill, its ledger transaction and postings, the order, the
position and the account's cash, where each was a round trip of its own (README,
Performance). :mod:`app.reports` works out the values (the same arithmetic as its row-by-row
form); this statement only writes them, and only when the rows are as they were worked out
from:

- ``held``: the order is still ``pending`` and its position's quantity and cost are the
  ``held_*`` values; both rows are locked here (``FOR UPDATE``), as the row-by-row form's
  first read locks them. A lock waited for yields the row as it is once the other
  transaction ends, so the comparison is with what was committed last.
- ``fill``: the fill is inserted only then, and only when new (``ON CONFLICT DO
  NOTHING``); every other write is conditional on it (``EXISTS (SELECT FROM fill)``).

The statement returns the new fill's id, or no row when it wrote nothing. So it can run on
its own, outside a transaction, with values the caller knew before reading anything (a
report of the intent it just made): when the rows are not as expected, nothing is written
and the caller reads them and writes row by row. Realized PnL and cash move by amounts
(``+ realized_delta``, ``+ cash_moved``), in ``NUMERIC`` arithmetic, exact.

:data:`ONE_FILL_ANSWERED` also stores the delivery's answer on its event's row, on the same
condition (:class:`app.inbox.AnswerWithFill`: the fill is the delivery's last write).
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    Numeric,
    String,
    bindparam,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    null,
    select,
    true,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import ClauseElement

from app import schema
from app.columns import ExactDecimal, UTCDateTime
from app.sql import Statement


def _one_fill(_dialect: str, *, answered: bool = False) -> ClauseElement:
    fills, transactions, postings = schema.fills, schema.ledger_transactions, schema.postings
    orders, positions, accounts, events = (
        schema.orders,
        schema.positions,
        schema.accounts,
        schema.events,
    )

    def amount(name: str) -> Any:
        return bindparam(name, type_=ExactDecimal())

    def moment(name: str) -> Any:
        return bindparam(name, type_=UTCDateTime())

    def text(name: str) -> Any:
        return bindparam(name, type_=String())

    order_id: Any = bindparam("order_id", type_=orders.c.id.type)
    position_id: Any = bindparam("position_id", type_=positions.c.id.type)
    account_id: Any = bindparam("account_id", type_=accounts.c.id.type)
    held = (
        select(orders.c.id)
        .where(
            orders.c.id == order_id,
            orders.c.status == "pending",
            positions.c.id == position_id,
            positions.c.quantity == amount("held_quantity"),
            positions.c.cost == amount("held_cost"),
        )
        .with_for_update(of=[orders, positions])
        .cte("held")
    )
    fill = (
        postgresql.insert(fills)
        .from_select(
            ["order_id", "broker_fill_id", "quantity", "price", "fee", "filled_at"],
            select(
                held.c.id,
                text("broker_fill_id"),
                amount("quantity"),
                amount("price"),
                amount("fee"),
                moment("filled_at"),
            ),
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
    # opened_at, closed_at and attention are set only when given, as update_row would;
    # a closed position's attention is cleared (app.reports._settled).
    positioned = (
        update(positions)
        .where(positions.c.id == position_id, is_new)
        .values(
            status=text("position_status"),
            quantity=amount("position_quantity"),
            cost=amount("position_cost"),
            realized_pnl=type_coerce(positions.c.realized_pnl, Numeric(asdecimal=True))
            + amount("realized_delta"),
            opened_at=func.coalesce(moment("opened_at"), positions.c.opened_at),
            closed_at=func.coalesce(moment("closed_at"), positions.c.closed_at),
            attention=case(
                (text("position_status") == "closed", null()),
                else_=func.coalesce(text("attention"), positions.c.attention),
            ),
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
    writes = [transaction, posted, ordered, positioned, moved]
    if answered:  # as app.inbox.finish writes it
        writes.append(
            update(events)
            .where(events.c.id == bindparam("event_id", type_=events.c.id.type), is_new)
            .values(
                state=text("state"),
                answer_status=bindparam("answer_status", type_=events.c.answer_status.type),
                answer_body=text("answer_body"),
                error_type=text("error_type"),
                answered_at=moment("answered_at"),
                note=func.coalesce(text("note"), events.c.note),
                timings=text("timings"),
            )
            .cte("answered")
        )
    return select(fill.c.id).add_cte(*writes)


ONE_FILL = Statement(_one_fill)
ONE_FILL_ANSWERED = Statement(functools.partial(_one_fill, answered=True))
