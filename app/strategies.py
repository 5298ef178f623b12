"""Strategies: the provider's (enabled by its events), steered by the operator (paused,
sizing rules). Each function runs inside a transaction its caller owns."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from app import schema
from app.database import insert_or_ignore, update_row


@dataclass(frozen=True, slots=True)
class Strategy:
    id: int
    external_id: str
    name: str
    enabled: bool
    paused: bool = False
    integration_id: int = 0
    quantity_multiplier: Decimal | None = None
    max_order_quantity: Decimal | None = None
    allocation_percent: Decimal | None = None


async def ensure_strategy(
    connection: AsyncConnection,
    integration_id: int,
    *,
    external_id: str,
    name: str,
    enabled: bool | None,
    now: datetime,
) -> Strategy:
    """The strategy, created (enabled) when first seen; ``enabled`` sets its flag."""
    table = schema.strategies
    query = select(*_STRATEGY_COLUMNS).where(
        table.c.integration_id == integration_id, table.c.external_id == external_id
    )
    row = (await connection.execute(query)).one_or_none()
    if row is None:
        await insert_or_ignore(
            connection,
            table,
            {
                "integration_id": integration_id,
                "external_id": external_id,
                "name": name,
                "enabled": True if enabled is None else enabled,
                "updated_at": now,
            },
            unique=["integration_id", "external_id"],
        )
        row = (await connection.execute(query)).one()
    strategy = Strategy(*row)
    wanted = strategy.enabled if enabled is None else enabled
    wanted_name = name or strategy.name
    if wanted != strategy.enabled or wanted_name != strategy.name:
        await update_row(
            connection, table, strategy.id, enabled=wanted, name=wanted_name, updated_at=now
        )
    return dataclasses.replace(strategy, enabled=wanted, name=wanted_name)


_STRATEGY_COLUMNS = (
    schema.strategies.c.id,
    schema.strategies.c.external_id,
    schema.strategies.c.name,
    schema.strategies.c.enabled,
    schema.strategies.c.paused,
    schema.strategies.c.integration_id,
    schema.strategies.c.quantity_multiplier,
    schema.strategies.c.max_order_quantity,
    schema.strategies.c.allocation_percent,
)


async def strategy_by_id(connection: AsyncConnection, strategy_id: int) -> Strategy | None:
    row = (
        await connection.execute(
            select(*_STRATEGY_COLUMNS).where(schema.strategies.c.id == strategy_id)
        )
    ).one_or_none()
    return None if row is None else Strategy(*row)


async def update_strategy(
    connection: AsyncConnection, strategy_id: int, *, now: datetime, **values: object
) -> None:
    """Set the operator's fields: ``paused`` and the sizing rules (None: the config's)."""
    await update_row(connection, schema.strategies, strategy_id, updated_at=now, **values)
