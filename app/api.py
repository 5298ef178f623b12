"""The operator API under ``/api``. Every endpoint needs ``X-API-Key``; a ``read`` key may
use the GET endpoints, a ``write`` key all of them (403 otherwise).

The list endpoints (events, orders, positions, an account's ledger) answer
``Accept: text/event-stream`` with a live stream of new items (see :mod:`app.streams`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import keys, queries, streams
from app.errors import Forbidden, MalformedBody, Unauthorized
from app.responses import JSON
from app.settings import OperatorKeyConfig

Endpoint = Callable[[Request], Awaitable[Response]]
Scope = Literal["read", "write"]


def key_scopes(keys: Sequence[OperatorKeyConfig]) -> tuple[tuple[str, Scope], ...]:
    """(SHA-256 digest, scope) of every operator key; plain keys are hashed here."""
    result: list[tuple[str, Scope]] = []
    for key in keys:
        if key.sha256 is not None:
            result.append((key.sha256.lower(), key.scope))
        elif key.key is not None:
            result.append((_digest(key.key.get_secret_value()), key.scope))
    return tuple(result)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def require_key(endpoint: Endpoint, *, scope: Scope = "read") -> Endpoint:
    async def guarded(request: Request) -> Response:
        presented = request.headers.get("x-api-key")
        if not presented:
            raise Unauthorized("send the operator API key in the X-API-Key header")
        digest = _digest(presented)
        granted: Scope | None = None
        for known, known_scope in request.state.services.key_scopes:
            if hmac.compare_digest(digest, known):  # every key is compared: constant time
                granted = known_scope
        if granted is None:
            async with request.state.services.database.read() as connection:
                granted = await keys.scope_of(connection, digest)
        if granted is None:
            raise Unauthorized("the X-API-Key is not a known operator key")
        if scope == "write" and granted != "write":
            raise Forbidden("this key may only read; the action needs a write key")
        return await endpoint(request)

    return guarded


async def positions(request: Request) -> Response:
    status, strategy = request.query_params.get("status"), request.query_params.get("strategy")

    async def fetch(connection: AsyncConnection, after: int | None, limit: int | None) -> Any:
        return await queries.positions(
            connection, status=status, strategy=strategy, after=after, limit=limit
        )

    return await _list(request, "positions", fetch, time_field="created_at")


async def orders(request: Request) -> Response:
    async def fetch(connection: AsyncConnection, after: int | None, limit: int | None) -> Any:
        return await queries.orders(connection, after=after, limit=limit or 100)

    return await _list(request, "orders", fetch, time_field="created_at")


async def ledger(request: Request) -> Response:
    account = request.path_params["name"]
    async with request.state.services.database.read() as connection:
        await queries.account_id(connection, account)  # 404 before any stream starts

    async def fetch(connection: AsyncConnection, after: int | None, limit: int | None) -> Any:
        return await queries.ledger_entries(
            connection, account=account, after=after, limit=limit or 100
        )

    return await _list(request, "ledger_transactions", fetch, time_field="at", kind="ledger")


async def events(request: Request) -> Response:
    params = request.query_params
    limit = whole(params.get("limit", "100"), "limit")
    since, until = _when(params.get("since"), "since"), _when(params.get("until"), "until")

    async def fetch(connection: AsyncConnection, after: int | None, batch: int | None) -> Any:
        return await queries.events(
            connection,
            limit=batch or limit,
            event_type=params.get("type"),
            state=params.get("state"),
            strategy=params.get("strategy"),
            since=since,
            until=until,
            after=after,
        )

    return await _list(request, "events", fetch, time_field="received_at")


async def event(request: Request) -> Response:
    event_id = whole(request.path_params["id"], "event id")
    async with request.state.services.database.read() as connection:
        return JSON(await queries.event(connection, event_id))


async def replay(request: Request) -> Response:
    """Run a stored event again (one that failed for a transient reason, or whose version
    was not understood), under the same exactly-once rules; answers what it answered."""
    event_id = whole(request.path_params["id"], "event id")
    answer = await request.state.services.receiver.replay(event_id)
    body = json.loads(answer.body) if answer.body else None
    return JSON({"event": event_id, "status": answer.status, "answer": body})


async def book(request: Request) -> Response:
    async with request.state.services.database.read() as connection:
        return JSON(await queries.book(connection, request.path_params["name"]))


async def instruments(request: Request) -> Response:
    services = request.state.services
    now = services.clock()
    result = []
    for instrument in services.instruments.values():
        result.append(
            {
                "ticker": instrument.ticker,
                "symbol": instrument.symbol,
                "quantity_step": instrument.quantity_step,
                "min_quantity": instrument.min_quantity,
                "max_quantity": instrument.max_quantity,
                "min_notional": instrument.min_notional,
                "sessions": instrument.sessions.describe(),
                "open_now": instrument.sessions.is_open(now),
                "quotes": await services.quotes(instrument.symbol),
            }
        )
    return JSON({"instruments": result})


async def versions(request: Request) -> Response:
    async with request.state.services.database.read() as connection:
        return JSON({"deprecated_versions": await queries.version_warnings(connection)})


ListFetch = Callable[[AsyncConnection, int | None, int | None], Awaitable[Any]]


async def _list(
    request: Request, table: str, fetch: ListFetch, *, time_field: str, kind: str | None = None
) -> Response:
    """A list as JSON, or its live stream for ``Accept: text/event-stream``."""
    database = request.state.services.database
    if streams.wants_stream(request):

        async def latest(connection: AsyncConnection) -> int:
            return await queries.latest_id(connection, table)

        return await streams.stream(
            request,
            database,
            kind=kind or table,
            fetch_after=fetch,
            latest=latest,
            time_field=time_field,
            heartbeat=request.state.services.settings.stream_heartbeat_seconds,
        )
    async with database.read() as connection:
        return JSON({kind or table: await fetch(connection, None, None)})


MAX_ID = 2**31 - 1  # ids are 32-bit integers in both databases


def whole(value: str, name: str) -> int:
    """A row id or count from the URL: ASCII digits, within the databases' integer range."""
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_ID:
        raise MalformedBody(f"{name} must be a whole number from 0 to {MAX_ID}")
    return int(value)


def _when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise MalformedBody(f"{name} must be an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise MalformedBody(f"{name} needs a time zone (e.g. 2026-11-18T15:00:00Z)")
    return moment


routes = [
    Route("/api/positions", require_key(positions)),
    Route("/api/orders", require_key(orders)),
    Route("/api/accounts/{name}/book", require_key(book)),
    Route("/api/accounts/{name}/ledger", require_key(ledger)),
    Route("/api/events", require_key(events)),
    Route("/api/events/{id}", require_key(event)),
    Route("/api/events/{id}/replay", require_key(replay, scope="write"), methods=["POST"]),
    Route("/api/instruments", require_key(instruments)),
    Route("/api/versions", require_key(versions)),
]
