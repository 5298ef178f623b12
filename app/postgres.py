"""PostgreSQL's write path: a pool of its own ``asyncpg`` connections
(:mod:`app.pool`) that commit without waiting for the disk (``synchronous_commit = off``),
a block of statements on one of them (:class:`PostgresTransaction`), and :func:`flush`,
which returns once everything committed so far is on disk. :class:`app.database.Database`
is the way in; its docstring says why commits wait for the disk only in a flush.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sqlalchemy import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from app import intent_statements
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

        connection = await asyncpg.connect(url, server_settings={"synchronous_commit": "off"})
        try:
            await connection.execute(intent_statements.opening_function())
        except BaseException:
            connection.terminate()
            raise
        return connection

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


class Flusher:
    """A flush (``run``: :func:`flush` on the write path's pool) shared: the callers that
    ask while one runs share the next one.

    A flush covers every commit made before it begins, so a caller may not ride on one
    already running (its commit may have come after that one began); it waits for the next,
    which begins once the running one ends and covers everyone who asked meanwhile. Under
    load a flush thus serves a whole group of deliveries with one round trip and one wait
    for the disk, where each used to take a connection of the pool for its own. A lone
    caller runs its flush itself, at once; the flushes that others wait for run in a task,
    so that none of them depends on a caller that may be cancelled.
    """

    __slots__ = ("_next", "_run_flush", "_running", "_task")

    def __init__(self, run: Callable[[], Awaitable[None]]) -> None:
        self._run_flush = run
        self._running = False
        self._next: asyncio.Future[None] | None = None  # the flush asked for, not begun yet
        self._task: asyncio.Task[None] | None = None  # the flush others wait for, running

    async def flush(self) -> None:
        if not self._running:
            self._running = True
            try:
                await self._run_flush()
            finally:
                self._flushed()
            return
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._next.add_done_callback(_retrieve)
        # Shielded: a cancelled caller leaves the flush to the others.
        await asyncio.shield(self._next)

    def _flushed(self) -> None:
        """A flush ended: the next one, if asked for, begins."""
        self._task = None
        if self._next is None:
            self._running = False
            return
        asked, self._next = self._next, None  # whoever asks from now waits for the one after
        self._task = asyncio.ensure_future(self._run_flush())
        self._task.add_done_callback(lambda done: self._answer(asked, done))

    def _answer(self, asked: asyncio.Future[None], done: asyncio.Task[None]) -> None:
        if done.cancelled():  # stopped mid-flush: no caller is left waiting for ever
            asked.set_exception(ConnectionError("the flush was interrupted"))
        elif (error := done.exception()) is not None:
            asked.set_exception(error)
        else:
            asked.set_result(None)
        self._flushed()

    async def close(self) -> None:
        """Wait for the flushes that callers wait for (a lone caller awaits its own)."""
        while self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            await asyncio.sleep(0)  # its answer (a done callback) runs, and the next begins


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a failed flush's error as seen: its callers may all have been cancelled."""
    if not future.cancelled():
        future.exception()


class PostgresTransaction:
    """:meth:`Database.transaction` (``transaction=True``), :meth:`Database.autocommit` and
    :meth:`Database.snapshot` on PostgreSQL: a connection of the write path's pool, in a
    transaction or not. A class for the reason :class:`app.batch._SqliteTransaction` is one: it is
    entered a few times per delivery, and three nested generator-based context managers
    (the pool's connection, the transaction, the Tx) cost a measurable share of it.

    The pool's commits do not wait for the disk: a block that ``writes`` notes the flush
    in its ``pending``, or without one flushes before it returns."""

    __slots__ = (
        "_connection",
        "_dialect",
        "_flush",
        "_locking_account",
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
        locking_account: int | None = None,
    ) -> None:
        self._pool = pool
        self._dialect = dialect
        self._flush = flush
        self._pending = pending
        self._wants_transaction = transaction
        self._writes = writes
        self._locking_account = locking_account if transaction else None
        self._transaction: asyncpg.transaction.Transaction | None = None

    async def __aenter__(self) -> Tx:
        pool = self._pool
        self._connection = connection = await pool.acquire()
        tx = PostgresTx(connection, self._dialect)
        if self._wants_transaction:
            try:
                self._transaction = connection.transaction()
                await self._transaction.start()
                # An open's: its first statement takes the account's lock (OPENING_LOCKED).
                tx.opening_account = self._locking_account
            except BaseException:
                pool.release(connection, reusable=False)
                raise
        return tx

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
        if not self._writes or (kind is not None and self._wants_transaction):
            return  # read only, or rolled back: nothing of it to flush
        if self._pending is not None:
            self._pending.flush_with(self._flush)
        else:
            await self._flush()
