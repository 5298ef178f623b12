"""Limits on every request (ASGI middleware), before any endpoint runs.

The body size: a declared ``Content-Length`` over the limit is refused before the body is
read; a body without one (chunked) is counted as it streams and refused the moment it
passes the limit. Either way the answer is 413 and nothing of the body is stored.

The body time: the whole body must have arrived within ``body_timeout`` seconds of the
request's start, however it trickles in; a sender that stalls, or drips a byte now and then
(slowloris), is answered 408 and nothing of its body is stored. Once the body is complete,
waiting for the client to disconnect (event streams do) is not limited.

NUL characters in the path or the query string are refused (400): no database text column
can hold them, and no legitimate request carries them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import BodyTimeout, BodyTooLarge, MalformedBody
from app.responses import error_response


class RequestLimits:
    def __init__(self, app: ASGIApp, *, max_bytes: int, body_timeout: float) -> None:
        self._app = app
        self._max_bytes = max_bytes
        self._body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        # find, not ``in``: bytes' ``in`` tries its operand as a byte value first, and raises
        # and clears a TypeError on every request.
        if "\x00" in scope["path"] or scope.get("query_string", b"").find(b"%00") >= 0:
            nul = MalformedBody("NUL characters are not accepted in the URL")
            await error_response(nul)(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            refusal = self._check_declared(declared)
            if refusal is not None:
                await error_response(refusal)(scope, receive, send)
                return
        received = 0
        complete = False
        deadline = asyncio.get_running_loop().time() + self._body_timeout

        async def limited() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                message = await _by(deadline, receive)
            except TimeoutError:
                raise BodyTimeout(
                    f"the body did not all arrive within {self._body_timeout:g} s"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max_bytes:
                    raise self._too_large()
                complete = not message.get("more_body", False)
            else:
                complete = True  # the client went away
            return message

        await self._app(scope, limited, send)

    def _check_declared(self, declared: bytes) -> BodyTooLarge | MalformedBody | None:
        if not declared.isdigit():
            return MalformedBody("Content-Length is not a number")
        return self._too_large() if int(declared) > self._max_bytes else None

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(f"the body is over the limit of {self._max_bytes} bytes")


async def _by(deadline: float, receive: Receive) -> Message:
    """``await receive()``, cut off (``TimeoutError``) at the event loop's time ``deadline``.

    A timer is set only when the message has to be waited for: a webhook's body has
    usually arrived with its headers, and a timer set and cancelled for every request was
    1.5 % of a delivery's instructions (README, Performance). Past the deadline a message
    already there is refused too."""
    waiting = receive().__await__()
    try:
        step = waiting.send(None)
    except StopIteration as done:
        if asyncio.get_running_loop().time() >= deadline:
            raise TimeoutError from None
        message: Message = done.value
        return message
    async with asyncio.timeout_at(deadline):
        return await _Resumed(waiting, step)


class _Resumed:
    """An awaitable already started, awaited from the step it reached: what ``await`` (and
    ``yield from``) does with it after its first step."""

    def __init__(self, waiting: Generator[Any, Any, Message], step: Any) -> None:
        self._waiting = waiting
        self._step = step

    def __await__(self) -> Generator[Any, Any, Message]:
        waiting, step = self._waiting, self._step
        while True:
            sent: Any = None
            thrown: BaseException | None = None
            try:
                sent = yield step
            except GeneratorExit:
                waiting.close()
                raise
            except BaseException as exc:  # the timeout's cancellation, passed on
                thrown = exc
            try:
                step = waiting.send(sent) if thrown is None else waiting.throw(thrown)
            except StopIteration as done:
                message: Message = done.value
                return message
