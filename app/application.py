"""The app factory: ``create_app(settings, ...)`` is where everything is built.

Nothing is created at import. The lifespan opens the database, applies migrations (when
``migrate_on_start``), makes the database agree with the config, builds one broker per
account, and reconciles intents a crash left open before the first request is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import admin, api, logs, migrate, openapi, provisioning, queries, webhooks, workers
from app.broker import Broker
from app.database import Database, create_engine
from app.errors import BrokerError, NotFound, RequestError, SignalbridgeError
from app.instruments import Instrument, instruments_by_ticker
from app.limits import RequestLimits
from app.metrics import Metrics
from app.paper import PaperBroker
from app.receiver import Receiver
from app.responses import JSON, error_response
from app.settings import AccountConfig, Settings, load_settings
from app.values import value
from app.workers import Worker

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


@value
class Services:
    """What the lifespan built, for the endpoints (``request.state.services``)."""

    settings: Settings
    database: Database
    receiver: Receiver
    brokers: Mapping[str, Broker]
    instruments: Mapping[str, Instrument]
    key_scopes: tuple[tuple[str, api.Scope], ...]
    clock: Clock
    metrics: Metrics

    async def quotes(self, symbol: str) -> dict[str, Decimal | None]:
        result: dict[str, Decimal | None] = {}
        for account, broker in self.brokers.items():
            try:
                result[account] = await broker.quote(symbol)
            except SignalbridgeError:
                result[account] = None  # unknown there, or the venue is unreachable
        return result


def paper_brokers(settings: Settings, *, clock: Clock) -> dict[str, Broker]:
    """One paper broker per paper account, quoting the configured instrument prices."""
    return {
        account.name: PaperBroker.for_account(settings, account, clock=clock)
        for account in settings.accounts
        if account.broker == "paper"
    }


def build_brokers(settings: Settings, *, clock: Clock) -> tuple[dict[str, Broker], list[Broker]]:
    """Every account's broker, and the extra venues used only for quotes (to close).

    ccxt is imported only when an account needs it."""
    if not any(a.broker == "ccxt" or a.quotes for a in settings.accounts):
        return paper_brokers(settings, clock=clock), []
    from app import ccxt_broker

    def exchange(account: AccountConfig, exchange_id: str, *, public: bool) -> Broker:
        api_key, secret = (None, None) if public else settings.credentials(account)
        client = ccxt_broker.create_exchange(
            exchange_id,
            api_key=api_key,
            secret=secret,
            sandbox=account.sandbox and not public,
            timeout_seconds=settings.broker_timeout_seconds,
            api_url=account.api_url,
        )
        return ccxt_broker.CcxtBroker(client, overrides=settings.instruments, clock=clock)

    brokers: dict[str, Broker] = {}
    quote_venues: list[Broker] = []
    for account in settings.accounts:
        if account.broker == "ccxt":
            assert account.exchange is not None
            brokers[account.name] = exchange(account, account.exchange, public=False)
        elif account.quotes_exchange:
            venue = exchange(account, account.quotes_exchange, public=True)
            quote_venues.append(venue)
            brokers[account.name] = PaperBroker.for_account(
                settings, account, clock=clock, quotes=venue.quote
            )
        else:
            brokers[account.name] = PaperBroker.for_account(settings, account, clock=clock)
    return brokers, quote_venues


def create_app(
    settings: Settings,
    *,
    brokers: Mapping[str, Broker] | None = None,
    clock: Clock = system_clock,
) -> Starlette:
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[dict[str, Services]]:
        database = Database(
            create_engine(settings.database_url, pool_size=settings.database_pool_size)
        )
        venues, quote_venues = (
            (dict(brokers), []) if brokers is not None else build_brokers(settings, clock=clock)
        )
        background: list[asyncio.Task[None]] = []
        worker: Worker | None = None
        try:
            if settings.migrate_on_start:
                try:
                    await migrate.upgrade(database.engine)
                except migrate.SchemaMismatch as exc:
                    log.error("cannot start: %s", exc)  # a line of its own, not a traceback's
                    raise
            async with database.write() as connection:
                await workers.lock_setup(connection)  # processes starting together queue
                await provisioning.sync_config(connection, settings, now=clock())
                created = await provisioning.accounts_outside(
                    connection, {account.name for account in settings.accounts}
                )
            accounts = {account.name: account for account in [*settings.accounts, *created]}
            for account in created:  # made through the API: paper accounts
                venues[account.name] = PaperBroker.for_account(settings, account, clock=clock)
            instruments = instruments_by_ticker(settings.instruments)
            worker = await Worker.register(database, url=settings.database_url, now=clock())
            receiver = Receiver(
                settings=settings,
                database=database,
                accounts=accounts,
                brokers=venues,
                clock=clock,
                metrics=metrics,
                worker=worker,
            )
            await receiver.reconcile()
            background = [
                asyncio.create_task(receiver.reconcile_forever(), name="reconcile"),
                asyncio.create_task(
                    worker.watch(every=settings.reconcile_interval_seconds, on_lost=_stop),
                    name="liveness",
                ),
                asyncio.create_task(
                    _refresh_markets(venues, every=settings.markets_refresh_seconds),
                    name="markets",
                ),
            ]
            # What start-up built lives as long as the process: out of the collector's
            # sight, a full collection stops walking it (tens of ms at a time under load).
            gc.freeze()
            # The young generation is collected once 10,000 more objects live than at the
            # last collection (the default is 700): deliveries in flight hold thousands,
            # nearly all freed by reference counting, and the collector walked them over
            # and over. It now takes a quarter of the time (0.24 s to 0.06 s over 7,700
            # deliveries, measured with gc.callbacks) for at most a few MiB more held.
            gc.set_threshold(10_000, 20, 20)
            yield {
                "services": Services(
                    settings=settings,
                    database=database,
                    receiver=receiver,
                    brokers=venues,
                    instruments=instruments,
                    key_scopes=api.key_scopes(settings.operator_keys),
                    clock=clock,
                    metrics=metrics,
                )
            }
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            for broker in [*venues.values(), *quote_venues]:
                await broker.close()
            if worker is not None:
                await worker.close()
            await database.dispose()

    routes = [
        # First: the router tries each route in turn, and this one takes the load.
        Route("/webhooks/proquant", webhooks.Proquant(), methods=["POST"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", api.require_key(prometheus)),
        Route("/api/openapi.json", openapi.endpoint, methods=["GET"]),
        *api.routes,
        *admin.routes,
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(
                RequestLimits,
                max_bytes=settings.max_body_bytes,
                body_timeout=settings.body_timeout_seconds,
            )
        ],
        exception_handlers={
            SignalbridgeError: _signalbridge_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        lifespan=lifespan,
    )


def create_app_from_environment() -> Starlette:
    """The app of one ``serve --workers N`` worker process: its settings read again in this
    process, from the config file ``SIGNALBRIDGE_CONFIG`` names and the environment, which
    the parent process passed on."""
    settings = load_settings()
    logs.configure(level=settings.log_level, json_lines=settings.log_format == "json")
    return create_app(settings)


def _stop() -> None:
    """Ask the server to shut down, as an operator's SIGTERM does: this process can no
    longer show other processes that it is alive, so it must not go on executing."""
    os.kill(os.getpid(), signal.SIGTERM)


async def _refresh_markets(brokers: Mapping[str, Broker], *, every: float) -> None:
    """Reload live venues' markets periodically (instrument rules change)."""
    while True:
        await asyncio.sleep(every)
        for name, broker in brokers.items():
            if broker.is_live:
                try:
                    await broker.start()
                except BrokerError as exc:
                    log.warning("markets of %s not refreshed: %s", name, exc.message)


async def healthz(_request: Request) -> Response:
    """Alive: the process answers. For liveness probes; no key, no data."""
    return JSON({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready: the database answers and every account is reconciled with its broker (503
    otherwise, naming what is not). For readiness probes; no key."""
    services: Services = request.state.services
    try:
        async with services.database.read() as connection:
            await connection.execute(text("SELECT 1"))
        database = "ok"
    except SQLAlchemyError as exc:
        database = f"unreachable: {type(exc).__name__}"
    accounts = {
        name: "ready" if ready else "reconciling"
        for name, ready in services.receiver.readiness().items()
    }
    ready = database == "ok" and all(state == "ready" for state in accounts.values())
    return JSON({"database": database, "accounts": accounts}, status_code=200 if ready else 503)


async def prometheus(request: Request) -> Response:
    """Metrics in Prometheus' text format (behind the operator key: they describe trading)."""
    services: Services = request.state.services

    async def open_positions() -> int:
        async with services.database.read() as connection:
            return await queries.open_position_count(connection)

    body = await services.metrics.render(open_positions)
    return Response(body, media_type=services.metrics.content_type)


async def _signalbridge_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignalbridgeError)
    return error_response(exc)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error: SignalbridgeError = (
        NotFound(exc.detail) if exc.status_code == 404 else RequestError(exc.detail)
    )
    error.status_code = exc.status_code
    return error_response(error)


async def _unexpected_error(_request: Request, exc: Exception) -> Response:
    log.exception("unexpected error", exc_info=exc)
    return JSON({"error": "internal_error", "message": "an unexpected error; see the log"}, 500)
