"""The write path's PostgreSQL connections: a fixed number of ``asyncpg`` connections,
opened as needed, handed out one at a time.

Not ``asyncpg.Pool``: a delivery takes a connection about five times, and that pool
releases each one in a task of its own (``asyncio.shield``) and wraps each one it hands
out in a proxy through which every statement's call passes. Here a connection is handed
out as it is, and given back synchronously, so a cancelled caller cannot keep it out of
the pool.

A connection given back in an unknown state (its caller was cancelled mid-statement, or
it is still in a transaction) is closed rather than reused; the next caller that finds
none free opens a new one. Callers waiting for a connection are served in order, each
handed a connection directly, so a newcomer never takes it from under one that waited.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when a PostgreSQL database is used: SQLite-only servers stay small
    import asyncpg

Connect = Callable[[], Awaitable["asyncpg.Connection"]]


class ConnectionPool:
    """At most ``size`` connections open at once; :meth:`acquire` waits for one when all
    are in use."""

    def __init__(self, connect: Connect, *, size: int) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one connection")
        self._connect = connect
        self._size = size
        self._idle: list[asyncpg.Connection] = []  # the last given back is handed out first
        self._open = 0  # connections open, or being opened
        # A waiter gets a connection, or None: a place to open one of its own.
        self._waiters: collections.deque[asyncio.Future[asyncpg.Connection | None]] = (
            collections.deque()
        )
        self._closed = False
        self._query_loggers: list[Callable[[Any], None]] = []

    @property
    def size(self) -> int:
        return self._size

    @property
    def open_connections(self) -> int:
        return self._open

    async def acquire(self) -> asyncpg.Connection:
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        while self._idle:
            connection = self._idle.pop()
            if not connection.is_closed():
                return connection
            connection.terminate()  # closed by the server while idle: asyncpg's clean-up
            self._open -= 1
        if self._open >= self._size:
            handed = await self._wait()
            if handed is not None:
                return handed
        else:
            self._open += 1
        try:
            connection = await self._connect()
        except BaseException:
            self._open -= 1
            self._hand_on(None)
            raise
        for logger in self._query_loggers:
            connection.add_query_logger(logger)
        return connection

    def add_query_logger(self, callback: Callable[[Any], None]) -> None:
        """asyncpg's query logger (called once for each statement a connection sends: a
        round trip) on the connections idle now and on every one opened later. For
        diagnostics: a connection in use now is not covered."""
        self._query_loggers.append(callback)
        for connection in self._idle:
            connection.add_query_logger(callback)

    async def _wait(self) -> asyncpg.Connection | None:
        """Wait in line; a connection (or the right to open one: None) is handed over."""
        waiter: asyncio.Future[asyncpg.Connection | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiters.append(waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                # Handed something, then cancelled before it could be used: pass it on.
                handed = waiter.result()
                if handed is None:
                    self._open -= 1
                    self._hand_on(None)
                else:
                    self.release(handed)
            else:
                self._waiters.remove(waiter)
            raise

    def release(self, connection: asyncpg.Connection, *, reusable: bool = True) -> None:
        """Give a connection back. ``reusable=False`` (or a connection still in a
        transaction, or closed) closes it: its state is not known."""
        if (
            self._closed
            or not reusable
            or connection.is_closed()  # by the server: terminate() runs asyncpg's clean-up
            or connection.is_in_transaction()
        ):
            connection.terminate()
            self._open -= 1
            self._hand_on(None)
            return
        self._hand_on(connection)

    def _hand_on(self, connection: asyncpg.Connection | None) -> None:
        """To the first caller still waiting; else a connection goes back to the idle
        ones (None, the right to open one, needs no keeping: ``_open`` counts it)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if connection is None:
                    self._open += 1
                waiter.set_result(connection)
                return
        if connection is not None:
            self._idle.append(connection)

    async def close(self) -> None:
        """Close the idle connections; those in use are closed as they come back, and the
        callers still waiting for one are refused."""
        self._closed = True
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(RuntimeError("the connection pool is closed"))
        idle, self._idle = self._idle, []
        for connection in idle:
            self._open -= 1
            try:
                await connection.close(timeout=5)
            except Exception:  # closing anyway
                connection.terminate()
