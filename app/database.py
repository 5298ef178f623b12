"""The database engine and the ways into it: transactions, group commit, durability.
(The column types that keep money and time exact are :mod:`app.columns`; how a SQLite
connection is opened and begins, :mod:`app.sqlite`; PostgreSQL's write path, :mod:`app.postgres`.)

SQLite is the embedded default: WAL, ``synchronous=FULL``, every write transaction opened
with ``BEGIN IMMEDIATE``, statements on the event loop's thread (:mod:`app.sqlite`), and
writes share commits (group commit, :mod:`app.batch`).

PostgreSQL (asyncpg) runs the same schema; there correctness comes from constraints and
row locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sqlalchemy import Insert, Table, Update, bindparam, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    create_async_engine,
)

from app import postgres, sqlite
from app.batch import SqliteWriter
from app.pool import ConnectionPool
from app.settings import DATABASE_POOL_SIZE
from app.sql import SqliteTx, Tx


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, pool_size: int = DATABASE_POOL_SIZE) -> AsyncEngine:
    """Build the engine for ``url``; for a SQLite file, create its folder first.

    Both databases get a fixed pool of ``pool_size`` connections (no overflow: an
    overflow pool opens and closes connections under load); a request waits for a free
    one. On SQLite one of them is the writer, held for the process's life.
    """
    if is_sqlite(url):
        return sqlite.create_engine(url, pool_size=pool_size)
    return create_async_engine(
        url, pool_pre_ping=True, pool_size=pool_size, max_overflow=0, pool_timeout=30
    )


class Database:
    """The engine and the ways in: :meth:`transaction`, :meth:`autocommit` and
    :meth:`snapshot` for the write path's statements (:mod:`app.sql`, on the driver's own
    connections), :meth:`write`
    and :meth:`read` for SQLAlchemy's (start-up, the operator's API, reconciliation).

    On SQLite every write runs on one connection, in order, with group commit
    (:class:`app.batch.SqliteWriter`): each :meth:`transaction` is a savepoint in the open
    batch, and one COMMIT makes everything written meanwhile durable at once. Snapshot reads
    run on a reader connection of their own, inline.

    On PostgreSQL each transaction is its own, on an ``asyncpg`` connection of the write
    path's pool (:mod:`app.pool`, the size of the engine's). Those connections commit
    without waiting for the disk (``synchronous_commit = off``): a delivery's writes wait
    for it once, in :meth:`Pending.durable`, which flushes the write-ahead log up to
    everything committed so far (:meth:`flush`). As with SQLite's batch, what they wrote is
    visible to the other deliveries before it is durable, and nothing acts on it (answers,
    calls a live broker) before. What a commit no longer waits for is the disk while it
    holds a row lock: an account's lock was held through two syncs per delivery, and every
    open on the account queued behind them. A block without a ``Pending`` is durable when
    it returns, as before.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect  # the async engine proxies each read of its own
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.deliveries_in_flight = 0  # counted by the receiver; see app.batch
        self._sqlite = SqliteWriter(engine, in_flight=lambda: self.deliveries_in_flight)
        self._reader: sqlite3.Connection | None = None  # SQLite: snapshot()'s connection
        self._pool: ConnectionPool | None = None  # PostgreSQL: the write path's connections
        self._flusher: postgres.Flusher | None = None  # PostgreSQL: flushes, shared

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction of SQLAlchemy's (start-up, the operator's API): on SQLite the open
        batch commits first, then this runs on the writer on its own."""
        if not self.is_sqlite:
            async with self.engine.begin() as connection:
                yield connection
            return
        async with self._sqlite.connection() as connection:
            yield connection

    def transaction(
        self, pending: Pending | None = None, *, locking_account: int | None = None
    ) -> contextlib.AbstractAsyncContextManager[Tx]:
        """One write transaction for the statements of :mod:`app.sql`.

        On SQLite it is a savepoint in the open batch. Without ``pending`` it returns
        once the batch is committed; with ``pending`` it returns at once and notes the
        batch's commit there: the caller awaits ``pending.durable()`` before anything
        that must follow its writes (a broker call, an answer). A delivery's writes
        thus share one wait for the disk, where each used to wait on its own. On
        PostgreSQL each transaction commits as it ends.

        ``locking_account``: on PostgreSQL the transaction is an open's on that account
        (``Tx.opening_account`` says so): its first statement takes the account's row lock
        (:func:`app.journal.lock_account`'s lock) with the open's funds read and intent
        (:data:`app.intent_statements.OPENING_LOCKED`), or a funds check takes it first. On
        SQLite every write transaction holds the database's one write lock already.
        """
        if self.is_sqlite:
            return self._sqlite.transaction(pending, savepoint=True)
        return self._postgres_transaction(
            pending, transaction=True, writes=True, locking_account=locking_account
        )

    def autocommit(
        self, pending: Pending | None = None
    ) -> contextlib.AbstractAsyncContextManager[Tx]:
        """Writes each of which stands on its own: one statement, or statements that a
        retry completes when only some ran (idempotent ones). On PostgreSQL each commits
        as it runs, without BEGIN and COMMIT: two round trips fewer, a good part of a
        delivery's. On SQLite they join the open batch as :meth:`transaction` does, but
        without a savepoint of their own: a statement that fails undoes only itself."""
        if self.is_sqlite:
            return self._sqlite.transaction(pending, savepoint=False)
        return self._postgres_transaction(pending, transaction=False, writes=True)

    def snapshot(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        """Reads for the statements of :mod:`app.sql`, each statement on its own (no
        transaction around them): what is committed when it runs."""
        if self.is_sqlite:
            return self._sqlite_snapshot()
        return self._postgres_transaction(None, transaction=False, writes=False)

    @contextlib.asynccontextmanager
    async def _sqlite_snapshot(self) -> AsyncIterator[Tx]:
        if self._reader is None:
            database = self.engine.url.database or ":memory:"
            reader = await asyncio.to_thread(sqlite.open_connection, database)
            if self._reader is None:
                self._reader = reader
            else:  # another first read opened one meanwhile
                reader.close()
        yield SqliteTx(self._reader, self.dialect)

    async def take_turns(self) -> None:
        """On SQLite, while other deliveries are in flight: let each of them run up to a
        point of its own like this one before this one goes on (one pass of the loop).

        SQLite's statements run on the loop's thread without a wait, so each delivery would
        run from its body to its commit alone, through the whole write path's code, then
        the next: each stage found the CPU's caches full of the other stages' code. Taken
        at the bounds of a delivery's stages (:mod:`app.receiver`, :mod:`app.execution`),
        turns run each stage for every delivery in flight in a row: less CPU a delivery at
        c=32 for a few more instructions (README, Performance). A turn counts for the open
        batch as a write would (:meth:`SqliteWriter.take_turn`): without that, its COMMIT
        came between the stages, three times as often. On PostgreSQL each statement waits
        for its round trip, so deliveries take turns there already; more turns measured no
        better."""
        if self.is_sqlite and self.deliveries_in_flight > 1:
            await self._sqlite.take_turn()

    async def flush(self) -> None:
        """PostgreSQL: return once everything committed so far is on disk (one flush
        shared by every caller that asks while another runs: :class:`postgres.Flusher`)."""
        if self._flusher is None:
            pool = self._postgres_pool()
            self._flusher = postgres.Flusher(functools.partial(postgres.flush, pool))
        await self._flusher.flush()

    def _postgres_transaction(
        self,
        pending: Pending | None,
        *,
        transaction: bool,
        writes: bool,
        locking_account: int | None = None,
    ) -> postgres.PostgresTransaction:
        return postgres.PostgresTransaction(
            self._postgres_pool(),
            self.dialect,
            pending,
            transaction=transaction,
            writes=writes,
            flush=self.flush,
            locking_account=locking_account,
        )

    def add_query_logger(self, callback: Callable[[Any], None]) -> None:
        """PostgreSQL: ``callback`` for every statement the write path's connections send
        (a delivery's statements, its transactions' BEGIN and COMMIT, the flush), one call
        a round trip. A diagnostic: ``python -m app.bench.inprocess`` counts with it."""
        if self.is_sqlite:
            raise ValueError("SQLite's statements make no round trip")
        self._postgres_pool().add_query_logger(callback)

    def _postgres_pool(self) -> ConnectionPool:
        if self._pool is None:
            self._pool = postgres.connection_pool(self.engine)
        return self._pool

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as connection:
            await connection.execution_options(readonly=True)
            async with connection.begin():
                yield connection

    async def dispose(self) -> None:
        await self._sqlite.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._flusher is not None:
            await self._flusher.close()
            self._flusher = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        await self.engine.dispose()


class Pending:
    """What a delivery's writes wait for to be durable (:meth:`Database.transaction`): on
    SQLite the commits of the batches they joined, on PostgreSQL a flush of the log."""

    __slots__ = ("_commits", "_flush")

    def __init__(self) -> None:
        self._commits: list[asyncio.Future[None]] = []
        self._flush: Callable[[], Awaitable[None]] | None = None

    def add(self, committed: asyncio.Future[None]) -> None:
        if committed not in self._commits:
            self._commits.append(committed)

    def flush_with(self, flush: Callable[[], Awaitable[None]]) -> None:
        self._flush = flush

    async def durable(self) -> None:
        """Return once every write noted here is on disk; raise if a commit failed."""
        commits, self._commits = self._commits, []
        for committed in commits:
            await asyncio.shield(committed)
        if self._flush is not None:
            await self._flush()
            self._flush = None  # only once it is done: a cancelled flush is owed still


async def insert_id(connection: AsyncConnection, table: Table, **values: Any) -> int:
    """Insert a row into ``table`` and return its ``id``."""
    result = await connection.execute(_inserts(table), values)
    return int(result.scalar_one())


async def update_row(connection: AsyncConnection, table: Table, row_id: int, **values: Any) -> None:
    """Set ``values`` on the row of ``table`` whose ``id`` is ``row_id``."""
    await connection.execute(_updates(table), {"row_id": row_id, **values})


# Statements built once and run with parameters: building one per call (coercing each
# value into a bound parameter, then computing its cache key) costs several times what
# SQLite takes to run it.
@functools.cache
def _inserts(table: Table) -> Insert:
    return table.insert().returning(table.c.id)


@functools.cache
def _updates(table: Table) -> Update:
    return update(table).where(table.c.id == bindparam("row_id"))
