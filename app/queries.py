"""The read side: what the operator API and the CLI show, as JSON-ready dictionaries.

Decimals stay ``Decimal`` here; :func:`app.responses.to_json` writes them as strings.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app import ledger, schema
from app.errors import NotFound

EVENT_LIMIT_MAX = 1000


async def positions(
    connection: AsyncConnection,
    *,
    status: str | None = None,
    strategy: str | None = None,
    after: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Positions in id order; ``after`` and ``limit`` page through them (streams)."""
    p, s, a = schema.positions, schema.strategies, schema.accounts
    query = (
        select(
            p.c.id,
            s.c.external_id.label("strategy_id"),
            s.c.name.label("strategy_name"),
            a.c.name.label("account"),
            p.c.ticker,
            p.c.direction,
            p.c.status,
            p.c.quantity,
            p.c.cost,
            p.c.realized_pnl,
            p.c.provider_position_id,
            p.c.created_at,
            p.c.opened_at,
            p.c.closed_at,
            p.c.attention,
        )
        .join(s, s.c.id == p.c.strategy_id)
        .join(a, a.c.id == p.c.account_id)
        .order_by(p.c.id)
    )
    if status is not None:
        query = query.where(p.c.status == status)
    if strategy is not None:
        query = query.where(s.c.external_id == strategy)
    if after is not None:
        query = query.where(p.c.id > after)
    if limit is not None:
        query = query.limit(limit)
    result = []
    for row in await connection.execute(query):
        item = dict(row._mapping)
        quantity, cost = item.pop("quantity"), item.pop("cost")
        item["quantity"] = quantity
        item["average_entry"] = abs(cost) / quantity if quantity else None
        result.append(item)
    return result


async def account_id(connection: AsyncConnection, name: str) -> int:
    found = (
        await connection.execute(select(schema.accounts.c.id).where(schema.accounts.c.name == name))
    ).scalar_one_or_none()
    if found is None:
        raise NotFound(f"no account named {name!r}")
    return int(found)


async def journal(connection: AsyncConnection, account: int) -> list[ledger.JournalEntry]:
    """The account's journal in order, as :mod:`app.ledger` values."""
    t, p = schema.ledger_transactions, schema.postings
    postings_by_transaction: dict[int, list[ledger.Posting]] = {}
    rows = await connection.execute(
        select(p.c.transaction_id, p.c.ledger_account, p.c.amount, p.c.ticker, p.c.quantity)
        .where(p.c.account_id == account)
        .order_by(p.c.id)
    )
    for transaction_id, ledger_account, amount, ticker, quantity in rows:
        postings_by_transaction.setdefault(transaction_id, []).append(
            ledger.Posting(ledger_account, amount, ticker, quantity)
        )
    entries = []
    transactions = await connection.execute(
        select(t.c.id, t.c.at, t.c.ticker, t.c.side, t.c.quantity, t.c.price, t.c.fee)
        .where(t.c.account_id == account)
        .order_by(t.c.id)
    )
    for transaction_id, at, ticker, side, quantity, price, fee in transactions:
        trade = None if ticker is None else ledger.Trade(ticker, side, quantity, price, fee)
        entries.append(
            ledger.JournalEntry(at, postings_by_transaction.get(transaction_id, []), trade)
        )
    return entries


async def book(connection: AsyncConnection, name: str) -> dict[str, Any]:
    account = await account_id(connection, name)
    derived = ledger.build_book(await journal(connection, account))
    return {
        "account": name,
        "balance": derived.balance,
        "holding": derived.holding,
        "trades": [
            {
                "at": at,
                "type": trade.side,
                "ticker": trade.ticker,
                "price": trade.price,
                "quantity": trade.quantity,
                "fee": trade.fee,
            }
            for at, trade in derived.trades
        ],
        "value": [{"at": point.at, "equity": point.equity} for point in derived.value],
        "realized_pnl": derived.realized_pnl,
        "fees": derived.fees,
        "capital": derived.capital,
    }


async def events(
    connection: AsyncConnection,
    *,
    limit: int = 100,
    event_type: str | None = None,
    state: str | None = None,
    strategy: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: int | None = None,
) -> list[dict[str, Any]]:
    """The latest deliveries first; with ``after``, those after that id, oldest first."""
    e = schema.events
    query = (
        select(
            e.c.id,
            e.c.received_at,
            e.c.event_type.label("type"),
            e.c.version,
            e.c.deprecation,
            e.c.strategy_external_id.label("strategy_id"),
            e.c.provider_position_id,
            e.c.state,
            e.c.duplicate_of,
            e.c.error_type,
            e.c.answer_status,
            e.c.answer_body,
            e.c.note,
            e.c.timings,
        )
        .order_by(e.c.id.desc() if after is None else e.c.id)
        .limit(max(1, min(limit, EVENT_LIMIT_MAX)))
    )
    filters = {
        e.c.event_type: event_type,
        e.c.state: state,
        e.c.strategy_external_id: strategy,
    }
    for column, value in filters.items():
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(e.c.received_at >= since)
    if until is not None:
        query = query.where(e.c.received_at < until)
    if after is not None:
        query = query.where(e.c.id > after)
    result = []
    for row in await connection.execute(query):
        item = dict(row._mapping)
        item["timings"] = json.loads(item["timings"]) if item["timings"] else None
        result.append(item)
    return result


async def event(connection: AsyncConnection, event_id: int) -> dict[str, Any]:
    """One delivery with everything stored about it, the raw body included (as text)."""
    e = schema.events
    row = (await connection.execute(select(e).where(e.c.id == event_id))).one_or_none()
    if row is None:
        raise NotFound(f"no event {event_id}")
    item = dict(row._mapping)
    item["raw_body"] = item["raw_body"].decode("utf-8", errors="replace")
    item["timings"] = json.loads(item["timings"]) if item["timings"] else None
    return item


async def orders(
    connection: AsyncConnection, *, after: int | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Orders with their fills, in id order (after ``after``)."""
    o, f = schema.orders, schema.fills
    query = select(o).order_by(o.c.id).limit(max(1, min(limit, EVENT_LIMIT_MAX)))
    if after is not None:
        query = query.where(o.c.id > after)
    result = [dict(row._mapping) for row in await connection.execute(query)]
    if result:
        fills = await connection.execute(
            select(f).where(f.c.order_id.in_([item["id"] for item in result])).order_by(f.c.id)
        )
        by_order: dict[int, list[dict[str, Any]]] = {}
        for fill in fills:
            by_order.setdefault(fill.order_id, []).append(dict(fill._mapping))
        for item in result:
            item["fills"] = by_order.get(item["id"], [])
    return result


async def ledger_entries(
    connection: AsyncConnection,
    *,
    account: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Ledger transactions with their postings, in id order (after ``after``)."""
    t, p = schema.ledger_transactions, schema.postings
    query = select(t).order_by(t.c.id).limit(max(1, min(limit, EVENT_LIMIT_MAX)))
    if account is not None:
        query = query.where(t.c.account_id == await account_id(connection, account))
    if after is not None:
        query = query.where(t.c.id > after)
    result = [dict(row._mapping) for row in await connection.execute(query)]
    if result:
        rows = await connection.execute(
            select(p.c.transaction_id, p.c.ledger_account, p.c.amount, p.c.ticker, p.c.quantity)
            .where(p.c.transaction_id.in_([item["id"] for item in result]))
            .order_by(p.c.id)
        )
        by_transaction: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            posting = dict(row._mapping)
            by_transaction.setdefault(posting.pop("transaction_id"), []).append(posting)
        for item in result:
            item["postings"] = by_transaction.get(item["id"], [])
    return result


async def strategies(connection: AsyncConnection) -> list[dict[str, Any]]:
    """Strategies with their integration, switches, the operator's sizing rules (None: the
    config's) and their position that is not closed, if any."""
    st, i, p = schema.strategies, schema.integrations, schema.positions
    rows = await connection.execute(
        select(
            st.c.id,
            st.c.external_id,
            st.c.name,
            i.c.name.label("integration"),
            st.c.enabled,
            st.c.paused,
            st.c.quantity_multiplier,
            st.c.max_order_quantity,
            st.c.allocation_percent,
            p.c.id.label("position_id"),
        )
        .join(i, i.c.id == st.c.integration_id)
        .outerjoin(p, (p.c.strategy_id == st.c.id) & (p.c.status != "closed"))
        .order_by(st.c.id)
    )
    return [dict(row._mapping) for row in rows]


async def integrations(connection: AsyncConnection) -> list[dict[str, Any]]:
    """Integrations with their user, account and number of live tokens (never the tokens)."""
    i, u, a, t = schema.integrations, schema.users, schema.accounts, schema.integration_tokens
    live = (
        select(func.count())
        .where(t.c.integration_id == i.c.id, t.c.revoked_at.is_(None))
        .scalar_subquery()
    )
    rows = await connection.execute(
        select(
            i.c.id,
            i.c.name,
            u.c.email.label("user"),
            a.c.name.label("account"),
            i.c.provider,
            i.c.status,
            i.c.token_header,
            live.label("live_tokens"),
            i.c.updated_at,
        )
        .join(u, u.c.id == i.c.user_id)
        .join(a, a.c.id == i.c.account_id)
        .order_by(i.c.id)
    )
    return [dict(row._mapping) for row in rows]


async def integration_user(connection: AsyncConnection, integration_id: int) -> str:
    i, u = schema.integrations, schema.users
    email = await connection.scalar(
        select(u.c.email).join(i, i.c.user_id == u.c.id).where(i.c.id == integration_id)
    )
    return str(email)


async def open_position_count(connection: AsyncConnection) -> int:
    p = schema.positions
    return int(await connection.scalar(select(func.count()).where(p.c.status != "closed")) or 0)


async def latest_id(connection: AsyncConnection, table: str) -> int:
    """The highest row id of one of the streamed tables (0 when empty)."""
    column = schema.metadata.tables[table].c.id
    return int(await connection.scalar(select(func.coalesce(func.max(column), 0))) or 0)


async def version_warnings(connection: AsyncConnection) -> list[dict[str, Any]]:
    """Envelope versions in use that the provider has dated for deprecation."""
    e = schema.events
    rows = await connection.execute(
        select(e.c.version, e.c.deprecation, func.max(e.c.received_at), func.count())
        .where(e.c.deprecation.is_not(None))
        .group_by(e.c.version, e.c.deprecation)
        .order_by(e.c.version)
    )
    return [
        {"version": version, "deprecation": deprecation, "last_seen": seen, "deliveries": count}
        for version, deprecation, seen, count in rows
    ]
