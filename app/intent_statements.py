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
- :data:`OPENING_LOCKED` is OPENING with the account's funds read, in an open's
  transaction: the account's lock, the read and the inserts in one round trip, through a
  function each write-path connection makes for itself (:func:`opening_function`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BindParameter,
    Column,
    Dialect,
    Insert,
    bindparam,
    case,
    func,
    insert,
    literal,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

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


# The function that runs _opening_with_funds after taking the account's lock, one of its own
# on each write-path connection (pg_temp: it is no part of the schema, and always this
# build's statement). A temporary function is called by its schema's name, always.
_FUNCTION = "signalbridge_opening"
# The dialect the function's text and its calls are compiled with (any PostgreSQL
# dialect's would do: the order of the arguments is what they share).
_ASYNCPG: Callable[[], Dialect] = PGDialect_asyncpg
# Its columns, as reserve_open reads them: the funds (trading.committed), then the ids.
_OPENING_COLUMNS = (
    "cash NUMERIC, reserved TEXT, costs TEXT, has_open BOOLEAN, id INTEGER, position_id INTEGER"
)


@functools.cache
def _opening_parameters() -> tuple[str, list[tuple[str, BindParameter[Any]]]]:
    """:func:`_opening_with_funds` as asyncpg's dialect writes it, and its parameters in
    the order of its ``$n`` (the function's own arguments): the function and
    :data:`OPENING_LOCKED` come from this one compilation, so they always agree."""
    dialect = _ASYNCPG()
    compiled = _opening_with_funds("postgresql").compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    names = compiled.positiontup or []
    return compiled.string, [(name, compiled.binds[name]) for name in names]


@functools.cache
def opening_function() -> str:
    """PostgreSQL: ``CREATE FUNCTION pg_temp.signalbridge_opening``, run once on each of the
    write path's connections as it opens.

    The function takes the account's row lock (``FOR NO KEY UPDATE``, as
    :func:`app.journal.lock_account`), then returns :func:`_opening_with_funds`'s rows. A
    statement sees what was committed when it began, so a lock inside that statement itself,
    waited for, would read the funds as they were before the transaction it waited for
    committed; in PL/pgSQL each statement begins anew, so the query after the lock reads
    them as that transaction left them. One round trip, where the lock and the statement
    were two: an open holds the account's lock across one of the service's turns instead of
    two (README, Performance)."""
    query, parameters = _opening_parameters()
    dialect = _ASYNCPG()
    types = dialect.type_compiler_instance
    arguments = ", ".join(
        types.process(bind.type.dialect_impl(dialect)) for _name, bind in parameters
    )
    account = [name for name, _bind in parameters].index("account_id") + 1
    return (
        f"CREATE FUNCTION pg_temp.{_FUNCTION}({arguments}) RETURNS TABLE ({_OPENING_COLUMNS}) "
        "LANGUAGE plpgsql AS $signalbridge$ #variable_conflict use_column\n"
        f"BEGIN PERFORM 1 FROM accounts WHERE id = ${account} FOR NO KEY UPDATE; "
        f"RETURN QUERY {query}; END $signalbridge$"
    )


def _opening_locked(_dialect: str) -> ClauseElement:
    _query, parameters = _opening_parameters()
    binds = [
        bindparam(name, bind.value, type_=bind.type, required=bind.required)
        for name, bind in parameters
    ]
    return select(literal_column("*")).select_from(getattr(func.pg_temp, _FUNCTION)(*binds))


OPENING_LOCKED = Statement(_opening_locked)
"""An open's position and intent with the funds as they were before them (OPENING and the
funds read in one statement), the account's lock taken first, in one round trip: a call of
the function :func:`opening_function` makes, inside a transaction begun without the lock
(``Database.transaction(locking_account=...)`` on PostgreSQL)."""


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
