"""Storage: exact decimals, the append-only journal, migrations."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Insert, select, text
from sqlalchemy.exc import StatementError

from app import migrate, schema
from app.database import Database, create_engine


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(create_engine(f"sqlite+aiosqlite:///{tmp_path}/db.sqlite"))
    await migrate.upgrade(database.engine)
    yield database
    await database.dispose()


@pytest.mark.anyio
async def test_decimals_round_trip_exactly_past_fifteen_digits(database: Database) -> None:
    exact = Decimal("12345678901234567890.123456789012345678")
    async with database.write() as connection:
        await connection.execute(
            schema.users.insert().values(id=1, email="a@b.c", created_at=_now())
        )
        await connection.execute(_account(cash=exact))
    async with database.read() as connection:
        stored = await connection.scalar(select(schema.accounts.c.cash))
    assert stored == exact
    assert str(stored) == str(exact)


@pytest.mark.anyio
async def test_floats_are_refused(database: Database) -> None:
    async with database.write() as connection:
        await connection.execute(
            schema.users.insert().values(id=1, email="a@b.c", created_at=_now())
        )
        statement = _account(cash=0.1)
        with pytest.raises(StatementError, match="must be Decimal"):
            await connection.execute(statement)


@pytest.mark.anyio
async def test_the_journal_is_append_only(database: Database, tmp_path: Path) -> None:
    async with database.write() as connection:
        await connection.execute(
            text("INSERT INTO users (id, email, created_at) VALUES (1, 'a@b.c', '2026-01-01')")
        )
        await connection.execute(
            text(
                "INSERT INTO accounts (id, name, user_id, broker, currency, is_sandbox,"
                " is_verified, cash, created_at)"
                " VALUES (1, 'a', 1, 'paper', 'USD', 1, 1, '0', '2026-01-01')"
            )
        )
        await connection.execute(
            text(
                "INSERT INTO ledger_transactions (id, account_id, reference, kind, at)"
                " VALUES (1, 1, 'r', 'deposit', '2026-01-01')"
            )
        )
        await connection.execute(
            text(
                "INSERT INTO postings (transaction_id, account_id, ledger_account, amount)"
                " VALUES (1, 1, 'cash', '5')"
            )
        )
    connection = sqlite3.connect(tmp_path / "db.sqlite")
    try:
        for statement in (
            "UPDATE postings SET amount = '6'",
            "DELETE FROM postings",
            "UPDATE ledger_transactions SET kind = 'x'",
            "DELETE FROM ledger_transactions",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                connection.execute(statement)
    finally:
        connection.close()


@pytest.mark.anyio
async def test_migrations_are_idempotent(database: Database) -> None:
    await migrate.upgrade(database.engine)
    async with database.read() as connection:
        version = await connection.scalar(text("SELECT version_num FROM alembic_version"))
    assert version == "0001"


def _account(*, cash: object) -> Insert:
    return schema.accounts.insert().values(
        id=1,
        name="a",
        user_id=1,
        broker="paper",
        currency="USD",
        is_sandbox=True,
        is_verified=True,
        cash=cash,
        created_at=_now(),
    )


def _now() -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC)
