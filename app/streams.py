"""Server-Sent Event streams of the operator API's lists.

A list endpoint asked with ``Accept: text/event-stream`` streams its new items as they are
committed: ``id`` is the row id, ``event`` the kind, ``data`` the item as JSON. A client that
reconnects with ``Last-Event-ID`` (or ``?last_event_id=``) gets every item after that id,
in order, without gaps or duplicates; without it the stream starts with what is new from
now. A comment line every ``heartbeat`` seconds (the ``stream_heartbeat_seconds`` setting)
keeps proxies from closing an idle stream.

Rows are read in id order. On SQLite writers are serialized, so ids commit in order and
resume is exact. On PostgreSQL, concurrent transactions can commit ids out of order; a row
is therefore only streamed once it is older than ``SETTLE_SECONDS``, which covers a write
transaction's length (they hold no broker call).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import StreamingResponse

from app.database import Database
from app.errors import MalformedBody
from app.responses import to_json

POLL_SECONDS = 0.2
SETTLE_SECONDS = 2.0
BATCH = 100

Fetch = Callable[[AsyncConnection, int | None, int | None], Awaitable[Any]]
Latest = Callable[[AsyncConnection], Awaitable[int]]


def wants_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


async def stream(
    request: Request,
    database: Database,
    *,
    kind: str,
    fetch_after: Fetch,
    latest: Latest,
    time_field: str,
    heartbeat: float,
) -> StreamingResponse:
    """Stream ``kind`` items with an id above the client's last one; ``time_field`` is the
    item's commit-time stamp, used to let PostgreSQL's out-of-order commits settle."""
    last_id = await _resume_point(request, database, latest)
    settle = 0.0 if database.is_sqlite else SETTLE_SECONDS

    async def events() -> AsyncIterator[str]:
        nonlocal last_id
        yield "retry: 1000\n\n"
        quiet_since = time.monotonic()
        while not await request.is_disconnected():
            async with database.read() as connection:
                items = await fetch_after(connection, last_id, BATCH)
            items = list(
                itertools.takewhile(lambda item: _settled(item[time_field], settle), items)
            )
            for item in items:
                last_id = int(item["id"])
                yield f"id: {last_id}\nevent: {kind}\ndata: {to_json(item)}\n\n"
            if items:
                quiet_since = time.monotonic()
                continue
            if time.monotonic() - quiet_since > heartbeat:
                quiet_since = time.monotonic()
                yield ": heartbeat\n\n"
            await asyncio.sleep(POLL_SECONDS)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def _resume_point(request: Request, database: Database, latest: Latest) -> int:
    given = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if given is None:
        async with database.read() as connection:
            return await latest(connection)
    if not (given.isascii() and given.isdigit()) or len(given) > 10:
        raise MalformedBody("Last-Event-ID must be a row id (a whole number)")
    return int(given)


def _settled(stamp: datetime, settle: float) -> bool:
    return not settle or time.time() - stamp.timestamp() >= settle
