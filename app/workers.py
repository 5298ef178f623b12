"""Worker processes: which are alive, decided by the database alone.

Every process that serves (one ``signalbridge serve``, or each of ``serve --workers N``, on
one host or several) registers at start-up as a worker: a row in ``workers`` gives it an id
that no process had before. An event records the worker that claimed it, and an order
intent belongs to its event's worker, so after a crash "whose work is this, and is its
owner gone?" has an exact answer:

- on PostgreSQL each worker holds a session-level advisory lock keyed by its id, on a
  connection of its own, for its whole life. A process that dies, even by SIGKILL, loses
  its session and the lock with it at once. Another process asks with
  ``pg_try_advisory_xact_lock``: granted means the owner is gone. Nothing is time-based:
  no lease to expire, no clocks to agree.
- on SQLite the service is one process (``serve --workers`` refuses it), so every worker
  but this one is gone.

Reconciliation (:mod:`app.execution`, at start-up and in the background pass) touches only
the work of workers that are gone: it never interrupts a live process's delivery nor
settles its intents. A worker that loses its own lock can no longer show that it is alive,
and others will take its work over, so it must stop (:meth:`Worker.watch`).

Advisory locks are keyed ``(LOCK_CLASS, n)``: ``n`` a worker id, or ``SETUP_LOCK`` for the
start-up set-up (migrations, the config's rows), which one process does at a time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Iterable
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app import schema
from app.database import Database, insert_id

log = logging.getLogger(__name__)
LOCK_CLASS = 0x5B1D6E  # the first key of every advisory lock Signalbridge takes
SETUP_LOCK = 0  # worker ids start at 1


async def lock_setup(connection: AsyncConnection) -> None:
    """Wait until no other process is setting the database up; hold that turn until the
    caller's transaction ends. PostgreSQL only: SQLite's writers are serial already."""
    if connection.dialect.name == "postgresql":
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:class, :key)"),
            {"class": LOCK_CLASS, "key": SETUP_LOCK},
        )


class Worker:
    """This process, registered; :meth:`register` makes one, :meth:`close` ends it."""

    def __init__(
        self,
        worker_id: int,
        *,
        engine: AsyncEngine | None = None,
        lock: AsyncConnection | None = None,
    ) -> None:
        self.id = worker_id
        self._engine = engine
        self._lock = lock

    @classmethod
    async def register(cls, database: Database, *, url: str, now: datetime) -> Worker:
        """Take a new worker id; on PostgreSQL, hold its lock on a connection of its own
        (outside the pool, which stays whole for requests)."""
        async with database.write() as connection:
            worker_id = await insert_id(
                connection,
                schema.workers,
                host=socket.gethostname()[:255],
                pid=os.getpid(),
                started_at=now,
            )
            postgresql = connection.dialect.name == "postgresql"
        if not postgresql:
            return cls(worker_id)
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            lock = await engine.connect()
            await lock.execution_options(isolation_level="AUTOCOMMIT")
            await lock.execute(
                text("SELECT pg_advisory_lock(:class, :id)"),
                {"class": LOCK_CLASS, "id": worker_id},
            )
        except BaseException:
            await engine.dispose()
            raise
        log.info("worker %s registered", worker_id, extra={"worker_id": worker_id})
        return cls(worker_id, engine=engine, lock=lock)

    async def gone(
        self, connection: AsyncConnection, worker_ids: Iterable[int | None]
    ) -> set[int | None]:
        """Of ``worker_ids``, those whose process is gone. ``None`` (no worker recorded) is
        gone. On PostgreSQL the answer holds the gone workers' locks until the caller's
        transaction ends; a worker found gone never comes back (ids are never reused)."""
        others = {worker_id for worker_id in worker_ids if worker_id != self.id}
        if connection.dialect.name != "postgresql":
            return others
        candidates = sorted(worker_id for worker_id in others if worker_id is not None)
        gone: set[int | None] = {None} if None in others else set()
        if candidates:
            rows = await connection.execute(
                text(
                    "SELECT id FROM unnest(CAST(:ids AS integer[])) AS id"
                    " WHERE pg_try_advisory_xact_lock(:class, id)"
                ),
                {"ids": candidates, "class": LOCK_CLASS},
            )
            gone.update(int(worker_id) for worker_id in rows.scalars())
        return gone

    async def watch(self, *, every: float, on_lost: Callable[[], None]) -> None:
        """Check every ``every`` seconds that this worker still holds its lock; when it
        does not (its connection was cut), call ``on_lost`` once and return."""
        if self._lock is None:
            return
        while True:
            await asyncio.sleep(every)
            try:
                held = await self._lock.scalar(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                        " AND pid = pg_backend_pid() AND granted"
                        " AND classid = :class AND objid = :id AND objsubid = 2"
                    ),
                    {"class": LOCK_CLASS, "id": self.id},
                )
            except (SQLAlchemyError, OSError):
                held = 0
            if not held:
                log.critical(
                    "worker %s lost its liveness lock: other processes now take its work over; "
                    "stopping",
                    self.id,
                    extra={"worker_id": self.id},
                )
                on_lost()
                return

    async def close(self) -> None:
        """End this worker: its lock is released, its unfinished work becomes others'."""
        if self._lock is not None:
            try:
                await self._lock.close()
            finally:
                self._lock = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
