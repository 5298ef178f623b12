"""The write path's statements (app/sql.py), on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import bindparam, select

from app import migrate, schema, sql
from app.database import Database, create_engine

NOW = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
_USER = sql.Statement(
    schema.users.insert().values(email=bindparam("email"), created_at=bindparam("created_at"))
)
_EMAILS = sql.Statement(select(schema.users.c.email).order_by(schema.users.c.id))
_ACCOUNT = sql.Statement(
    select(schema.accounts.c.cash, schema.accounts.c.created_at, schema.accounts.c.is_sandbox)
)
_BY_STATUS = sql.Statement(
    select(schema.integrations.c.id).where(schema.integrations.c.status == "approved")
)


async def _database(url: str) -> Database:
    database = Database(create_engine(url))
    await migrate.upgrade(database.engine)
    return database


def test_values_round_trip_exactly_through_the_schemas_types(database_url: str) -> None:
    """A Decimal past 15 digits, an aware datetime and a boolean come back as they went in,
    and as SQLAlchemy itself reads them."""

    async def check() -> None:
        database = await _database(database_url)
        try:
            cash = Decimal("12345678901234567890.123456789012345678")
            async with database.transaction() as tx:
                user_id = await sql.insert_id(tx, schema.users, email="a@b.c", created_at=NOW)
                await sql.insert_id(
                    tx,
                    schema.accounts,
                    name="a",
                    user_id=user_id,
                    broker="paper",
                    currency="USD",
                    is_sandbox=True,
                    is_verified=False,
                    cash=cash,
                    created_at=NOW,
                )
            async with database.snapshot() as tx:
                assert await tx.one(_ACCOUNT) == (cash, NOW, True)
            async with database.read() as connection:
                assert (await connection.execute(_ACCOUNT.clause)).one() == (cash, NOW, True)  # type: ignore[call-overload]
        finally:
            await database.dispose()

    asyncio.run(check())


def test_unique_violations_savepoints_and_row_counts(database_url: str) -> None:
    """Both drivers' unique violations arrive as UniqueViolation; a savepoint undoes only
    what ran inside it; run() counts the rows it touched; a literal is bound by itself."""

    async def check() -> None:
        database = await _database(database_url)
        try:
            async with database.transaction() as tx:
                await tx.run(_USER, email="a@b.c", created_at=NOW)

                async def b_then_a_again() -> None:
                    async with tx.savepoint():
                        await tx.run(_USER, email="b@b.c", created_at=NOW)
                        await tx.run(_USER, email="a@b.c", created_at=NOW)

                with pytest.raises(sql.UniqueViolation):
                    await b_then_a_again()
                await tx.run(_USER, email="c@b.c", created_at=NOW)
                await sql.update_row(tx, schema.users, 1, email="z@b.c")
            async with database.snapshot() as tx:
                assert await tx.scalars(_EMAILS) == ["z@b.c", "c@b.c"]
                assert await tx.rows(_BY_STATUS) == []
            changed = sql.Statement(
                schema.users.update()
                .where(schema.users.c.email.like(bindparam("pattern")))
                .values(email=schema.users.c.email + "x")
            )
            async with database.transaction() as tx:
                assert await tx.run(changed, pattern="%@b.c") == 2
        finally:
            await database.dispose()

    asyncio.run(check())


_NEW_USER = sql.insert_or_ignore(
    schema.users, ["email", "created_at"], unique=["email"], new_id=True
)
_USER_IDS = sql.Statement(select(schema.users.c.id, schema.users.c.email).order_by("id"))


def test_an_insert_answers_its_new_rows_id_and_none_when_it_inserted_none(
    database_url: str,
) -> None:
    """``returning_id``: the id of the row inserted, read back by it; no row when ON
    CONFLICT DO NOTHING inserted none, even right after another insert (SQLite's
    ``lastrowid`` still names that one). Only PostgreSQL's SQL says RETURNING."""

    async def check() -> None:
        database = await _database(database_url)
        try:
            async with database.transaction() as tx:
                first = await tx.scalar(_NEW_USER, email="a@b.c", created_at=NOW)
                second = await sql.insert_id(tx, schema.users, email="d@e.f", created_at=NOW)
                again = await tx.first(_NEW_USER, email="a@b.c", created_at=NOW)
                third = await tx.scalar(_NEW_USER, email="g@h.i", created_at=NOW)
            assert again is None
            async with database.snapshot() as tx:
                assert await tx.rows(_USER_IDS) == [
                    (first, "a@b.c"),
                    (second, "d@e.f"),
                    (third, "g@h.i"),
                ]
            assert len({first, second, third}) == 3
            compiled = _NEW_USER.compiled(database.engine.dialect)
            assert ("RETURNING" in compiled.sql) == (not database.is_sqlite)
        finally:
            await database.dispose()

    asyncio.run(check())


def test_a_missing_or_unknown_parameter_and_a_float_are_refused() -> None:
    dialect = create_engine("sqlite+aiosqlite:///unused.db").dialect
    compiled = _USER.compiled(dialect)
    with pytest.raises(KeyError, match="email"):
        compiled.bind({"created_at": NOW})
    with pytest.raises(KeyError, match="no parameter mail"):
        compiled.bind({"email": "a@b.c", "mail": "a@b.c", "created_at": NOW})
    cash = sql.insert_statement(schema.accounts, ["cash"]).compiled(dialect)
    with pytest.raises(TypeError, match="must be Decimal"):
        cash.bind({"cash": 1.5})
    expanding = sql.Statement(select(schema.users.c.id).where(schema.users.c.id.in_([1, 2])))
    with pytest.raises(ValueError, match="expanding"):
        expanding.compiled(dialect)


def test_an_amount_binds_as_its_exact_text_and_only_a_finite_decimal_does() -> None:
    dialect = create_engine("sqlite+aiosqlite:///unused.db").dialect
    cash = sql.insert_statement(schema.accounts, ["cash"]).compiled(dialect)
    assert cash.bind({"cash": Decimal("100.10")}) == ["100.10"]
    assert cash.bind({"cash": Decimal("-0.000000000000000001")}) == ["-1E-18"]
    assert cash.bind({"cash": None}) == [None]
    for amount in (Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("sNaN")):
        with pytest.raises(ValueError, match="not a finite amount"):
            cash.bind({"cash": amount})
    with pytest.raises(TypeError, match="must be Decimal"):
        cash.bind({"cash": 1})


def test_binding_puts_each_value_in_its_place_with_the_statements_own_values() -> None:
    """A parameter named twice gets its value twice; a literal of the statement keeps its
    value unless one is given; as many names as the statement's, but not the same, are
    refused; a datetime of any zone is stored as UTC."""
    dialect = create_engine("sqlite+aiosqlite:///unused.db").dialect
    twice = sql.Statement(
        select(schema.orders.c.id).where(
            schema.orders.c.account_id == bindparam("account_id"),
            schema.orders.c.status == "pending",
            schema.orders.c.strategy_id != bindparam("account_id"),
            schema.orders.c.reserved > bindparam("reserved"),
        )
    ).compiled(dialect)
    assert twice.bind({"account_id": 7, "reserved": Decimal("1.50")}) == [7, "pending", 7, "1.50"]
    (literal,) = twice.names - {"account_id", "reserved"}
    given = {"account_id": 7, "reserved": Decimal(1), literal: "filled"}
    assert twice.bind(given) == [7, "filled", 7, "1"]
    with pytest.raises(KeyError, match=r"no parameter reserve\b"):
        twice.bind({"account_id": 7, "reserve": Decimal(1), literal: "filled"})
    with pytest.raises(KeyError, match="'reserved' was not given"):
        twice.bind({"account_id": 7})
    east = datetime(2026, 1, 1, 14, 30, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    user = _USER.compiled(dialect)
    assert user.bind({"email": "a@b.c", "created_at": east}) == [
        "a@b.c",
        "2026-01-01 12:30:00.000005",
    ]
    assert user.bind({"email": "a@b.c", "created_at": NOW}) == [
        "a@b.c",
        "2026-01-01 12:30:00.000000",
    ]
    with pytest.raises(ValueError, match="timezone-aware"):
        user.bind({"email": "a@b.c", "created_at": NOW.replace(tzinfo=None)})


def test_a_transaction_is_undone_whole_and_autocommit_keeps_each_statement(
    database_url: str,
) -> None:
    """A failure inside transaction() leaves nothing of it. Inside autocommit() each
    statement stands on its own in both databases: what ran before the failure stays."""

    async def twice(begin: Callable[[], AbstractAsyncContextManager[sql.Tx]]) -> None:
        async with begin() as tx:
            await tx.run(_USER, email="a@b.c", created_at=NOW)
            await tx.run(_USER, email="a@b.c", created_at=NOW)

    async def check() -> None:
        database = await _database(database_url)
        try:
            with pytest.raises(sql.UniqueViolation):
                await twice(database.transaction)
            async with database.snapshot() as tx:
                assert await tx.scalars(_EMAILS) == []
            with pytest.raises(sql.UniqueViolation):
                await twice(database.autocommit)
            async with database.snapshot() as tx:
                assert await tx.scalars(_EMAILS) == ["a@b.c"]
        finally:
            await database.dispose()

    asyncio.run(check())
