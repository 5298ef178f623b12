"""The write path's PostgreSQL connections (app/pool.py), against a real server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from app.pool import ConnectionPool
from tests.conftest import postgres_url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def pool() -> AsyncIterator[ConnectionPool]:
    url = postgres_url().replace("+asyncpg", "")
    opened = ConnectionPool(lambda: asyncpg.connect(url), size=2)
    yield opened
    await opened.close()


async def backend_pid(connection: asyncpg.Connection) -> int:
    return int(await connection.fetchval("SELECT pg_backend_pid()"))


async def waiting(pool: ConnectionPool, count: int) -> list[asyncio.Task[asyncpg.Connection]]:
    """``count`` callers waiting, in this order, for a connection (all are out)."""
    callers = [asyncio.create_task(pool.acquire()) for _ in range(count)]
    await asyncio.sleep(0.05)
    assert not any(caller.done() for caller in callers)
    return callers


async def served_and_usable(pool: ConnectionPool, caller: asyncio.Task[asyncpg.Connection]) -> None:
    """The waiting caller gets a working connection, the pool still at its size."""
    connection = await asyncio.wait_for(caller, 5)
    assert await connection.fetchval("SELECT 1") == 1
    assert pool.open_connections == pool.size
    pool.release(connection)


@pytest.mark.anyio
async def test_connections_are_opened_as_needed_and_reused(pool: ConnectionPool) -> None:
    assert pool.open_connections == 0
    first = await pool.acquire()
    pid = await backend_pid(first)
    pool.release(first)
    again = await pool.acquire()
    assert await backend_pid(again) == pid
    assert pool.open_connections == 1
    pool.release(again)


@pytest.mark.anyio
async def test_callers_past_the_size_wait_and_are_served_in_order(pool: ConnectionPool) -> None:
    held = [await pool.acquire(), await pool.acquire()]
    served: list[str] = []

    async def caller(name: str) -> None:
        connection = await pool.acquire()
        served.append(name)
        await connection.fetchval("SELECT 1")
        pool.release(connection)

    waiting = [asyncio.create_task(caller(name)) for name in ("first", "second", "third")]
    await asyncio.sleep(0.05)
    assert served == []  # all connections are out
    assert pool.open_connections == 2
    pool.release(held.pop())
    # A newcomer that finds nothing free queues behind those that waited.
    newcomer = asyncio.create_task(caller("newcomer"))
    await asyncio.gather(*waiting, newcomer)
    assert served == ["first", "second", "third", "newcomer"]
    assert pool.open_connections == 2
    pool.release(held.pop())


@pytest.mark.anyio
async def test_a_connection_left_in_a_transaction_is_closed_not_reused(
    pool: ConnectionPool,
) -> None:
    connection = await pool.acquire()
    pid = await backend_pid(connection)
    await connection.execute("BEGIN")
    await connection.execute("CREATE TEMPORARY TABLE left_behind (n int)")
    pool.release(connection)
    assert connection.is_closed()
    assert pool.open_connections == 0
    fresh = await pool.acquire()
    assert await backend_pid(fresh) != pid
    assert not fresh.is_in_transaction()
    pool.release(fresh)


@pytest.mark.anyio
async def test_an_unusable_connection_lets_a_waiter_open_a_new_one(pool: ConnectionPool) -> None:
    held = [await pool.acquire(), await pool.acquire()]
    (waiter,) = await waiting(pool, 1)
    pool.release(held.pop(), reusable=False)  # say, its caller was cancelled mid-statement
    await served_and_usable(pool, waiter)
    pool.release(held.pop())


@pytest.mark.anyio
async def test_a_waiter_cancelled_after_being_served_passes_the_connection_on(
    pool: ConnectionPool,
) -> None:
    held = [await pool.acquire(), await pool.acquire()]
    cancelled, patient = await waiting(pool, 2)
    pool.release(held.pop())  # handed to the first waiter, which is cancelled before it runs
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await served_and_usable(pool, patient)
    pool.release(held.pop())


@pytest.mark.anyio
async def test_a_connection_the_server_closed_is_replaced(pool: ConnectionPool) -> None:
    """A backend killed (or restarted) while its connection was idle: the next caller gets
    a new connection, not the dead one."""
    connection = await pool.acquire()
    pid = await backend_pid(connection)
    pool.release(connection)
    admin = await asyncpg.connect(postgres_url().replace("+asyncpg", ""))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    for _ in range(100):  # the server's notice arrives on the event loop
        if connection.is_closed():
            break
        await asyncio.sleep(0.05)
    assert connection.is_closed()
    fresh = await pool.acquire()
    assert await backend_pid(fresh) != pid
    assert pool.open_connections == 1
    pool.release(fresh)


@pytest.mark.anyio
async def test_a_failed_connect_frees_its_place(pool: ConnectionPool) -> None:
    attempts = 0
    url = postgres_url().replace("+asyncpg", "")

    async def flaky() -> asyncpg.Connection:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise OSError("refused")
        return await asyncpg.connect(url)

    flaky_pool = ConnectionPool(flaky, size=1)
    with pytest.raises(OSError, match="refused"):
        await flaky_pool.acquire()
    assert flaky_pool.open_connections == 0
    connection = await flaky_pool.acquire()
    assert await connection.fetchval("SELECT 1") == 1
    flaky_pool.release(connection)
    await flaky_pool.close()
    assert connection.is_closed()


@pytest.mark.anyio
async def test_closing_closes_idle_connections_and_those_given_back_later(
    pool: ConnectionPool,
) -> None:
    idle, busy = await pool.acquire(), await pool.acquire()
    pool.release(idle)
    await pool.close()
    assert idle.is_closed()
    assert not busy.is_closed()
    pool.release(busy)
    assert busy.is_closed()
    assert pool.open_connections == 0
    with pytest.raises(RuntimeError, match="closed"):
        await pool.acquire()


@pytest.mark.anyio
async def test_closing_refuses_the_callers_still_waiting(pool: ConnectionPool) -> None:
    held = [await pool.acquire(), await pool.acquire()]
    (waiter,) = await waiting(pool, 1)
    await pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        await asyncio.wait_for(waiter, 5)
    for connection in held:  # given back after the close: closed, handed to nobody
        pool.release(connection)
        assert connection.is_closed()
    assert pool.open_connections == 0


def test_a_pool_needs_a_connection() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ConnectionPool(asyncpg.connect, size=0)
