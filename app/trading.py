"""Orders, positions and the ledger journal, written inside a transaction the caller owns.

The write path of one leg (open or close) is two transactions around the broker call:

1. :func:`reserve_open` / :func:`reserve_close`: read what the rules need, let the pure
   rules decide, then persist the order intent (with its client order id and the funds it
   sets aside) and claim the position (``opening`` / ``closing``). The position's partial
   unique index makes a second open for the strategy fail here, before any broker call.
2. :func:`apply_report`: record the broker's answer; each fill is applied once (unique per
   order), moves the position and posts a balanced ledger transaction.

On PostgreSQL the account row is locked (``FOR UPDATE``) while funds are read, so two
processes cannot spend the same cash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app import journal, ledger, schema
from app.broker import OrderReport
from app.database import insert_id, update_row
from app.errors import PositionAlreadyExists
from app.rules import AccountTerms, Direction, Funds, OrderPlan, Side, short_collateral
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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class OpenPosition:
    id: int
    ticker: str
    direction: Direction
    status: str
    quantity: Decimal
    cost: Decimal
    provider_position_id: str | None


async def funds(
    connection: AsyncConnection,
    account_id: int,
    *,
    terms: AccountTerms,
    lock: bool,
    venue_cash: Decimal | None = None,
) -> Funds:
    """The account's funds as the rules see them (see :mod:`app.rules`). ``venue_cash``, a
    live venue's free balance, stands in for the ledger's cash where given."""
    account = select(schema.accounts.c.cash).where(schema.accounts.c.id == account_id)
    ledger_cash = (
        await connection.execute(account.with_for_update() if lock else account)
    ).scalar_one()
    cash = ledger_cash if venue_cash is None else venue_cash
    reserved = sum(
        (
            await connection.execute(
                select(schema.orders.c.reserved).where(
                    schema.orders.c.account_id == account_id, schema.orders.c.status == "pending"
                )
            )
        ).scalars(),
        ZERO,
    )
    costs = (
        await connection.execute(
            select(schema.positions.c.cost).where(
                schema.positions.c.account_id == account_id, schema.positions.c.status != "closed"
            )
        )
    ).scalars()
    collateral = equity_at_cost = ZERO
    for cost in costs:
        equity_at_cost += cost
        if cost < 0:
            collateral += short_collateral(-cost, terms=terms)
    return Funds(
        cash=cash, reserved=reserved, short_collateral=collateral, equity=cash + equity_at_cost
    )


async def account_currency(connection: AsyncConnection, account_id: int) -> str:
    return str(
        await connection.scalar(
            select(schema.accounts.c.currency).where(schema.accounts.c.id == account_id)
        )
    )


async def account_names(connection: AsyncConnection) -> dict[int, str]:
    rows = await connection.execute(select(schema.accounts.c.id, schema.accounts.c.name))
    return {int(account_id): str(name) for account_id, name in rows}


async def open_positions(connection: AsyncConnection, *, account_id: int) -> list[OpenPosition]:
    table = schema.positions
    rows = await connection.execute(
        select(*_POSITION_COLUMNS).where(table.c.account_id == account_id, table.c.status == "open")
    )
    return [OpenPosition(*row) for row in rows]


async def position_of(connection: AsyncConnection, strategy_id: int) -> OpenPosition | None:
    table = schema.positions
    row = (
        await connection.execute(
            select(*_POSITION_COLUMNS).where(
                table.c.strategy_id == strategy_id, table.c.status != "closed"
            )
        )
    ).one_or_none()
    return None if row is None else OpenPosition(*row)


async def flag_position(connection: AsyncConnection, position_id: int, attention: str) -> None:
    """Mark a position for the operator's attention."""
    await update_row(connection, schema.positions, position_id, attention=attention)


async def reserve_open(
    connection: AsyncConnection,
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
    current = await funds(connection, account_id, terms=terms, lock=True, venue_cash=venue_cash)
    plan = decide(current, await position_of(connection, strategy_id) is not None)
    try:
        async with connection.begin_nested():
            position_id = await insert_id(
                connection,
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
    except IntegrityError as exc:
        raise PositionAlreadyExists("the strategy already has an open position") from exc
    return await _insert_order(
        connection,
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
        now=now,
    )


async def reserve_close(
    connection: AsyncConnection,
    position: OpenPosition,
    *,
    event_id: int,
    strategy_id: int,
    account_id: int,
    client_order_id: str,
    symbol: str,
    now: datetime,
) -> OrderIntent:
    await journal.lock_account(connection, account_id)  # first, as every trading write
    claimed = await connection.execute(
        update(schema.positions)
        .where(schema.positions.c.id == position.id, schema.positions.c.status == "open")
        .values(status="closing")
    )
    if claimed.rowcount != 1:
        raise RuntimeError(f"position {position.id} is no longer open")
    return await _insert_order(
        connection,
        event_id=event_id,
        strategy_id=strategy_id,
        account_id=account_id,
        position_id=position.id,
        client_order_id=client_order_id,
        purpose="close",
        ticker=position.ticker,
        symbol=symbol,
        side="sell" if position.direction == "long" else "buy",
        quantity=position.quantity,
        reserved=ZERO,
        now=now,
    )


async def _insert_order(
    connection: AsyncConnection,
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
    now: datetime,
) -> OrderIntent:
    order_id = await insert_id(
        connection,
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


async def pending_intents(connection: AsyncConnection, *, event_id: int) -> list[OrderIntent]:
    """An event's intents without a final state (the event's runner settles them)."""
    table = schema.orders
    query = select(*_intent_columns()).where(
        table.c.status == "pending", table.c.event_id == event_id
    )
    return [OrderIntent(*row) for row in (await connection.execute(query.order_by(table.c.id)))]


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
        .where(orders.c.status == "pending")
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


async def leg_orders(connection: AsyncConnection, *, event_id: int, purpose: Purpose) -> list[str]:
    """The final statuses of the orders an event already sent for one leg."""
    table = schema.orders
    return list(
        (
            await connection.execute(
                select(table.c.status).where(
                    table.c.event_id == event_id, table.c.purpose == purpose
                )
            )
        ).scalars()
    )


async def apply_report(
    connection: AsyncConnection, intent: OrderIntent, report: OrderReport, *, now: datetime
) -> None:
    """Record the broker's answer about an intent; apply each fill once."""
    await journal.lock_account(connection, intent.account_id)  # first, as every trading write
    orders, fills = schema.orders, schema.fills
    order = select(orders.c.status).where(orders.c.id == intent.order_id)
    if (await connection.execute(order.with_for_update())).scalar_one() != "pending":
        return
    seen = set(
        (
            await connection.execute(
                select(fills.c.broker_fill_id).where(fills.c.order_id == intent.order_id)
            )
        ).scalars()
    )
    for fill in report.fills:
        if fill.fill_id in seen:
            continue
        seen.add(fill.fill_id)
        fill_id = await insert_id(
            connection,
            fills,
            order_id=intent.order_id,
            broker_fill_id=fill.fill_id,
            quantity=fill.quantity,
            price=fill.price,
            fee=fill.fee,
            filled_at=fill.at,
        )
        trade = ledger.Trade(intent.ticker, intent.side, fill.quantity, fill.price, fill.fee)
        await _apply_fill(connection, intent, trade, fill_id=fill_id, at=fill.at)
    await _settle(connection, intent, report, now=now)


async def _apply_fill(
    connection: AsyncConnection,
    intent: OrderIntent,
    trade: ledger.Trade,
    *,
    fill_id: int,
    at: datetime,
) -> None:
    table = schema.positions
    quantity, cost, realized = (
        await connection.execute(
            select(table.c.quantity, table.c.cost, table.c.realized_pnl).where(
                table.c.id == intent.position_id
            )
        )
    ).one()
    if intent.purpose == "open":
        released = None
        quantity, cost = quantity + trade.quantity, cost + trade.signed_quantity * trade.price
    else:
        released = cost if trade.quantity >= quantity else cost * trade.quantity / quantity
        quantity, cost = max(quantity - trade.quantity, ZERO), cost - released
    postings = ledger.trade_postings(trade, cost_released=released)
    realized -= sum((p.amount for p in postings if p.ledger_account == "pnl"), ZERO)
    await update_row(
        connection, table, intent.position_id, quantity=quantity, cost=cost, realized_pnl=realized
    )
    await journal.post(
        connection,
        intent.account_id,
        reference=f"fill:{fill_id}",
        kind="trade",
        postings=postings,
        now=at,
        fill_id=fill_id,
        trade=trade,
    )


async def _settle(
    connection: AsyncConnection, intent: OrderIntent, report: OrderReport, *, now: datetime
) -> None:
    """Give the order its final state and the position the state that follows from it."""
    orders, positions = schema.orders, schema.positions
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
    await update_row(
        connection,
        orders,
        intent.order_id,
        status=status,
        broker_order_id=report.broker_order_id,
        filled_quantity=filled,
        average_price=average,
        fee=fee,
        reason=report.reason,
        updated_at=now,
    )
    quantity = (
        await connection.execute(
            select(positions.c.quantity).where(positions.c.id == intent.position_id)
        )
    ).scalar_one()
    values: dict[str, object]
    if intent.purpose == "open":
        if quantity == 0:
            # Nothing filled: the position never existed; the order keeps the record.
            await update_row(connection, orders, intent.order_id, position_id=None)
            await connection.execute(delete(positions).where(positions.c.id == intent.position_id))
            return
        values = {"status": "open", "opened_at": now}
        if filled < intent.quantity:
            values["attention"] = f"partially filled: {filled} of {intent.quantity}"
    elif quantity == 0:
        values = {"status": "closed", "closed_at": now}
    else:
        values = {"status": "open"}
        if filled:
            values["attention"] = f"close partially filled: {quantity} still open"
    await update_row(connection, positions, intent.position_id, **values)
