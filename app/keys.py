"""Operator API keys kept in the database (``signalbridge api-keys ...``), beside the ones
the config file names. A key is shown once, when created; only its SHA-256 is stored.

A presented key is found by its digest's index. That lookup's timing can tell an attacker
nothing useful: guessing a digest prefix does not help find a 256-bit key's preimage.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app import schema
from app.database import insert_id
from app.errors import Conflict, NotFound

Scope = Literal["read", "write"]
KEY_PREFIX = "sbk_"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create(connection: AsyncConnection, name: str, *, scope: Scope, now: datetime) -> str:
    """A new key: returned once, stored as its digest."""
    table = schema.api_keys
    if await connection.scalar(select(table.c.id).where(table.c.name == name)) is not None:
        raise Conflict(f"an API key named {name!r} exists; revoke it or pick another name")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    await insert_id(
        connection, table, name=name, key_sha256=digest(secret), scope=scope, created_at=now
    )
    return secret


async def revoke(connection: AsyncConnection, name: str, *, now: datetime) -> None:
    table = schema.api_keys
    result = await connection.execute(
        update(table)
        .where(table.c.name == name, table.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    if result.rowcount != 1:
        raise NotFound(f"no live API key named {name!r}")


async def scope_of(connection: AsyncConnection, key_digest: str) -> Scope | None:
    table = schema.api_keys
    found = await connection.scalar(
        select(table.c.scope).where(table.c.key_sha256 == key_digest, table.c.revoked_at.is_(None))
    )
    return None if found is None else "write" if found == "write" else "read"


async def listing(connection: AsyncConnection) -> list[dict[str, object]]:
    table = schema.api_keys
    rows = await connection.execute(
        select(table.c.name, table.c.scope, table.c.created_at, table.c.revoked_at).order_by(
            table.c.id
        )
    )
    return [dict(row._mapping) for row in rows]
