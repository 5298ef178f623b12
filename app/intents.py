"""Order intents: what an open or a close persists, with its client order id, before the
broker is called (the design's invariant 3), and what is read back of them to settle.

The write path of one leg (open or close) is two transactions around the broker call:

1. :func:`reserve_open` (the funds read under the account's lock, the pure rules'
   decision, then the position ``opening`` and the intent) / :func:`app.trading.claim_close`
   and :func:`reserve_close` (the position claimed ``closing``, checked, then the intent).
   The position's partial unique index makes a second open for the strategy fail here,
   before any broker call.
2. :func:`app.reports.apply_report`: record the broker's answer; each fill is applied once
   (unique per order), moves the position and posts a balanced ledger transaction.

On PostgreSQL, where each statement is a round trip, an open's position and intent are one
statement, and a close checked before its claim (from the ticker its signal names) is
claimed with its intent made in one statement outside a transaction
(:func:`claim_and_reserve_close`; :mod:`app.intent_statements`); step 2 is mostly one
statement too (:mod:`app.one_fill`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, TypedDict

from sqlalchemy import ColumnElement, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app import schema, sql
from app.errors import InsufficientFunds, PositionAlreadyExists
from app.intent_statements import CLOSING, OPENING, OPENING_LOCKED
from app.rules import UNLIMITED, AccountTerms, Direction, Funds, OrderPlan, Side, side_for
from app.sql import Statement, Tx, UniqueViolation
from app.trading import OpenPosition, funds, funds_of
from app.values import value
from app.workers import Worker

ZERO = Decimal(0)
Purpose = Literal["open", "close"]


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
    """The open's funds read under the account's lock (:func:`app.trading.funds`), ``decide``
    run on them (it raises the rules' refusal), then the position ``opening`` and the order's
    intent. The caller's transaction is undone when this raises.

    On PostgreSQL, in an open's transaction (``Tx.opening_account``), the lock, the read and
    the inserts are one round trip (:data:`OPENING_LOCKED`, while every open on the account
    waits for its lock): the order is planned first with funds that refuse nothing
    (``rules.UNLIMITED``), the statement locks the account, inserts the order and reads the
    funds as they were before it, and ``decide`` runs again on those. A refusal then undoes
    the inserts with the transaction; the answer is the same as when the funds are read
    first. A plan refused even with unlimited funds (no shorts allowed, nothing allocated)
    takes the other way: the account locked and the funds read first, as on SQLite."""
    # The position is read under the account's lock, never before it: an open that read
    # "none" before another open committed would insert its own, wait on the unique index
    # for that one's fill (which waits for this account lock to move the cash): a deadlock
    # on PostgreSQL, seen in test_twenty_concurrent_opens_for_one_strategy_give_one_position.
    opening = {  # the parameters of the one-statement opens, but for the plan's
        "strategy_id": strategy_id,
        "account_id": account_id,
        "direction": direction,
        "provider_position_id": provider_position_id,
        "client_order_id": client_order_id,
        "event_id": event_id,
        "now": now,
    }
    if tx.dialect.name == "postgresql" and tx.opening_account == account_id:
        try:
            planned = decide(UNLIMITED, False)
        except InsufficientFunds:
            pass  # refused for what the funds cannot change: the order of checks decides
        else:
            row = await tx.first(OPENING_LOCKED, **opening, **_planned(planned))
            if row is None:
                raise LookupError(f"no account {account_id}")
            current, has_open = funds_of(row, terms=terms, venue_cash=venue_cash)
            if decide(current, has_open) != planned:  # a refusal raises here
                raise AssertionError("an open planned twice gave two plans")
            order_id, position_id = row[4:]
            if order_id is None:  # the strategy's position not closed, committed meanwhile
                raise PositionAlreadyExists(_ALREADY_OPEN)
            return _opened(
                planned,
                order_id,
                position_id,
                client_order_id=client_order_id,
                account_id=account_id,
            )
    current, has_open = await funds(
        tx, account_id, strategy_id=strategy_id, terms=terms, venue_cash=venue_cash
    )
    plan = decide(current, has_open)
    if tx.dialect.name == "postgresql":
        row = await tx.first(OPENING, **opening, **_planned(plan))
        if row is None:
            raise PositionAlreadyExists(_ALREADY_OPEN)
        return _opened(plan, *row, client_order_id=client_order_id, account_id=account_id)
    try:
        # No savepoint is needed: a refused insert changes nothing, and the caller's
        # transaction ends with the error.
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
        **_planned(plan),
        held=(ZERO, ZERO),
        now=now,
    )


class _Planned(TypedDict):
    """An open's order as its plan sets it: the parameters its intent is made with."""

    ticker: str
    symbol: str
    side: Side
    quantity: Decimal
    reserved: Decimal


def _planned(plan: OrderPlan) -> _Planned:
    return _Planned(
        ticker=plan.instrument.ticker,
        symbol=plan.instrument.symbol,
        side=plan.side,
        quantity=plan.quantity,
        reserved=plan.reserve,
    )


def _opened(
    plan: OrderPlan, order_id: int, position_id: int, *, client_order_id: str, account_id: int
) -> OrderIntent:
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


_ALREADY_OPEN = "the strategy already has an open position"


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
