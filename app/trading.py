"""Positions and the funds the rules see, read and written inside a transaction the caller
owns: the account's funds (its cash, what pending orders set aside, its positions' cost),
a strategy's position, a position claimed for a close (``closing``) or flagged for the
operator. Order intents, which an open or a close makes from these, are :mod:`app.intents`.

Locks, on PostgreSQL (SQLite has one writer at a time): a funds check locks the account
row first (:func:`journal.lock_account`), so two processes cannot spend the same cash; a
claim for a close is the position row's own; a report locks its order and position rows
first and moves the account's cash last, so the account row is held only from that update
to the commit. Trading on one account waits for no more than that.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Select,
    Text,
    bindparam,
    cast,
    exists,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from app import journal, schema, sql
from app.rules import AccountTerms, Direction, Funds, short_collateral
from app.sql import Statement, Tx
from app.values import value

ZERO = Decimal(0)
_POSITION_COLUMNS = (
    schema.positions.c.id,
    schema.positions.c.ticker,
    schema.positions.c.direction,
    schema.positions.c.status,
    schema.positions.c.quantity,
    schema.positions.c.cost,
    schema.positions.c.provider_position_id,
)


@value
class OpenPosition:
    id: int
    ticker: str
    direction: Direction
    status: str
    quantity: Decimal
    cost: Decimal
    provider_position_id: str | None


# One read for what an open's rules need, one row: the account's cash, the pending orders'
# reservations and the costs of the account's positions not closed, each list as one text of
# exact amounts (summed in Python: SQLite's SQL arithmetic on its exact text would be floating
# point; and one row, not one per order and position: a row costs the service several times
# what an amount's text does), and whether the strategy has a position not closed (through
# the partial index of those: see _POSITION_OF). One statement, not two: on PostgreSQL every
# open on the account waits while the account's lock is held for it. The cash is read after
# the row's lock was taken by a statement before it (a lock inside this statement would come
# after its snapshot was taken, and see a stale cash).
def committed(dialect: str) -> Select[Any]:
    def amounts(column: Column[Decimal]) -> ColumnElement[str]:
        if dialect == "postgresql":
            return func.string_agg(cast(column, Text), literal_column("','"))
        return func.group_concat(column)  # SQLite's separator is ","

    orders, positions = schema.orders, schema.positions
    account_id = bindparam("account_id", type_=schema.accounts.c.id.type)
    reserved = select(amounts(orders.c.reserved)).where(
        orders.c.account_id == account_id, schema.PENDING_ORDER
    )
    costs = select(amounts(positions.c.cost)).where(
        positions.c.account_id == account_id, schema.OPEN_POSITION
    )
    has_open = exists().where(
        positions.c.strategy_id == bindparam("strategy_id"), schema.OPEN_POSITION
    )
    return select(
        schema.accounts.c.cash,
        reserved.scalar_subquery().label("reserved"),
        costs.scalar_subquery().label("costs"),
        has_open.label("has_open"),
    ).where(schema.accounts.c.id == account_id)


_COMMITTED = Statement(committed)


def _amounts(joined: str | None) -> list[Decimal]:
    return [Decimal(text) for text in joined.split(",")] if joined else []


async def funds(
    tx: Tx,
    account_id: int,
    *,
    strategy_id: int,
    terms: AccountTerms,
    venue_cash: Decimal | None = None,
) -> tuple[Funds, bool]:
    """The account's funds as the rules see them (see :mod:`app.rules`), its row locked
    (:func:`journal.lock_account`; on SQLite the write transaction holds the database's one
    write lock), and whether the strategy has a position not closed.
    ``venue_cash``, a live venue's free balance, stands in for the ledger's cash where
    given."""
    if tx.dialect.name == "postgresql":
        await journal.lock_account(tx, account_id)
    row = await tx.first(_COMMITTED, account_id=account_id, strategy_id=strategy_id)
    if row is None:
        raise LookupError(f"no account {account_id}")
    return funds_of(row, terms=terms, venue_cash=venue_cash)


def funds_of(
    row: tuple[Any, ...], *, terms: AccountTerms, venue_cash: Decimal | None = None
) -> tuple[Funds, bool]:
    """:func:`funds` from the row :func:`committed` reads (its first four columns)."""
    ledger_cash, reserved_amounts, costs, has_open = row[:4]
    reserved = sum(_amounts(reserved_amounts), ZERO)
    collateral = equity_at_cost = ZERO
    for cost in _amounts(costs):
        equity_at_cost += cost
        if cost < 0:
            collateral += short_collateral(-cost, terms=terms)
    cash = ledger_cash if venue_cash is None else venue_cash
    funds = Funds(
        cash=cash, reserved=reserved, short_collateral=collateral, equity=cash + equity_at_cost
    )
    return funds, bool(has_open)


async def account_currency(tx: Tx, account_id: int) -> str:
    return str(await tx.scalar(_CURRENCY, account_id=account_id))


_CURRENCY = Statement(
    select(schema.accounts.c.currency).where(schema.accounts.c.id == bindparam("account_id"))
)


async def account_names(connection: AsyncConnection) -> dict[int, str]:
    rows = await connection.execute(select(schema.accounts.c.id, schema.accounts.c.name))
    return {int(account_id): str(name) for account_id, name in rows}


_OPEN_POSITIONS = Statement(
    select(*_POSITION_COLUMNS).where(
        schema.positions.c.account_id == bindparam("account_id"),
        schema.positions.c.status == "open",
    )
)
# The partial index's own predicate, as text: SQLite uses a partial index only when the
# query states its condition literally, not through a bound parameter.
_POSITION_OF = Statement(
    select(*_POSITION_COLUMNS).where(
        schema.positions.c.strategy_id == bindparam("strategy_id"), schema.OPEN_POSITION
    )
)


async def open_positions(tx: Tx, *, account_id: int) -> list[OpenPosition]:
    return [OpenPosition(*row) for row in await tx.rows(_OPEN_POSITIONS, account_id=account_id)]


async def position_of(tx: Tx, strategy_id: int) -> OpenPosition | None:
    row = await tx.first(_POSITION_OF, strategy_id=strategy_id)
    return None if row is None else OpenPosition(*row)


async def flag_position(tx: Tx, position_id: int, attention: str) -> None:
    """Mark a position for the operator's attention."""
    await sql.update_row(tx, schema.positions, position_id, attention=attention)


# The strategy's open position, claimed for a close in the statement that finds it (the
# partial index's predicate as text, as in _POSITION_OF). No account lock: a close reserves
# no funds, and the claim is the position row's own.
_CLAIM_CLOSE = Statement(
    update(schema.positions)
    .where(
        schema.positions.c.strategy_id == bindparam("strategy_id"),
        schema.OPEN_POSITION,
        schema.positions.c.status == "open",
    )
    .values(status="closing")
    .returning(*_POSITION_COLUMNS)
)


async def claim_close(tx: Tx, strategy_id: int) -> OpenPosition | None:
    """The strategy's open position, now ``closing``; None when it has none ``open`` (none
    at all, or one an earlier event is still opening or closing: see :func:`position_of`).
    The caller's transaction undoes the claim if it fails."""
    row = await tx.first(_CLAIM_CLOSE, strategy_id=strategy_id)
    return None if row is None else OpenPosition(*row)
