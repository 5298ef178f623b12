"""Strategies: the provider's (enabled by its events), steered by the operator (paused,
sizing rules). Each function runs inside a transaction its caller owns."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from decimal import Decimal

from sqlalchemy import bindparam, exists, select, union_all
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import ClauseElement

from app import schema, sql
from app.sql import Tx
from app.values import value


@value
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


STRATEGY_COLUMNS = (
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
_KEY = (
    schema.strategies.c.integration_id == bindparam("integration_id"),
    schema.strategies.c.external_id == bindparam("external_id"),
)
_BY_KEY = sql.Statement(select(*STRATEGY_COLUMNS).where(*_KEY))
_BY_ID = sql.Statement(
    select(*STRATEGY_COLUMNS).where(schema.strategies.c.id == bindparam("strategy_id"))
)
_CREATED_COLUMNS = ["integration_id", "external_id", "name", "enabled", "updated_at"]
_CREATE = sql.insert_or_ignore(
    schema.strategies,
    _CREATED_COLUMNS,
    unique=["integration_id", "external_id"],
    returning=STRATEGY_COLUMNS,
)


def _found_or_created(_dialect: str) -> ClauseElement:
    """PostgreSQL: the strategy's row, inserted first when there is none, in one round
    trip (each costs the service and the database CPU: README, Performance). No row when
    another delivery inserted it meanwhile (its insert is not yet visible here)."""
    table = schema.strategies
    found = select(*STRATEGY_COLUMNS).where(*_KEY).cte("found")
    created = (
        postgresql.insert(table)
        .from_select(
            _CREATED_COLUMNS,
            select(*(bindparam(name, type_=table.c[name].type) for name in _CREATED_COLUMNS)).where(
                ~exists(select(found.c.id))
            ),
        )
        .on_conflict_do_nothing(index_elements=["integration_id", "external_id"])
        .returning(*STRATEGY_COLUMNS)
        .cte("created")
    )
    return union_all(select(found), select(created))


_FOUND_OR_CREATED = sql.Statement(_found_or_created)


def settled(known: Strategy | None, *, name: str, enabled: bool | None) -> Strategy | None:
    """``known``, the strategy as read with its delivery's token check
    (:func:`app.directory.authenticate`), when :func:`ensure_strategy` would write nothing
    to it (neither its flag nor its name changes): the delivery then needs no statement for
    it. None when it must go through :func:`ensure_strategy`."""
    if known is None:
        return None
    if (known.enabled if enabled is None else enabled) != known.enabled:
        return None
    return known if (name or known.name) == known.name else None


async def ensure_strategy(
    tx: Tx,
    integration_id: int,
    *,
    external_id: str,
    name: str,
    enabled: bool | None,
    now: datetime,
) -> Strategy:
    """The strategy, created (enabled) when first seen; ``enabled`` sets its flag. Each
    statement stands alone (:meth:`app.database.Database.autocommit` is enough): the
    insert is ignored when another delivery created the strategy first."""
    key = {"integration_id": integration_id, "external_id": external_id}
    created = True if enabled is None else enabled
    if tx.dialect.name == "postgresql":
        row = await tx.first(_FOUND_OR_CREATED, **key, name=name, enabled=created, updated_at=now)
    else:
        row = await tx.first(_BY_KEY, **key)
        if row is None:
            row = await tx.first(_CREATE, **key, name=name, enabled=created, updated_at=now)
    if row is None:  # another delivery created it meanwhile
        row = await tx.one(_BY_KEY, **key)
    strategy = Strategy(*row)
    wanted = strategy.enabled if enabled is None else enabled
    wanted_name = name or strategy.name
    if wanted == strategy.enabled and wanted_name == strategy.name:
        return strategy
    await sql.update_row(
        tx, schema.strategies, strategy.id, enabled=wanted, name=wanted_name, updated_at=now
    )
    return dataclasses.replace(strategy, enabled=wanted, name=wanted_name)


async def strategy_by_id(tx: Tx, strategy_id: int) -> Strategy | None:
    row = await tx.first(_BY_ID, strategy_id=strategy_id)
    return None if row is None else Strategy(*row)


async def update_strategy(tx: Tx, strategy_id: int, *, now: datetime, **values: object) -> None:
    """Set the operator's fields: ``paused`` and the sizing rules (None: the config's)."""
    await sql.update_row(tx, schema.strategies, strategy_id, updated_at=now, **values)
