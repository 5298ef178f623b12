"""A lean HTTP/1.1 client for the bench's load generator: one keep-alive connection, one
request at a time, requests given as ready bytes, answers read by status line and
``content-length`` only (what uvicorn sends for every answer the bench receives).

httpx spends more time per request than a bare Starlette endpoint does; measured with it,
the baseline would be the client's speed, not the server's.
"""

from __future__ import annotations

import asyncio
from typing import cast


class ProtocolError(Exception):
    """The server's answer is not one this client reads (chunked, or malformed)."""


class Connection(asyncio.Protocol):
    """One keep-alive connection that carries one request at a time."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _transport, connection = await loop.create_connection(cls, host, port)
        return connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            answer = self._answer()
        except (ProtocolError, ValueError) as exc:
            waiter.set_exception(ProtocolError(str(exc)))
            return
        if answer is not None:
            waiter.set_result(answer)

    def _answer(self) -> tuple[int, bytes] | None:
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(buffer[:end]).lower()
        start = head.find(b"\r\ncontent-length:")
        if start < 0:
            raise ProtocolError(f"no content-length in {head[:200]!r}")
        stop = head.find(b"\r\n", start + 2)
        length = int(head[start + 17 : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(buffer) < total:
            return None
        body = bytes(buffer[end + 4 : total])
        del buffer[:total]
        return int(head[9:12]), body

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self._transport is None:
            raise ConnectionError("connection closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
