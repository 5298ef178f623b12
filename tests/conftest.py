"""Test harness: the real service on a loopback port, over a fresh SQLite file per test.

``service`` starts uvicorn in a thread with the demo config, a settable clock (a Wednesday
at 15:00 UTC, when every demo market is open) and paper brokers the test can move. State is
read back through the operator API or straight from the database with its own driver
(``sqlite3``, ``asyncpg``),
independently of the service's own code.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from sqlalchemy import delete
from sqlalchemy.dialects import postgresql

from app import migrate, schema
from app.application import create_app, paper_brokers
from app.broker import Broker
from app.database import create_engine
from app.settings import Settings, load_settings
from tests.server import Server

CONFIG = Path(__file__).parent.parent / "config" / "signalbridge.toml"
README = Path(__file__).parent.parent / "README.md"  # tests keep what it names true
OPEN_MARKETS = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)  # Wednesday, 10:00 in New York
TOKEN = "demo-token"
OPERATOR_KEY = "demo-operator-key"
DECIMAL_MARK = "~decimal~"
STRATEGY = {"id": "6bbc583bf6d70605bbbc892f66367ab7", "name": "Gold High-Risk"}

# Hypothesis, for the property-based modules: no deadline (every example talks to a real
# server and database), and on failure the @reproduce_failure blob beside the steps. Under CI
# the example database is off, so a run leaves no .hypothesis folder and depends on none.
hypothesis_settings.register_profile(
    "signalbridge",
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
hypothesis_settings.register_profile(
    "signalbridge-ci", hypothesis_settings.get_profile("signalbridge"), database=None
)
hypothesis_settings.load_profile("signalbridge-ci" if os.environ.get("CI") else "signalbridge")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject's addopts): two workers a core on a small machine, up to four.
    Most tests wait on a server process or a database, so one worker a core left the cores
    idle much of the time: on 2 cores the suite took 205 s with 2 workers, 158 and 166 s
    with 4. From four cores on, one worker a core, as xdist's own auto does."""
    cores = os.cpu_count() or 1
    return cores if cores >= 4 else min(2 * cores, 4)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def milliseconds(self) -> int:
        return int(self.now.timestamp() * 1000)


def dumps(body: Any) -> str:
    """JSON with Decimal values written as exact JSON numbers, as a provider sends them."""

    def mark(value: Any) -> str:
        if isinstance(value, Decimal):
            return f"{DECIMAL_MARK}{value}{DECIMAL_MARK}"
        raise TypeError(type(value).__name__)

    text = json.dumps(body, default=mark)
    return re.sub(f'"{DECIMAL_MARK}(.*?){DECIMAL_MARK}"', r"\1", text)


def envelope(
    event_type: str,
    data: Any = None,
    *,
    timestamp: int,
    deprecation: str | None = None,
) -> dict[str, Any]:
    return {
        "v1": {
            "deprecation": deprecation,
            "event": {
                "timestamp": timestamp,
                "type": event_type,
                "integration": {
                    "name": "demo@example.com",
                    "description": "Signalbridge",
                    "imageUrl": "https://example.com/logo.png",
                    "webhook": {
                        "url": "http://127.0.0.1/webhooks/proquant",
                        "headers": {"x-signalbridge-token": TOKEN},
                    },
                },
                "data": data,
            },
        }
    }


def signal(
    *,
    direction: str = "BUY",
    ticker: str = "XAUUSD",
    quantity: Any = 10,
    strategy: Mapping[str, str] = STRATEGY,
    position_id: str = "960fe1a63d264d0f4e19a0ebf385497e",
) -> dict[str, Any]:
    return {
        "direction": direction,
        "ticker": ticker,
        "quantity": quantity,
        "strategy": dict(strategy),
        "proquantPositionId": position_id,
    }


@dataclass
class Service:
    url: str
    settings: Settings
    clock: Clock
    brokers: Mapping[str, Broker]
    database_url: str
    client: httpx.Client = field(init=False)
    sent: int = 0

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def post(
        self,
        body: Any,
        *,
        token: str | None = TOKEN,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        content = body if isinstance(body, bytes) else dumps(body).encode()
        sent = {"content-type": "application/json"}
        if token is not None:
            sent["x-signalbridge-token"] = token
        sent.update(headers or {})
        return self.client.post("/webhooks/proquant", content=content, headers=sent)

    def send(self, event_type: str, data: Any = None, **options: Any) -> httpx.Response:
        """Post a new event: each call's timestamp is 1 ms later, so its dedupe key is new."""
        self.sent += 1
        timestamp = options.pop("timestamp", None) or self.clock.milliseconds() + self.sent
        return self.post(envelope(event_type, data, timestamp=timestamp), **options)

    def api(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params, headers={"x-api-key": OPERATOR_KEY})
        assert response.status_code == 200, response.text
        return response.json()

    def rows(self, sql: str, *parameters: Any) -> list[Any]:
        """Run SQL on the service's database with its own driver (``?`` placeholders)."""
        return self.rows_many((sql, parameters))[0]

    def rows_many(self, *queries: tuple[str, Sequence[Any]]) -> list[list[Any]]:
        """Several ``(sql, parameters)`` on one connection, in order (one connection set-up
        instead of one a query: checks after every step stay fast on PostgreSQL)."""
        if self.database_url.startswith("sqlite"):
            connection = sqlite3.connect(self.database_url.split("///", 1)[1])
            connection.row_factory = sqlite3.Row
            try:
                results = [
                    connection.execute(sql, parameters).fetchall() for sql, parameters in queries
                ]
                connection.commit()
                return results
            finally:
                connection.close()
        numbered = [(_dollar_placeholders(sql), parameters) for sql, parameters in queries]
        return asyncio.run(postgres_fetch(self.database_url, numbered))


ServiceFactory = Callable[..., Service]
POSTGRES_URL = os.environ.get("SIGNALBRIDGE_TEST_POSTGRES_URL")


def _dollar_placeholders(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...``."""
    counter = itertools.count(1)
    return re.sub(r"\?", lambda _match: f"${next(counter)}", sql)


async def postgres_fetch(url: str, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        return [list(await connection.fetch(sql, *parameters)) for sql, parameters in queries]
    finally:
        await connection.close()


async def postgres_admin(sql: str, *parameters: object) -> None:
    assert POSTGRES_URL is not None
    connection = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
    try:
        await connection.execute(sql, *parameters)
    finally:
        await connection.close()


def postgres_url() -> str:
    """The test PostgreSQL server's URL; without one, skip the calling test and say why."""
    if POSTGRES_URL is None:
        pytest.skip(
            "PostgreSQL half: set SIGNALBRIDGE_TEST_POSTGRES_URL, e.g. "
            "postgresql+asyncpg://postgres@127.0.0.1:5432/test (.ci/run does)"
        )
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no rows: a new SQLite file (the service builds its schema as it
    starts), or a PostgreSQL database already at this build's schema, one of this test
    worker's own: built for the first test that needs one, then emptied after each test for
    the next. Making and building a new PostgreSQL database took 0.4 to 0.5 s a test, about a
    fifth of the suite; emptying one takes 0.07 s. Tests of an empty database itself (the
    migrations, several processes building one at once) take :func:`empty_database_url`."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/signalbridge.db"
        return
    postgres_url()
    name = _SPARE_DATABASES.pop() if _SPARE_DATABASES else asyncio.run(_built_database())
    reusable = False
    try:
        yield postgres_database_url(name)
    finally:
        try:
            reusable = asyncio.run(_emptied(name))
        finally:
            if reusable:
                _SPARE_DATABASES.append(name)
            else:
                asyncio.run(drop_postgres_database(name))


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it, no tables either: a new SQLite file, or a new
    PostgreSQL database, dropped after the test."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/signalbridge.db"
        return
    postgres_url()
    name = asyncio.run(new_postgres_database())
    try:
        yield postgres_database_url(name)
    finally:
        asyncio.run(drop_postgres_database(name))


def postgres_database_url(name: str, *, driver: str = "+asyncpg") -> str:
    """The test server's URL for its database ``name`` (``driver=""``: asyncpg's own)."""
    assert POSTGRES_URL is not None
    return POSTGRES_URL.replace("+asyncpg", driver).rsplit("/", 1)[0] + f"/{name}"


async def new_postgres_database() -> str:
    """A new, empty database on the test server; its name."""
    name = f"signalbridge_test_{uuid.uuid4().hex[:12]}"
    await postgres_admin(f"CREATE DATABASE {name}")
    return name


async def drop_postgres_database(name: str) -> None:
    await postgres_admin(f"DROP DATABASE {name} WITH (FORCE)")


# This worker's PostgreSQL databases at this build's schema and without rows, for the next
# test (each xdist worker is a process of its own); dropped as the worker ends.
_SPARE_DATABASES: list[str] = []
# What the catalog says of a database just built (see _schema_of), to check a used one by.
_BUILT_SCHEMA: list[str] = []


async def _built_database() -> str:
    name = await new_postgres_database()
    engine = create_engine(postgres_database_url(name))
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()
    if not _BUILT_SCHEMA:
        connection = await asyncpg.connect(postgres_database_url(name, driver=""))
        try:
            _BUILT_SCHEMA.append(await _schema_of(connection))
        finally:
            await connection.close()
    return name


async def _emptied(name: str) -> bool:
    """Empty a used database for the next test: every connection to it closed (a test may
    leave a process behind), every table emptied and its ids restarted, the revision kept.
    False when it no longer has the schema it was built with (a test changed it): it is
    dropped instead."""
    await postgres_admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = $1 AND pid <> pg_backend_pid()",
        name,
    )
    connection = await asyncpg.connect(postgres_database_url(name, driver=""))
    try:
        if await _schema_of(connection) != _BUILT_SCHEMA[0]:
            return False
        await _delete_every_row(connection)
        return True
    finally:
        await connection.close()


# Every table's rows, children first, then every sequence back at its start. DELETE, not
# TRUNCATE: a test leaves a few rows, and TRUNCATE makes each table's files anew: 0.14 to
# 0.17 s for the schema's tables, against 0.02 to 0.03 s for these. The triggers are off
# while it runs, as on a replica: the ledger's refuse a DELETE, the foreign keys' are not
# needed for rows that all go.
_DELETE_EVERY_ROW = "; ".join(
    [
        "SET LOCAL session_replication_role = replica",
        *(
            str(delete(table).compile(dialect=postgresql.dialect()))
            for table in reversed(schema.metadata.sorted_tables)
        ),
        "SELECT setval(format('%I.%I', schemaname, sequencename), 1, false)"
        " FROM pg_sequences WHERE schemaname = 'public'",
    ]
)


async def _delete_every_row(connection: asyncpg.Connection) -> None:
    """Empty every table and restart its ids (a superuser's way; TRUNCATE for any other
    role, which may not turn triggers off)."""
    try:
        async with connection.transaction():
            await connection.execute(_DELETE_EVERY_ROW)
    except asyncpg.InsufficientPrivilegeError:
        tables = ", ".join(table.name for table in schema.metadata.sorted_tables)
        await connection.execute(f"TRUNCATE {tables} RESTART IDENTITY")


async def _schema_of(connection: asyncpg.Connection) -> str:
    """The database's revision, columns, indexes, constraints, triggers and functions, as
    one text."""
    parts = await connection.fetch(
        "SELECT string_agg(x, E'\\n' ORDER BY x) FROM ("
        " SELECT version_num AS x FROM alembic_version"
        " UNION ALL SELECT concat_ws(' ', table_name, column_name, data_type, is_nullable,"
        "  column_default) FROM information_schema.columns WHERE table_schema = 'public'"
        " UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'"
        " UNION ALL SELECT pg_get_constraintdef(oid) || conname FROM pg_constraint"
        "  WHERE connamespace = 'public'::regnamespace"
        " UNION ALL SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal"
        " UNION ALL SELECT proname || prosrc FROM pg_proc"
        "  WHERE pronamespace = 'public'::regnamespace"
        ") AS catalog"
    )
    return str(parts[0][0])


@pytest.fixture(scope="session", autouse=True)
def _drop_spare_databases() -> Iterator[None]:
    yield
    while _SPARE_DATABASES:
        asyncio.run(drop_postgres_database(_SPARE_DATABASES.pop()))


@pytest.fixture
def start_service(database_url: str) -> Iterator[ServiceFactory]:
    """Start the service; call again to restart it on the same database."""
    servers: list[Server] = []
    clients: list[httpx.Client] = []

    def start(
        *,
        brokers: Mapping[str, Broker] | Literal["app"] | None = None,
        clock: Clock | None = None,
        **overrides: Any,
    ) -> Service:
        for server in servers:
            server.stop()
        settings = load_settings(CONFIG, database_url=database_url, **overrides)
        clock = clock or Clock(OPEN_MARKETS)
        # None: paper brokers the test can reach; "app": the app builds its own (ccxt too).
        if brokers is None:
            brokers = paper_brokers(settings, clock=clock)
        app_brokers = None if brokers == "app" else brokers
        server = Server(create_app(settings, brokers=app_brokers, clock=clock))
        server.start()
        servers.append(server)
        service = Service(server.url, settings, clock, app_brokers or {}, database_url)
        clients.append(service.client)
        return service

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.stop()


@pytest.fixture
def service(start_service: ServiceFactory) -> Service:
    return start_service()


def check_invariants(
    service: Service, *, account: str = "demo-paper", settled: bool = False
) -> dict[str, Any]:
    """The design's invariants, read straight from the database (on one connection); returns
    the account's book as the API shows it. ``settled``: nothing is in flight, so no order
    intent may be pending and no position half-way (``opening``, ``closing``)."""
    postings, accounts, crowded, unanswered, unsettled = service.rows_many(
        (
            "SELECT transaction_id, account_id, ledger_account, amount, ticker, quantity"
            " FROM postings",
            (),
        ),
        ("SELECT id, name, cash FROM accounts", ()),
        (
            "SELECT strategy_id FROM positions WHERE status <> 'closed' "
            "GROUP BY strategy_id HAVING count(*) > 1",
            (),
        ),
        ("SELECT id FROM events WHERE answer_status IS NULL", ()),
        (
            "SELECT 'order', id FROM orders WHERE status = 'pending' UNION ALL "
            "SELECT 'position', id FROM positions WHERE status IN ('opening', 'closing')",
            (),
        ),
    )
    totals: dict[int, Decimal] = {}
    cash: dict[int, Decimal] = {}
    holding: dict[int, dict[str, Decimal]] = {}
    for row in postings:
        amount = Decimal(row["amount"])
        totals[row["transaction_id"]] = totals.get(row["transaction_id"], Decimal(0)) + amount
        if row["ledger_account"] == "cash":
            cash[row["account_id"]] = cash.get(row["account_id"], Decimal(0)) + amount
        elif row["ledger_account"] == "positions":
            tickers = holding.setdefault(row["account_id"], {})
            tickers[row["ticker"]] = tickers.get(row["ticker"], Decimal(0)) + Decimal(
                row["quantity"]
            )
    assert all(total == 0 for total in totals.values()), totals
    # Cash goes below zero only where the account allows margin (shorts): a short's loss
    # beyond its collateral.
    margin = {config.name for config in service.settings.accounts if config.allow_short}
    for row in accounts:
        journal_cash = cash.get(row["id"], Decimal(0))
        assert Decimal(row["cash"]) == journal_cash, row["name"]
        assert journal_cash >= 0 or row["name"] in margin, row["name"]
    assert crowded == []
    assert unanswered == []
    assert not settled or [tuple(row) for row in unsettled] == []
    book: dict[str, Any] = service.api(f"/api/accounts/{account}/book")
    [account_id] = [row["id"] for row in accounts if row["name"] == account]
    assert Decimal(book["balance"]) == cash.get(account_id, Decimal(0))
    held = {t: q for t, q in holding.get(account_id, {}).items() if q}
    assert {t: Decimal(q) for t, q in book["holding"].items()} == held
    return book
