"""Orders, positions and the ledger journal, written inside a transaction the caller owns.

The write path of one leg (open or close) is two transactions around the broker call:

1. :func:`reserve_open` / :func:`claim_close` and :func:`reserve_close`: read what the
   rules need, let the pure rules decide, then persist the order intent (with its client
   order id and the funds it sets aside) and claim the position (``opening`` /
   ``closing``). The position's partial unique index makes a second open for the strategy
   fail here, before any broker call.
2. :func:`app.reports.apply_report`: record the broker's answer; each fill is applied once
   (unique per order), moves the position and posts a balanced ledger transaction.

On PostgreSQL, where each statement is a round trip, an open's position and intent are one
statement, and a close checked before its claim (from the ticker its signal names) is
claimed with its intent made in one statement outside a transaction
(:func:`claim_and_reserve_close`; :mod:`app.intent_statements`); step 2 is mostly one
statement too (:mod:`app.one_fill`).

Locks, on PostgreSQL (SQLite has one writer at a time): a funds check locks the account
row first (:func:`journal.lock_account`), so two processes cannot spend the same cash; a
report locks its order and position rows first and moves the account's cash last, so the
account row is held only from that update to the commit. Trading on one account waits
for no more than that.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    bindparam,
    literal,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from app import journal, schema, sql
from app.errors import PositionAlreadyExists
from app.intent_statements import CLOSING, OPENING
from app.rules import (
    AccountTerms,
    Direction,
    Funds,
    OrderPlan,
    Side,
    short_collateral,
    side_for,
)
from app.sql import Statement, Tx, UniqueViolation
from app.values import value
from app.workers import Worker

ZERO = Decimal(0)
Purpose = Literal["open", "close"]
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
class OrderIntent:
    order_id: int
    client_order_id: str
    account_id: int
    position_id: int
    purpose: Purpose
    ticker: str
    symbol: str
    side: Side
    quantity: Decimal
    # The position's quantity and cost as this intent left it (an open's: none yet; a
    # close's: what it closes), when the intent was just made: a report of its one fill
    # can then be written without reading them first (app.reports.apply_new_fill). None
    # for an intent read back from the database.
    held: tuple[Decimal, Decimal] | None = None


@value
class OpenPosition:
    id: int
    ticker: str
    direction: Direction
    status: str
    quantity: Decimal
    cost: Decimal
    provider_position_id: str | None


# One read for what an open's rules need (summed in Python: SQLite's SQL arithmetic on its
# exact text would be floating point): the pending orders' reservations, the costs of the
# account's positions not closed, and the strategy's own position not closed, if any
# (through the partial index of those: see _POSITION_OF). One statement, not two: on
# PostgreSQL every open on the account waits while the account's lock is held for it.
# On SQLite it reads the account's cash too, where PostgreSQL takes the row's lock for it
# first (a lock inside the statement would come after its snapshot was taken).
def _committed(dialect: str) -> CompoundSelect[tuple[Decimal, str]]:
    parts = [
        select(schema.orders.c.reserved, literal("reserved")).where(
            schema.orders.c.account_id == bindparam("account_id"),
            schema.PENDING_ORDER,
        ),
        select(schema.positions.c.cost, literal("cost")).where(
            schema.positions.c.account_id == bindparam("account_id"), schema.OPEN_POSITION
        ),
        select(schema.positions.c.cost, literal("strategy")).where(
            schema.positions.c.strategy_id == bindparam("strategy_id"), schema.OPEN_POSITION
        ),
    ]
    if dialect == "sqlite":
        parts.append(
            select(schema.accounts.c.cash, literal("cash")).where(
                schema.accounts.c.id == bindparam("account_id")
            )
        )
    return union_all(*parts)


_COMMITTED = Statement(_committed)


async def funds(
    tx: Tx,
    account_id: int,
    *,
    strategy_id: int,
    terms: AccountTerms,
    venue_cash: Decimal | None = None,
) -> tuple[Funds, bool]:
    """The account's funds as the rules see them (see :mod:`app.rules`), its row locked
    (:func:`journal.lock_account`; on SQLite the write transaction holds the database's
    one write lock), and whether the strategy has a position not closed. ``venue_cash``,
    a live venue's free balance, stands in for the ledger's cash where given."""
    ledger_cash: Decimal | None = None
    if tx.dialect.name == "postgresql":
        ledger_cash = await journal.lock_account(tx, account_id)
    reserved = collateral = equity_at_cost = ZERO
    has_open = False
    rows = await tx.rows(_COMMITTED, account_id=account_id, strategy_id=strategy_id)
    for amount, kind in rows:
        if kind == "reserved":
            reserved += amount
        elif kind == "strategy":
            has_open = True
        elif kind == "cash":
            ledger_cash = amount
        else:
            equity_at_cost += amount
            if amount < 0:
                collateral += short_collateral(-amount, terms=terms)
    if ledger_cash is None:
        raise LookupError(f"no account {account_id}")
    cash = ledger_cash if venue_cash is None else venue_cash
    funds = Funds(
        cash=cash, reserved=reserved, short_collateral=collateral, equity=cash + equity_at_cost
    )
    return funds, has_open


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


async def reserve_open(
    tx: Tx,
    *,
    event_id: int,
    strategy_id: int,
    account_id: int,
    client_order_id: str,
    provider_position_id: str,
    direction: Direction,
    terms: AccountTerms,
    decide: Callable[[Funds, bool], OrderPlan],
    now: datetime,
    venue_cash: Decimal | None = None,
) -> OrderIntent:
    # The position is read under the account's lock, never before it: an open that read
    # "none" before another open committed would insert its own, wait on the unique index
    # for that one's fill (which waits for this account lock to move the cash): a deadlock
    # on PostgreSQL, seen in test_twenty_concurrent_opens_for_one_strategy_give_one_position.
    current, has_open = await funds(
        tx, account_id, strategy_id=strategy_id, terms=terms, venue_cash=venue_cash
    )
    plan = decide(current, has_open)
    if tx.dialect.name == "postgresql":
        row = await tx.first(
            OPENING,
            strategy_id=strategy_id,
            account_id=account_id,
            ticker=plan.instrument.ticker,
            direction=direction,
            provider_position_id=provider_position_id,
            client_order_id=client_order_id,
            event_id=event_id,
            symbol=plan.instrument.symbol,
            side=plan.side,
            quantity=plan.quantity,
            reserved=plan.reserve,
            now=now,
        )
        if row is None:
            raise PositionAlreadyExists(_ALREADY_OPEN)
        order_id, position_id = row
        return OrderIntent(
            order_id=order_id,
            client_order_id=client_order_id,
            account_id=account_id,
            position_id=position_id,
            purpose="open",
            ticker=plan.instrument.ticker,
            symbol=plan.instrument.symbol,
            side=plan.side,
            quantity=plan.quantity,
            held=(ZERO, ZERO),
        )
    try:
        # No savepoint is needed: a refused insert changes nothing, and the caller's
        # transaction ends with the error (on PostgreSQL it is aborted anyway).
        position_id = await sql.insert_id(
            tx,
            schema.positions,
            strategy_id=strategy_id,
            account_id=account_id,
            ticker=plan.instrument.ticker,
            direction=direction,
            status="opening",
            quantity=ZERO,
            cost=ZERO,
            realized_pnl=ZERO,
            provider_position_id=provider_position_id,
            created_at=now,
        )
    except UniqueViolation as exc:
        raise PositionAlreadyExists(_ALREADY_OPEN) from exc
    return await _insert_order(
        tx,
        event_id=event_id,
        strategy_id=strategy_id,
        account_id=account_id,
        position_id=position_id,
        client_order_id=client_order_id,
        purpose="open",
        ticker=plan.instrument.ticker,
        symbol=plan.instrument.symbol,
        side=plan.side,
        quantity=plan.quantity,
        reserved=plan.reserve,
        held=(ZERO, ZERO),
        now=now,
    )


_ALREADY_OPEN = "the strategy already has an open position"


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


async def reserve_close(
    tx: Tx,
    position: OpenPosition,
    *,
    event_id: int,
    strategy_id: int,
    account_id: int,
    client_order_id: str,
    symbol: str,
    now: datetime,
) -> OrderIntent:
    """The intent that closes a position :func:`claim_close` claimed."""
    return await _insert_order(
        tx,
        event_id=event_id,
        strategy_id=strategy_id,
        account_id=account_id,
        position_id=position.id,
        client_order_id=client_order_id,
        purpose="close",
        ticker=position.ticker,
        symbol=symbol,
        side=side_for(position.direction, closing=True),
        quantity=position.quantity,
        reserved=ZERO,
        held=(position.quantity, position.cost),
        now=now,
    )


async def claim_and_reserve_close(
    tx: Tx,
    *,
    strategy_id: int,
    ticker: str,
    event_id: int,
    account_id: int,
    client_order_id: str,
    symbol: str,
    now: datetime,
) -> OrderIntent | None:
    """PostgreSQL: :func:`claim_close` and :func:`reserve_close` in one statement on its own
    (:data:`app.intent_statements.CLOSING`), for a position trading ``ticker``, which the
    caller checked. None, with nothing written, when the strategy has no such position
    ``open``: the caller then claims and checks in a transaction."""
    row = await tx.first(
        CLOSING,
        strategy_id=strategy_id,
        ticker=ticker,
        event_id=event_id,
        account_id=account_id,
        client_order_id=client_order_id,
        symbol=symbol,
        long_side=side_for("long", closing=True),
        short_side=side_for("short", closing=True),
        now=now,
    )
    if row is None:
        return None
    order_id, position_id, side, quantity, cost = row
    return OrderIntent(
        order_id=order_id,
        client_order_id=client_order_id,
        account_id=account_id,
        position_id=position_id,
        purpose="close",
        ticker=ticker,
        symbol=symbol,
        side=side,
        quantity=quantity,
        held=(quantity, cost),
    )


async def _insert_order(
    tx: Tx,
    *,
    event_id: int,
    strategy_id: int,
    account_id: int,
    position_id: int,
    client_order_id: str,
    purpose: Purpose,
    ticker: str,
    symbol: str,
    side: Side,
    quantity: Decimal,
    reserved: Decimal,
    held: tuple[Decimal, Decimal],
    now: datetime,
) -> OrderIntent:
    order_id = await sql.insert_id(
        tx,
        schema.orders,
        client_order_id=client_order_id,
        event_id=event_id,
        account_id=account_id,
        strategy_id=strategy_id,
        position_id=position_id,
        purpose=purpose,
        ticker=ticker,
        symbol=symbol,
        side=side,
        quantity=quantity,
        reserved=reserved,
        status="pending",
        filled_quantity=ZERO,
        fee=ZERO,
        created_at=now,
        updated_at=now,
    )
    return OrderIntent(
        order_id=order_id,
        client_order_id=client_order_id,
        account_id=account_id,
        position_id=position_id,
        purpose=purpose,
        ticker=ticker,
        symbol=symbol,
        side=side,
        quantity=quantity,
        held=held,
    )


def _intent_columns() -> tuple[ColumnElement[Any], ...]:
    table = schema.orders
    return (
        table.c.id,
        table.c.client_order_id,
        table.c.account_id,
        table.c.position_id,
        table.c.purpose,
        table.c.ticker,
        table.c.symbol,
        table.c.side,
        table.c.quantity,
    )


_PENDING_INTENTS = Statement(
    select(*_intent_columns())
    .where(schema.PENDING_ORDER, schema.orders.c.event_id == bindparam("event_id"))
    .order_by(schema.orders.c.id)
)
_LEG_ORDERS = Statement(
    select(schema.orders.c.status).where(
        schema.orders.c.event_id == bindparam("event_id"),
        schema.orders.c.purpose == bindparam("purpose"),
    )
)


async def pending_intents(tx: Tx, *, event_id: int) -> list[OrderIntent]:
    """An event's intents without a final state (the event's runner settles them)."""
    return [OrderIntent(*row) for row in await tx.rows(_PENDING_INTENTS, event_id=event_id)]


async def orphaned_intents(
    connection: AsyncConnection, worker: Worker, *, account_id: int | None = None
) -> list[OrderIntent]:
    """Intents without a final state that no live process is sending: their event's worker
    is gone, or it is this worker and the event is no longer running (an outcome left
    unknown). Another live worker's intents are its own to settle: its broker call may be
    under way, and a paper broker knows only its own process's orders."""
    orders, events = schema.orders, schema.events
    query = (
        select(*_intent_columns(), events.c.worker_id, events.c.state)
        .join(events, events.c.id == orders.c.event_id)
        .where(schema.PENDING_ORDER)
    )
    if account_id is not None:
        query = query.where(orders.c.account_id == account_id)
    rows = (await connection.execute(query.order_by(orders.c.id))).all()
    gone = await worker.gone(connection, {row.worker_id for row in rows})
    return [
        OrderIntent(*row[:-2])
        for row in rows
        if row.worker_id in gone or (row.worker_id == worker.id and row.state != "pending")
    ]


async def leg_orders(tx: Tx, *, event_id: int, purpose: Purpose) -> list[str]:
    """The final statuses of the orders an event already sent for one leg."""
    return [
        str(status) for status in await tx.scalars(_LEG_ORDERS, event_id=event_id, purpose=purpose)
    ]
