"""PostgreSQL's write path (app/postgres.py): the shared flush. The flush itself, against
a real server, is tested through Database in tests/test_database.py; here the sharing is
driven step by step, with flushes that end when the test says."""

from __future__ import annotations

import asyncio

import pytest

from app.postgres import Flusher


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Flushes:
    """Flushes that each wait for the test to end them (``end``)."""

    def __init__(self) -> None:
        self.begun: list[asyncio.Future[None]] = []

    async def __call__(self) -> None:
        ended = asyncio.get_running_loop().create_future()
        self.begun.append(ended)
        await ended

    async def end(self, index: int, error: Exception | None = None) -> None:
        if error is None:
            self.begun[index].set_result(None)
        else:
            self.begun[index].set_exception(error)
        await settled()


async def settled() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def asking(flusher: Flusher, count: int) -> list[asyncio.Task[None]]:
    callers = [asyncio.create_task(flusher.flush()) for _ in range(count)]
    await settled()
    return callers


@pytest.mark.anyio
async def test_a_lone_caller_gets_a_flush_of_its_own_at_once() -> None:
    flushes = Flushes()
    flusher = Flusher(flushes)
    (caller,) = await asking(flusher, 1)
    assert len(flushes.begun) == 1
    await flushes.end(0)
    assert caller.done()
    assert caller.exception() is None


@pytest.mark.anyio
async def test_callers_asking_during_a_flush_share_the_next_one_begun_after_they_asked() -> None:
    flushes = Flushes()
    flusher = Flusher(flushes)
    (first,) = await asking(flusher, 1)
    # These may have committed after the running flush began: it must not answer them.
    later = await asking(flusher, 5)
    assert len(flushes.begun) == 1
    await flushes.end(0)
    assert first.done()
    assert not any(caller.done() for caller in later)
    assert len(flushes.begun) == 2  # one more flush for the five, not five
    await flushes.end(1)
    assert all(caller.done() and caller.exception() is None for caller in later)
    assert len(flushes.begun) == 2


@pytest.mark.anyio
async def test_a_failed_flush_fails_each_of_its_callers_and_the_next_one_still_runs() -> None:
    flushes = Flushes()
    flusher = Flusher(flushes)
    (first,) = await asking(flusher, 1)
    shared = await asking(flusher, 2)
    await flushes.end(0, ConnectionResetError("the server went away"))
    assert isinstance(first.exception(), ConnectionResetError)
    later = await asking(flusher, 1)  # asks while the shared flush runs
    await flushes.end(1, ConnectionResetError("the server went away again"))
    assert [type(caller.exception()) for caller in shared] == [ConnectionResetError] * 2
    await flushes.end(2)
    assert later[0].done()
    assert later[0].exception() is None


@pytest.mark.anyio
async def test_a_cancelled_caller_leaves_the_flush_to_the_others() -> None:
    flushes = Flushes()
    flusher = Flusher(flushes)
    (first,) = await asking(flusher, 1)
    cancelled, kept = await asking(flusher, 2)
    cancelled.cancel()
    first.cancel()  # the caller running a flush itself, cancelled mid-flush
    await settled()
    assert cancelled.cancelled()
    assert first.cancelled()
    assert len(flushes.begun) == 2  # the next began when the first was interrupted
    await flushes.end(1)
    assert kept.done()
    assert kept.exception() is None


@pytest.mark.anyio
async def test_close_waits_for_the_flushes_callers_wait_for() -> None:
    flushes = Flushes()
    flusher = Flusher(flushes)
    await asking(flusher, 1)
    (waiting,) = await asking(flusher, 1)
    await flushes.end(0)
    closing = asyncio.create_task(flusher.close())
    await settled()
    assert not closing.done()
    await flushes.end(1)
    await asyncio.wait_for(closing, 5)
    assert waiting.done()
    assert waiting.exception() is None
