"""The body's time limit (app.limits.RequestLimits) around an app that reads the body, with
a receive of the test's own: a message already there, one that comes in time, one that never
comes, and the request cancelled while it waits. (Through a real server: the 408 tests of
test_generated_input.)"""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import BodyTimeout
from app.limits import RequestLimits

SCOPE: Scope = {"type": "http", "path": "/webhooks/proquant", "headers": [], "query_string": b""}


class Body:
    """The ASGI receive of a request whose body comes in ``parts``, each ``delays`` seconds
    after it is asked for (0: there already); it notes a wait that was cancelled."""

    def __init__(self, parts: list[bytes], delays: list[float]) -> None:
        self._parts = parts
        self._delays = delays
        self.cancelled = 0

    async def __call__(self) -> Message:
        delay = self._delays.pop(0)
        if delay:
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        body = self._parts.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(self._parts)}


async def _read(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that reads the whole body, and answers with it."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message["body"])
        if not message["more_body"]:
            break
    await send({"type": "body", "body": b"".join(chunks)})


async def _read_slowly(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that works for 0.3 s on the body's first part before it asks for the next."""
    await receive()
    await asyncio.sleep(0.3)
    await receive()


async def _served(body: Body, *, body_timeout: float, app: ASGIApp = _read) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    limits = RequestLimits(app, max_bytes=1000, body_timeout=body_timeout)
    await limits(SCOPE, body, send)
    return sent


def test_a_body_already_there_is_read_at_once() -> None:
    body = Body([b'{"v1":', b"{}}"], [0, 0])
    assert asyncio.run(_served(body, body_timeout=5)) == [{"type": "body", "body": b'{"v1":{}}'}]


def test_a_body_that_comes_in_time_is_read() -> None:
    body = Body([b'{"v1":', b"{}}"], [0.05, 0.05])
    assert asyncio.run(_served(body, body_timeout=5)) == [{"type": "body", "body": b'{"v1":{}}'}]
    assert body.cancelled == 0


def test_a_body_that_does_not_come_in_time_is_refused_and_its_wait_ends() -> None:
    body = Body([b'{"v1":', b"{}}"], [0, 10])

    async def run() -> float:
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(BodyTimeout, match=r"within 0\.2 s"):
            await _served(body, body_timeout=0.2)
        return loop.time() - began

    assert 0.2 <= asyncio.run(run()) < 5
    assert body.cancelled == 1


def test_a_part_already_there_is_refused_too_once_the_deadline_passed() -> None:
    body = Body([b'{"v1":', b"{}}"], [0, 0])

    async def run() -> None:
        with pytest.raises(BodyTimeout):
            await _served(body, body_timeout=0.2, app=_read_slowly)

    asyncio.run(run())
    assert body.cancelled == 0  # nothing was waited for


def test_a_request_cancelled_while_its_body_is_awaited_is_cancelled_not_timed_out() -> None:
    body = Body([b"{}"], [10])

    async def run() -> None:
        task = asyncio.create_task(_served(body, body_timeout=5))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert body.cancelled == 1
