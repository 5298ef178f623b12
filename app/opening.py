"""PostgreSQL: an open's position and its order's intent, inserted in one statement.

Both rows are written while the account's row is locked (the funds check's lock,
:func:`app.journal.lock_account`), and every open on the account waits for that lock: one
round trip fewer there is one wait fewer for each of them, besides the CPU a round trip
costs the service and the database (README, Performance). SQLite inserts the two rows one
by one (:func:`app.trading.reserve_open`); both forms write the same values.

The position's insert does nothing when the strategy has a position not closed (the
partial unique index ``positions_one_open_per_strategy``, named by its column and its
predicate); the order then has no position to refer to and is not inserted either, and
the statement returns no row. Otherwise it returns the order's id and the position's.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Column, bindparam, insert, literal, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import ClauseElement

from app import schema
from app.sql import Statement

_ORDER_COLUMNS = (
    *("client_order_id", "event_id", "account_id", "strategy_id", "position_id", "purpose"),
    *("ticker", "symbol", "side", "quantity", "reserved", "status", "filled_quantity", "fee"),
    *("created_at", "updated_at"),
)


def _opening(_dialect: str) -> ClauseElement:
    positions, orders = schema.positions, schema.orders

    def given(name: str, column: Column[Any]) -> Any:
        return bindparam(name, type_=column.type)

    def fixed(value: object, column: Column[Any]) -> Any:
        return literal(value, type_=column.type)

    now = given("now", positions.c.created_at)
    zero = fixed(Decimal(0), positions.c.quantity)
    position = (
        postgresql.insert(positions)
        .values(
            strategy_id=given("strategy_id", positions.c.strategy_id),
            account_id=given("account_id", positions.c.account_id),
            ticker=given("ticker", positions.c.ticker),
            direction=given("direction", positions.c.direction),
            status=fixed("opening", positions.c.status),
            quantity=zero,
            cost=zero,
            realized_pnl=zero,
            provider_position_id=given("provider_position_id", positions.c.provider_position_id),
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["strategy_id"], index_where=schema.OPEN_POSITION)
        .returning(positions.c.id)
        .cte("position")
    )
    values = select(
        given("client_order_id", orders.c.client_order_id),
        given("event_id", orders.c.event_id),
        given("account_id", orders.c.account_id),
        given("strategy_id", orders.c.strategy_id),
        position.c.id,
        fixed("open", orders.c.purpose),
        given("ticker", orders.c.ticker),
        given("symbol", orders.c.symbol),
        given("side", orders.c.side),
        given("quantity", orders.c.quantity),
        given("reserved", orders.c.reserved),
        fixed("pending", orders.c.status),
        zero,
        zero,
        now,
        now,
    )
    return (
        insert(orders)
        .from_select(_ORDER_COLUMNS, values)
        .returning(orders.c.id, orders.c.position_id)
        .add_cte(position)
    )


OPENING = Statement(_opening)
