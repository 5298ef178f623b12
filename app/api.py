"""The operator API under ``/api``: read-only views of positions, books, events,
instruments and version warnings. Every endpoint needs ``X-API-Key``."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import queries
from app.errors import MalformedBody, Unauthorized
from app.responses import JSON
from app.settings import OperatorKeyConfig

Endpoint = Callable[[Request], Awaitable[Response]]


def key_digests(keys: Sequence[OperatorKeyConfig]) -> tuple[str, ...]:
    return tuple(
        key.sha256.lower()
        if key.sha256 is not None
        else hashlib.sha256(key.key.get_secret_value().encode()).hexdigest()  # type: ignore[union-attr]
        for key in keys
    )


def require_key(endpoint: Endpoint) -> Endpoint:
    async def guarded(request: Request) -> Response:
        presented = request.headers.get("x-api-key")
        if not presented:
            raise Unauthorized("send the operator API key in the X-API-Key header")
        digest = hashlib.sha256(presented.encode()).hexdigest()
        matches = [
            hmac.compare_digest(digest, known) for known in request.state.services.key_digests
        ]
        if not any(matches):
            raise Unauthorized("the X-API-Key is not a known operator key")
        return await endpoint(request)

    return guarded


async def positions(request: Request) -> Response:
    async with request.state.services.database.read() as connection:
        found = await queries.positions(
            connection,
            status=request.query_params.get("status"),
            strategy=request.query_params.get("strategy"),
        )
    return JSON({"positions": found})


async def book(request: Request) -> Response:
    async with request.state.services.database.read() as connection:
        return JSON(await queries.book(connection, request.path_params["name"]))


async def events(request: Request) -> Response:
    limit = request.query_params.get("limit", "100")
    if not limit.isdigit():
        raise MalformedBody("limit must be a whole number")
    async with request.state.services.database.read() as connection:
        found = await queries.events(
            connection,
            limit=int(limit),
            event_type=request.query_params.get("type"),
            state=request.query_params.get("state"),
        )
    return JSON({"events": found})


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


routes = [
    Route("/api/positions", require_key(positions)),
    Route("/api/accounts/{name}/book", require_key(book)),
    Route("/api/events", require_key(events)),
    Route("/api/instruments", require_key(instruments)),
    Route("/api/versions", require_key(versions)),
]
