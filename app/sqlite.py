"""The embedded SQLite database's connections: how each is opened, how a write
transaction begins, and the aiosqlite-shaped shim SQLAlchemy's dialect runs on.

Every connection runs in WAL mode with ``synchronous=FULL`` (a commit is on disk before
the answer), a busy timeout and foreign keys on. Every write transaction is opened with
``BEGIN IMMEDIATE`` (SQLAlchemy's documented recipe: the driver's own BEGIN is turned off
and ours is emitted on the ``begin`` event); read-only work passes
``execution_options(readonly=True)`` and gets a plain deferred ``BEGIN``, so readers never
wait for the write lock. Statements run on the event loop's thread (:class:`InlineConnection`).
"""

from __future__ import annotations

import _sqlite3
import asyncio
import ctypes
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

SQLITE_BUSY_TIMEOUT_SECONDS = 30


def _null(_value: None) -> None:
    return None


# sqlite3 binds an exact int, float or str as it is and adapts anything else: for None it
# looks for a registered adapter, then for the protocol's ``__adapt__``, whose absence costs
# a formatted AttributeError raised and cleared (about 4,000 instructions), before it binds
# NULL. A delivery binds about eight Nones. The adapter found first returns None: the same
# NULL. Registered for the process's every sqlite3 connection; None is no base type, so
# other values are still bound as before.
sqlite3.register_adapter(type(None), _null)

SQLITE_CONFIG_MEMSTATUS = 9  # sqlite3.h
SQLITE_CONFIG_STMTJRNL_SPILL = 26  # sqlite3.h
# How much of a statement's or savepoint's undo log (the sub-journal) SQLite keeps in memory
# before it writes it to a temporary file; also the size of its one block of memory there.
# Not more: SQLite 3.40.1 fails that write (SQLITE_FULL) when the log it moves to the file
# is longer than 128 KiB (measured: a limit of 131,073 bytes spills right, 135,000 fails).
STATEMENT_JOURNAL_IN_MEMORY = 128 * 1024
_library = {"configured": False}


def configure_library() -> bool:
    """Configure SQLite for the process, unless SQLite is in use; return whether this call
    configured it.

    - Memory statistics off. With them on (the library's default) every allocation and free
      inside SQLite takes a process-wide mutex to count bytes for ``sqlite3_memory_used()``
      and the soft heap limit, neither of which Python's ``sqlite3`` or this service reads;
      SQLite's "Recommended Compile-time Options" turn them off
      (``SQLITE_DEFAULT_MEMSTATUS=0``). A delivery costs 4.8 % fewer instructions without
      them (README, Performance).
    - A sub-journal held in memory up to ``STATEMENT_JOURNAL_IN_MEMORY`` (SQLite's default
      is 64 KiB) in one block. Each write transaction in the SQLite writer's batch is a
      savepoint, whose undo log (a page's old content for each page it changes) outgrows
      the default in a delivery's report: it became a temporary file, written on the
      loop's thread. ``temp_store=MEMORY``, which the writer set for that before, keeps it
      in memory but in pieces of 1 KiB, five allocations a page: a delivery costs 2 to 3 %
      more instructions that way. Past the limit a sub-journal still spills to a file, as
      at SQLite's default.

    ``sqlite3_config`` works only while the library is shut down, and importing Python's
    module initialised it: so the library is shut down, configured and initialised again,
    which is safe only with no connection open. It is done only when the library counts no
    memory in use (every open connection holds some), and once per process (with the
    statistics off it counts none). The functions are looked up through ``_sqlite3``'s own
    handle: those of the SQLite it is linked with, or built with.
    """
    if _library["configured"]:
        return False
    try:
        library = ctypes.CDLL(_sqlite3.__file__)
        memory_used = library.sqlite3_memory_used
    except (OSError, AttributeError):  # no shared object, or no such symbol exported
        return False
    memory_used.restype = ctypes.c_int64
    if memory_used() != 0 or library.sqlite3_shutdown() != sqlite3.SQLITE_OK:
        return False
    settings = (
        (SQLITE_CONFIG_MEMSTATUS, 0),
        (SQLITE_CONFIG_STMTJRNL_SPILL, STATEMENT_JOURNAL_IN_MEMORY),
    )
    results = [library.sqlite3_config(option, ctypes.c_int(value)) for option, value in settings]
    library.sqlite3_initialize()
    _library["configured"] = all(result == sqlite3.SQLITE_OK for result in results)
    return _library["configured"]


def library_configured() -> bool:
    """Whether :func:`configure_library` configured SQLite in this process."""
    return _library["configured"]


configure_library()


def create_engine(url: str, *, pool_size: int) -> AsyncEngine:
    """The engine for a SQLite ``url``, its folder created first, on a fixed pool of
    ``pool_size`` connections (an overflow pool would open and close them under load)."""
    database = make_url(url).database or ":memory:"
    if database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)

    async def connect() -> InlineConnection:
        connection = await asyncio.to_thread(open_connection, database)
        return InlineConnection(connection)

    engine = create_async_engine(
        url, async_creator=connect, pool_size=pool_size, max_overflow=0, pool_timeout=30
    )
    _use_begin_recipe(engine)
    return engine


def open_connection(database: str) -> sqlite3.Connection:
    # isolation_level=None: no implicit BEGIN; ours is emitted in _on_begin.
    connection = sqlite3.connect(
        database,
        timeout=SQLITE_BUSY_TIMEOUT_SECONDS,
        isolation_level=None,
        check_same_thread=False,  # COMMIT and BEGIN IMMEDIATE run in a worker thread
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    return connection


def _use_begin_recipe(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        readonly = connection.get_execution_options().get("readonly", False)
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


async def begin_immediate(connection: sqlite3.Connection, sql: str = "BEGIN IMMEDIATE") -> None:
    """BEGIN at once when the database is free; wait for another process's write lock
    (the busy timeout) in a thread, never on the loop."""
    connection.execute("PRAGMA busy_timeout=0")
    try:
        connection.execute(sql)
        return
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
            raise
    finally:
        connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
    await asyncio.to_thread(connection.execute, sql)


class _InlineCursor:
    """aiosqlite's cursor interface over a ``sqlite3`` cursor, run on the caller's thread."""

    def __init__(self, owner: InlineConnection, cursor: sqlite3.Cursor) -> None:
        self._owner = owner
        self._cursor = cursor
        self.arraysize = cursor.arraysize

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    async def __aenter__(self) -> _InlineCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cursor.close()

    async def execute(self, sql: str, parameters: Any = ()) -> _InlineCursor:
        if sql.startswith("BEGIN"):
            await self._owner.begin(self._cursor, sql)
        else:
            self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Any) -> _InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class InlineConnection:
    """aiosqlite's connection interface over a ``sqlite3`` connection, for SQLAlchemy's
    aiosqlite dialect (``async_creator``).

    Statements run on the event loop's thread: a SQLite statement on a small transaction
    takes microseconds, while aiosqlite's hop to its own thread and back costs far more,
    about a dozen times per transaction. Only what waits on the disk or on another
    process leaves the loop: COMMIT (the fsync) and BEGIN IMMEDIATE (the busy timeout).
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._changes_at_begin = 0

    @property
    def isolation_level(self) -> str | None:
        return self._connection.isolation_level

    def cursor(self) -> _InlineCursor:
        return _InlineCursor(self, self._connection.cursor())

    async def execute(self, sql: str, parameters: Any = ()) -> _InlineCursor:
        return await self.cursor().execute(sql, parameters)

    async def begin(self, cursor: sqlite3.Cursor, sql: str) -> None:
        self._changes_at_begin = self._connection.total_changes
        await begin_immediate(self._connection, sql)

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._connection.create_function(*args, **kwargs)

    async def commit(self) -> None:
        if self._connection.total_changes == self._changes_at_begin:
            self._connection.commit()  # nothing written: nothing to wait for on disk
        else:
            await asyncio.to_thread(self._connection.commit)

    async def rollback(self) -> None:
        self._connection.rollback()

    async def close(self) -> None:
        self._connection.close()

    def stop(self) -> None:
        self._connection.close()

    @property
    def sqlite(self) -> sqlite3.Connection:
        return self._connection
