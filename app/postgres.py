"""PostgreSQL's write path: a pool of its own ``asyncpg`` connections
(:mod:`app.pool`) that commit without waiting for the disk (``synchronous_commit = off``),
a block of statements on one of them (:class:`PostgresTransaction`), and :func:`flush`,
which returns once everything committed so far is on disk. :class:`app.database.Database`
is the way in; its docstring says why commits wait for the disk only in a flush.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sqlalchemy import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from app.pool import ConnectionPool
from app.sql import PostgresTx, Tx

if TYPE_CHECKING:  # asyncpg is imported only when a PostgreSQL database is used
    import asyncpg

    from app.database import Pending

# A transaction committed synchronously: a commit flushes the log only for a transaction
# that wrote to it, so this one writes a logical-decoding message (no table, no lock; a
# decoder of the log skips an unknown prefix). One round trip: the simple query protocol
# runs the four statements at once.
FLUSH = (
    "BEGIN; SET LOCAL synchronous_commit TO on; "
    "SELECT pg_logical_emit_message(true, 'signalbridge', 'flush'); COMMIT"
)


def connection_pool(engine: AsyncEngine) -> ConnectionPool:
    """The write path's connections, as many as the engine's pool holds."""
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def connect() -> asyncpg.Connection:
        import asyncpg  # here, not at the top: see TYPE_CHECKING above

        return await asyncpg.connect(url, server_settings={"synchronous_commit": "off"})

    return ConnectionPool(connect, size=engine.pool.size())  # type: ignore[attr-defined]


async def flush(pool: ConnectionPool) -> None:
    """Return once everything committed so far is on disk. A transaction that writes to
    the log commits synchronously: its commit flushes the log up to its own record, so
    every record before it too (the log is one sequence)."""
    connection = await pool.acquire()
    reusable = False
    try:
        await connection.execute(FLUSH)
        reusable = True
    finally:
        pool.release(connection, reusable=reusable)


class PostgresTransaction:
    """:meth:`Database.transaction` (``transaction=True``), :meth:`Database.autocommit` and
    :meth:`Database.snapshot` on PostgreSQL: a connection of the write path's pool, in a
    transaction or not. A class for the reason :class:`_SqliteTransaction` is one: it is
    entered a few times per delivery, and three nested generator-based context managers
    (the pool's connection, the transaction, the Tx) cost a measurable share of it.

    The pool's commits do not wait for the disk: a block that ``writes`` notes the flush
    in its ``pending``, or without one flushes before it returns."""

    __slots__ = (
        "_connection",
        "_dialect",
        "_flush",
        "_pending",
        "_pool",
        "_transaction",
        "_wants_transaction",
        "_writes",
    )

    def __init__(
        self,
        pool: ConnectionPool,
        dialect: Dialect,
        pending: Pending | None,
        *,
        transaction: bool,
        writes: bool,
        flush: Callable[[], Awaitable[None]],
    ) -> None:
        self._pool = pool
        self._dialect = dialect
        self._flush = flush
        self._pending = pending
        self._wants_transaction = transaction
        self._writes = writes
        self._transaction: asyncpg.transaction.Transaction | None = None

    async def __aenter__(self) -> Tx:
        pool = self._pool
        self._connection = connection = await pool.acquire()
        if self._wants_transaction:
            try:
                self._transaction = connection.transaction()
                await self._transaction.start()
            except BaseException:
                pool.release(connection, reusable=False)
                raise
        return PostgresTx(connection, self._dialect)

    async def __aexit__(self, kind: type[BaseException] | None, *_exc: object) -> None:
        # Cancelled (or stopped) inside the block: the connection may be mid-statement.
        reusable = kind is None or issubclass(kind, Exception)
        try:
            if self._transaction is not None:
                if kind is None:
                    await self._transaction.commit()
                else:
                    await self._transaction.rollback()
        except BaseException:
            reusable = False
            raise
        finally:
            # Still in a transaction (a failed rollback): closed by the pool, not reused.
            self._pool.release(self._connection, reusable=reusable)
        if not self._writes or (kind is not None and self._transaction is not None):
            return  # read only, or rolled back: nothing of it to flush
        if self._pending is not None:
            self._pending.flush_with(self._flush)
        else:
            await self._flush()
