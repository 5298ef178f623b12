"""PostgreSQL: an order's intent made in one statement, for an open and for a close.

Each round trip costs the service and the database CPU they share on one machine (README,
Performance), and an open's are made while the account's row is locked, which every open
on the account waits for. SQLite, whose statements take microseconds and no round trip,
writes the same rows one by one (:mod:`app.intents`).

- :data:`OPENING` inserts an open's position and its order. The position's insert does
  nothing when the strategy has a position not closed (the partial unique index
  ``positions_one_open_per_strategy``, named by its column and its predicate); the order
  then has no position to refer to and is not inserted either, and the statement returns
  no row. Otherwise it returns the order's id and the position's.
- :data:`CLOSING` claims a position for a close (``closing``) and inserts the close's
  order from the claimed row, on its own, outside a transaction: it claims the position
  only if it is ``open`` and trades the ``ticker`` the caller checked before
  (:meth:`app.legs.Legs.close`). It returns the order's id and side with the position's
  id, quantity and cost, or no row, having written nothing, when the position is not so
  (none, one an earlier event is opening or closing, another ticker): the leg then claims
  and checks in a transaction, as on SQLite.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Column, Insert, bindparam, case, insert, literal, select, true, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import ClauseElement

from app import schema, trading
from app.sql import Statement

_ORDER_COLUMNS = (
    *("client_order_id", "event_id", "account_id", "strategy_id", "position_id", "purpose"),
    *("ticker", "symbol", "side", "quantity", "reserved", "status", "filled_quantity", "fee"),
    *("created_at", "updated_at"),
)


def _given(name: str, column: Column[Any]) -> Any:
    """A parameter, bound as the column's type binds it."""
    return bindparam(name, type_=column.type)


def _fixed(value: object, column: Column[Any]) -> Any:
    return literal(value, type_=column.type)


def _opening(_dialect: str) -> Insert:
    positions, orders = schema.positions, schema.orders
    given, fixed = _given, _fixed

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


def _opening_with_funds(dialect: str) -> ClauseElement:
    ordered = _opening(dialect).cte("ordered")
    funds = trading.committed(dialect).subquery("funds")
    return select(funds, ordered.c.id, ordered.c.position_id).select_from(
        funds.outerjoin(ordered, true())
    )


OPENING_WITH_FUNDS = Statement(_opening_with_funds)


def _closing(_dialect: str) -> ClauseElement:
    positions, orders = schema.positions, schema.orders
    given, fixed = _given, _fixed

    strategy_id = given("strategy_id", positions.c.strategy_id)
    claimed = (
        update(positions)
        .where(
            positions.c.strategy_id == strategy_id,
            schema.OPEN_POSITION,  # the partial index's predicate, as text (trading.py)
            positions.c.status == "open",
            positions.c.ticker == given("ticker", positions.c.ticker),
        )
        .values(status="closing")
        .returning(
            positions.c.id,
            positions.c.ticker,
            positions.c.direction,
            positions.c.quantity,
            positions.c.cost,
        )
        .cte("claimed")
    )
    now = given("now", orders.c.created_at)
    zero = fixed(Decimal(0), orders.c.quantity)
    side = case(
        (claimed.c.direction == "long", given("long_side", orders.c.side)),
        else_=given("short_side", orders.c.side),
    )
    ordered = (
        insert(orders)
        .from_select(
            _ORDER_COLUMNS,
            select(
                given("client_order_id", orders.c.client_order_id),
                given("event_id", orders.c.event_id),
                given("account_id", orders.c.account_id),
                strategy_id,
                claimed.c.id,
                fixed("close", orders.c.purpose),
                claimed.c.ticker,
                given("symbol", orders.c.symbol),
                side,
                claimed.c.quantity,
                zero,
                fixed("pending", orders.c.status),
                zero,
                zero,
                now,
                now,
            ),
        )
        .returning(orders.c.id, orders.c.position_id, orders.c.side)
        .cte("ordered")
    )
    return select(
        ordered.c.id, claimed.c.id, ordered.c.side, claimed.c.quantity, claimed.c.cost
    ).join_from(ordered, claimed, claimed.c.id == ordered.c.position_id)


CLOSING = Statement(_closing)
