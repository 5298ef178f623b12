"""SQLite's write path: every write on one connection, in order, with group commit.

The first writer opens a transaction (``BEGIN IMMEDIATE``), each write transaction is a
savepoint in it (a failure rolls back only its own work), and one COMMIT makes everything
written meanwhile durable at once. A write's caller acts on it (calls a broker, answers)
only after that COMMIT, exactly as with a transaction of its own. A crash before the COMMIT
loses the whole batch, and no caller has acted on any of it. Correctness still comes from
the database: the lock here only orders this process's writers.

The COMMIT waits for the disk in a thread of its own, so the loop serves other deliveries
meanwhile. Handing it there and back costs about 0.1 ms of CPU and as much wall time
(measured on a 2-core VM), more than a fast disk's sync: so when no other delivery is in
flight (the receiver's count) and recent COMMITs took under ``INLINE_COMMIT_SECONDS`` on
average, it runs on the loop's thread. Nothing else is waiting then; an operator's request
waits at most that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import sqlite
from app.sql import SqliteTx

if TYPE_CHECKING:
    import sqlite3

    from app.database import Pending

# A COMMIT runs on the event loop's own thread when at most one delivery is in flight and
# recent COMMITs took less than this on average (see SqliteWriter._commit_batch).
INLINE_COMMIT_SECONDS = 0.002
# A batch's COMMIT waits until a pass of the event loop adds no write to it, at most this
# many passes (see SqliteWriter._commit).
BATCH_PASSES = 8


class SqliteWriter:
    """The writer connection of a SQLite database and the batch open on it.

    ``in_flight`` says how many deliveries are being served now (the receiver counts
    them): with one at most, a COMMIT may run on the loop's thread."""

    def __init__(self, engine: AsyncEngine, *, in_flight: Callable[[], int]) -> None:
        self._engine = engine
        self._dialect = engine.dialect
        self._in_flight = in_flight
        self._lock = asyncio.Lock()
        self._writer: AsyncConnection | None = None
        self._raw: sqlite3.Connection | None = None  # the writer's own sqlite3 connection
        self._raw_tx: SqliteTx | None = None  # the statements on it, one Tx for every block
        self._committed: asyncio.Future[None] | None = None  # the open batch's commit
        self._committer: asyncio.Task[None] | None = None
        self._commits: ThreadPoolExecutor | None = None  # where COMMIT waits for the disk
        self._commit_seconds = 0.0  # a moving average of how long a COMMIT takes
        self._joins = 0  # writes that joined a batch, and turns taken, ever (see _commit)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        """A transaction of SQLAlchemy's on the writer, on its own: the open batch
        commits first."""
        async with self._lock:
            await self._commit_batch()
            connection = await self._writer_connection()
            async with connection.begin():
                yield connection

    def transaction(self, pending: Pending | None, *, savepoint: bool) -> _SqliteTransaction:
        """Work in the open batch, in a savepoint of its own with ``savepoint``."""
        return _SqliteTransaction(self, pending, savepoint=savepoint)

    async def _join_batch(self) -> asyncio.Future[None]:
        """The open batch's commit, beginning a batch if none is open; under the write
        lock. The batch is the writer's own transaction, begun and committed on its
        ``sqlite3`` connection without SQLAlchemy."""
        if self._committed is None:
            await self._writer_connection()
            assert self._raw is not None
            await sqlite.begin_immediate(self._raw)
            self._committed = asyncio.get_running_loop().create_future()
            self._committer = asyncio.create_task(self._commit())
        self._joins += 1
        return self._committed

    async def take_turn(self) -> None:
        """One pass of the event loop for a delivery between two of its stages
        (``Database.take_turns``), counted as a write that joined the batch: the batch's
        COMMIT waits for the deliveries taking turns as for those writing (at most
        ``BATCH_PASSES`` passes, as ever), and keeps its size. Uncounted, turns made the
        batches a third as large (10 deliveries a COMMIT against 30 at c=32, in process)."""
        self._joins += 1
        await asyncio.sleep(0)

    async def _commit(self) -> None:
        """Commit the open batch once a pass of the event loop added no write to it and
        took no turn (:meth:`take_turn`), at most ``BATCH_PASSES`` passes: what is runnable
        now joins it instead of waiting behind its COMMIT. Then queued on the write lock
        behind the writers waiting."""
        joins = -1
        for _ in range(BATCH_PASSES):
            if self._joins == joins:
                break
            joins = self._joins
            await asyncio.sleep(0)
        async with self._lock:
            await self._commit_batch()

    async def _commit_batch(self) -> None:
        """COMMIT the open batch, if any (under the write lock): in the commit thread, the
        loop running on while the disk syncs, or on the loop's thread when nothing else
        waits (the module's docstring). A failed COMMIT fails every write in it."""
        committed, self._committed = self._committed, None
        if committed is None:
            return
        try:
            if self._in_flight() <= 1 and self._commit_seconds < INLINE_COMMIT_SECONDS:
                self._timed_commit()
            else:
                if self._commits is None:
                    self._commits = ThreadPoolExecutor(1, thread_name_prefix="sqlite-commit")
                await asyncio.get_running_loop().run_in_executor(self._commits, self._timed_commit)
        except BaseException as exc:
            await self._drop_writer()
            committed.set_exception(exc)
            committed.exception()  # retrieved: each writer re-raises it
            if not isinstance(exc, Exception):
                raise
        else:
            committed.set_result(None)

    def _timed_commit(self) -> None:
        assert self._raw is not None
        started = time.perf_counter()
        self._raw.execute("COMMIT")
        self._commit_seconds += (time.perf_counter() - started - self._commit_seconds) / 8

    async def _writer_connection(self) -> AsyncConnection:
        if self._writer is None:
            self._writer = await self._engine.connect()
            raw = (await self._writer.get_raw_connection()).driver_connection
            assert isinstance(raw, sqlite.InlineConnection)
            self._raw = raw.sqlite
            if not sqlite.library_configured():
                # A savepoint's undo log (the sub-journal) in memory, in pieces of 1 KiB:
                # at SQLite's default it is a temporary file past 64 KiB, written on the
                # loop's thread, of no use after a crash (see sqlite.configure_library).
                self._raw.execute("PRAGMA temp_store=MEMORY")
            self._raw_tx = SqliteTx(self._raw, self._dialect)
        return self._writer

    async def _drop_writer(self) -> None:
        writer, self._writer, self._raw, self._raw_tx = self._writer, None, None, None
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer.invalidate()
            await writer.close()

    async def close(self) -> None:
        if self._committer is not None:
            await asyncio.gather(self._committer, return_exceptions=True)
        if self._writer is not None:
            await self._writer.close()
            self._writer = self._raw = self._raw_tx = None
        if self._commits is not None:
            self._commits.shutdown()
            self._commits = None


class _SqliteTransaction:
    """:meth:`SqliteWriter.transaction`: work in the open batch, under the write lock, in a
    savepoint of its own when asked (a transaction's; an autocommit block takes none).
    A class, not a generator: a delivery opens five of these, and a generator-based
    context manager costs several times as much to enter and leave."""

    __slots__ = ("_committed", "_pending", "_savepoint", "_tx", "_writer")

    def __init__(self, writer: SqliteWriter, pending: Pending | None, *, savepoint: bool) -> None:
        self._writer = writer
        self._pending = pending
        self._savepoint = savepoint

    async def __aenter__(self) -> SqliteTx:
        writer = self._writer
        await writer._lock.acquire()
        try:
            self._committed = await writer._join_batch()
            assert writer._raw_tx is not None
            self._tx = writer._raw_tx
            if self._savepoint:
                self._tx.begin_savepoint()
        except BaseException:
            writer._lock.release()
            raise
        return self._tx

    async def __aexit__(self, kind: type[BaseException] | None, *_exc: object) -> None:
        try:
            if self._savepoint:
                self._tx.end_savepoint(commit=kind is None)
        finally:
            self._writer._lock.release()
        if kind is not None and self._savepoint:
            return  # undone: nothing of it to wait for
        # Done, or (without a savepoint) done up to the failure: as on PostgreSQL, what
        # ran is committed when the block ends.
        if self._pending is None:
            await asyncio.shield(self._committed)
        else:
            self._pending.add(self._committed)
