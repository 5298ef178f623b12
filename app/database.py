"""The database engine, and the column types that keep money exact in both databases.

SQLite is the embedded default: WAL, ``synchronous=FULL`` (a commit is on disk before the
answer), a busy timeout, foreign keys on, and every write transaction opened with
``BEGIN IMMEDIATE`` (SQLAlchemy's documented aiosqlite recipe: the driver's own BEGIN is
turned off and ours is emitted on the ``begin`` event). Read-only work passes
``execution_options(readonly=True)`` and gets a plain deferred ``BEGIN``, so readers never
wait for the write lock.

PostgreSQL (asyncpg) runs the same schema; there correctness comes from constraints and
row locks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Dialect, Insert, String, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import NUMERIC
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator, TypeEngine

SQLITE_BUSY_TIMEOUT_SECONDS = 30


class ExactDecimal(TypeDecorator[Decimal]):
    """A ``Decimal`` stored without loss: ``NUMERIC`` (unbounded) on PostgreSQL, its exact
    text on SQLite, whose ``NUMERIC`` affinity would round past 15 significant digits.

    Binding a float is refused: floats never touch money.
    """

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(NUMERIC())
        return dialect.type_descriptor(String())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money and quantities must be Decimal, not {type(value).__name__}")
        if not value.is_finite():
            raise ValueError(f"not a finite amount: {value}")
        return value if dialect.name == "postgresql" else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(value)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime in both databases (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("datetimes must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str) -> AsyncEngine:
    """Build the engine for ``url``; for a SQLite file, create its folder first."""
    if not is_sqlite(url):
        return create_async_engine(url, pool_pre_ping=True)
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
    _use_sqlite_recipe(engine)
    return engine


def _use_sqlite_recipe(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Turn off the driver's implicit BEGIN; ours is emitted in _on_begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        readonly = connection.get_execution_options().get("readonly", False)
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


class Database:
    """The engine plus the two ways in: ``write()`` and ``read()``, each one transaction.

    On SQLite, writers also queue on an in-process lock before ``BEGIN IMMEDIATE``, so they
    wait in the event loop instead of in SQLite's busy handler; correctness still comes from
    the database (the lock is not shared across processes).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        async with contextlib.AsyncExitStack() as stack:
            if self._write_lock is not None:
                await stack.enter_async_context(self._write_lock)
            connection = await stack.enter_async_context(self.engine.begin())
            yield connection

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as connection:
            await connection.execution_options(readonly=True)
            async with connection.begin():
                yield connection

    async def dispose(self) -> None:
        await self.engine.dispose()


async def insert_id(connection: AsyncConnection, statement: Insert) -> int:
    """Run an INSERT and return the new row's ``id``."""
    table = statement.table
    result = await connection.execute(statement.returning(table.c.id))
    return int(result.scalar_one())


async def insert_or_ignore(
    connection: AsyncConnection, table: Table, values: dict[str, Any], *, unique: Sequence[str]
) -> None:
    """INSERT that does nothing when a row with the same ``unique`` columns exists (both
    databases' ``ON CONFLICT DO NOTHING``), so concurrent creators never collide."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(**values).on_conflict_do_nothing(index_elements=unique)
    await connection.execute(statement)
