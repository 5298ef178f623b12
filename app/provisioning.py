"""Making who is who: users, accounts and integrations with their tokens.

:func:`sync_config` makes the database agree with the config file at start-up
(idempotent); the operator's API makes integrations, rotates their tokens
(:func:`add_token`, :func:`revoke_oldest_token`) and opens paper accounts. A token is
returned once, when it is made; only its digest is stored (:func:`app.directory.token_digest`,
which the token check looks it up by). Each function runs inside a transaction its caller
owns.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app import journal, schema, sql
from app.database import insert_id, update_row
from app.directory import token_digest
from app.errors import Conflict, NotFound
from app.settings import AccountConfig, Settings


async def sync_config(connection: AsyncConnection, settings: Settings, *, now: datetime) -> None:
    """Create what the config names and the database lacks; record initial deposits once.

    Tokens named in the config are added; tokens no longer named are revoked. An
    integration's status is set from the config only when it is created: afterwards the
    provider's lifecycle events own it.
    """
    user_ids = {
        user.email: await _upsert_user(connection, user.email, now=now) for user in settings.users
    }
    account_ids: dict[str, int] = {}
    for account in settings.accounts:
        account_ids[account.name] = await _upsert_account(
            connection,
            name=account.name,
            user_id=user_ids[account.user],
            broker=account.broker,
            currency=account.currency,
            is_sandbox=account.is_sandbox,
            is_verified=account.is_verified,
            now=now,
        )
        if account.initial_deposit:
            await journal.record_deposit(
                await sql.tx_on(connection),
                account_ids[account.name],
                amount=account.initial_deposit,
                reference=f"initial-deposit:{account.name}",
                now=now,
            )
    for integration in settings.integrations:
        integration_id = await _upsert_integration(
            connection,
            name=integration.name,
            user_id=user_ids[integration.user],
            account_id=account_ids[integration.account],
            provider=integration.provider,
            status=integration.status,
            token_header=integration.token_header,
            now=now,
        )
        digests = {token_digest(token.get_secret_value()) for token in integration.tokens}
        digests |= {digest.lower() for digest in integration.token_sha256}
        await _sync_tokens(connection, integration_id, digests, now=now)


async def _upsert_user(connection: AsyncConnection, email: str, *, now: datetime) -> int:
    table = schema.users
    existing = await connection.scalar(select(table.c.id).where(table.c.email == email))
    if existing is not None:
        return int(existing)
    return await insert_id(connection, table, email=email, created_at=now)


async def _upsert_account(
    connection: AsyncConnection,
    *,
    name: str,
    user_id: int,
    broker: str,
    currency: str,
    is_sandbox: bool,
    is_verified: bool,
    now: datetime,
) -> int:
    """``is_verified`` is the config's only when the account is created: afterwards the
    operator's verification (``POST /api/accounts/{name}/verify``) stands."""
    values = {"user_id": user_id, "broker": broker, "currency": currency, "is_sandbox": is_sandbox}
    return await _upsert_by_name(
        connection,
        schema.accounts,
        name=name,
        values=values,
        cash=Decimal(0),
        created_at=now,
        is_verified=is_verified,
    )


async def _upsert_integration(
    connection: AsyncConnection,
    *,
    name: str,
    user_id: int,
    account_id: int,
    provider: str,
    status: str,
    token_header: str,
    now: datetime,
) -> int:
    values = {"user_id": user_id, "account_id": account_id, "token_header": token_header}
    return await _upsert_by_name(
        connection,
        schema.integrations,
        name=name,
        values=values,
        provider=provider,
        status=status,
        updated_at=now,
    )


async def _upsert_by_name(
    connection: AsyncConnection,
    table: Table,
    *,
    name: str,
    values: dict[str, Any],
    **on_insert: Any,
) -> int:
    """The id of ``table``'s row named ``name``, its ``values`` (the columns the config
    owns) updated where they changed, or of a new row with ``on_insert`` too."""
    existing = (
        await connection.execute(
            select(table.c.id, *(table.c[column] for column in values)).where(table.c.name == name)
        )
    ).first()
    if existing is not None:
        row_id, *stored = existing
        if dict(zip(values, stored, strict=True)) != values:  # unchanged: no row lock to wait for
            await update_row(connection, table, row_id, **values)
        return int(row_id)
    return await insert_id(connection, table, name=name, **on_insert, **values)


async def _sync_tokens(
    connection: AsyncConnection, integration_id: int, digests: set[str], *, now: datetime
) -> None:
    table = schema.integration_tokens
    known = dict(
        (
            await connection.execute(
                select(table.c.token_sha256, table.c.revoked_at).where(
                    table.c.integration_id == integration_id
                )
            )
        ).all()
    )
    for digest in digests - known.keys():
        await connection.execute(
            table.insert().values(
                integration_id=integration_id, token_sha256=digest, created_at=now
            )
        )
    revived = {digest for digest in digests & known.keys() if known[digest] is not None}
    retired = {digest for digest, revoked in known.items() if revoked is None} - digests
    for digests_to_set, revoked_at in ((revived, None), (retired, now)):
        if digests_to_set:
            await connection.execute(
                update(table)
                .where(table.c.token_sha256.in_(digests_to_set))
                .values(revoked_at=revoked_at)
            )


MAX_LIVE_TOKENS = 2
TOKEN_PREFIX = "sbt_"  # noqa: S105 (a prefix, not a secret)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create_integration(
    connection: AsyncConnection,
    *,
    name: str,
    user_email: str,
    account: str,
    token_header: str,
    now: datetime,
) -> tuple[int, str]:
    """A new integration, ``pending`` until the provider approves it, with one token
    (returned once; only its digest is stored)."""
    user_id = await connection.scalar(
        select(schema.users.c.id).where(schema.users.c.email == user_email)
    )
    account_id = await connection.scalar(
        select(schema.accounts.c.id).where(schema.accounts.c.name == account)
    )
    if user_id is None or account_id is None:
        raise NotFound(f"no user {user_email!r}" if user_id is None else f"no account {account!r}")
    table = schema.integrations
    if await connection.scalar(select(table.c.id).where(table.c.name == name)) is not None:
        raise Conflict(f"an integration named {name!r} exists")
    integration_id = await insert_id(
        connection,
        table,
        name=name,
        user_id=user_id,
        account_id=account_id,
        provider="proquant",
        status="pending",
        token_header=token_header.lower(),
        updated_at=now,
    )
    token = await add_token(connection, integration_id, now=now)
    return integration_id, token


async def add_token(connection: AsyncConnection, integration_id: int, *, now: datetime) -> str:
    """Rotation, step one: a second live token; both work until the old one is revoked."""
    table = schema.integration_tokens
    live = await _live_tokens(connection, integration_id)
    if len(live) >= MAX_LIVE_TOKENS:
        raise Conflict("the integration has two live tokens; revoke the old one first")
    token = new_token()
    await insert_id(
        connection,
        table,
        integration_id=integration_id,
        token_sha256=token_digest(token),
        created_at=now,
    )
    return token


async def revoke_oldest_token(
    connection: AsyncConnection, integration_id: int, *, now: datetime
) -> None:
    """Rotation, step two: the oldest live token stops working. The last one is kept (to
    stop the integration, the provider deletes it, or the operator pauses its strategies)."""
    live = await _live_tokens(connection, integration_id)
    if len(live) < MAX_LIVE_TOKENS:
        raise Conflict("the integration has one live token; rotate before revoking")
    table = schema.integration_tokens
    await connection.execute(update(table).where(table.c.id == live[0]).values(revoked_at=now))


async def _live_tokens(connection: AsyncConnection, integration_id: int) -> list[int]:
    table = schema.integration_tokens
    rows = await connection.execute(
        select(table.c.id)
        .where(table.c.integration_id == integration_id, table.c.revoked_at.is_(None))
        .order_by(table.c.id)
    )
    return [int(token_id) for token_id in rows.scalars()]


async def integration_id_by_name(connection: AsyncConnection, name: str) -> int:
    found = await connection.scalar(
        select(schema.integrations.c.id).where(schema.integrations.c.name == name)
    )
    if found is None:
        raise NotFound(f"no integration named {name!r}")
    return int(found)


async def accounts_outside(connection: AsyncConnection, names: set[str]) -> list[AccountConfig]:
    """Accounts the config does not name (made through the API): paper accounts with the
    default terms."""
    a, u = schema.accounts, schema.users
    rows = await connection.execute(
        select(a.c.name, u.c.email, a.c.currency, a.c.is_sandbox, a.c.is_verified)
        .join(u, u.c.id == a.c.user_id)
        .order_by(a.c.id)
    )
    return [
        AccountConfig(
            name=name,
            user=email,
            broker="paper",
            currency=currency,
            is_sandbox=is_sandbox,
            is_verified=is_verified,
        )
        for name, email, currency, is_sandbox, is_verified in rows
        if name not in names
    ]


async def create_paper_account(
    connection: AsyncConnection, *, name: str, user_email: str, currency: str, now: datetime
) -> AccountConfig:
    """A sandbox paper account for a user (default terms: no shorts, no fees)."""
    user_id = await connection.scalar(
        select(schema.users.c.id).where(schema.users.c.email == user_email)
    )
    if user_id is None:
        raise NotFound(f"no user {user_email!r}")
    if await connection.scalar(select(schema.accounts.c.id).where(schema.accounts.c.name == name)):
        raise Conflict(f"an account named {name!r} exists")
    await _upsert_account(
        connection,
        name=name,
        user_id=int(user_id),
        broker="paper",
        currency=currency,
        is_sandbox=True,
        is_verified=True,
        now=now,
    )
    return AccountConfig(name=name, user=user_email, broker="paper", currency=currency)
