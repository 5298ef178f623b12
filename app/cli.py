"""The ``signalbridge`` command (also ``python -m app``).

``serve`` runs the service; ``bench`` measures it (:mod:`app.bench`); ``send`` is a provider
emulator that posts one v1 event with a fresh timestamp and prints the answer; ``positions``
and ``book`` read the operator API and print tables (``--json`` for the raw answer);
``migrate`` applies the schema migrations; the operator's other commands are in
:mod:`app.commands`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from app import commands as operator_commands
from app.commands import Unreachable, http, request, show, table
from app.settings import Settings, load_settings, share_config

QUANTITY_PLACEHOLDER = "__quantity__"
EXAMPLE_INTEGRATION = {
    "name": "demo@example.com",
    "description": "Signalbridge",
    "imageUrl": "https://example.com/logo.png",
    "webhook": {"url": "http://127.0.0.1:8000/webhooks/proquant", "headers": {}},
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    try:
        settings = load_settings(arguments.config)
    except (OSError, ValueError) as exc:
        print(f"signalbridge: cannot read the config: {exc}", file=sys.stderr)
        return 2
    try:
        result: int = arguments.run(arguments, settings)
    except InvalidOperation:
        print("signalbridge: --quantity must be a decimal number", file=sys.stderr)
        return 2
    except Unreachable as exc:
        print(f"signalbridge: cannot reach the service: {exc}", file=sys.stderr)
        return 1
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="signalbridge", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config", help="config file (default: $SIGNALBRIDGE_CONFIG or config/signalbridge.toml)"
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        help="worker processes sharing the port (default 1). More than one needs PostgreSQL: "
        "the processes agree through the database's row locks and constraints, and know "
        "which of them are alive through its advisory locks. SQLite, the embedded default, "
        "is one process: it allows one writer at a time, so more processes would only queue.",
    )
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="apply the schema migrations")
    migrate.set_defaults(run=_migrate)

    send = commands.add_parser("send", help="post one ProQuant v1 event (provider emulator)")
    _client_options(send)
    send.add_argument("--type", default="SIGNAL_OPEN", help="event type (default SIGNAL_OPEN)")
    send.add_argument("--ticker", default="XAUUSD")
    send.add_argument("--direction", choices=["BUY", "SELL"], default="BUY")
    send.add_argument("--quantity", default="10", help="units, as a decimal number")
    send.add_argument("--strategy-id", default="6bbc583bf6d70605bbbc892f66367ab7")
    send.add_argument("--strategy-name", default="Gold High-Risk")
    send.add_argument("--position-id", default="960fe1a63d264d0f4e19a0ebf385497e")
    send.add_argument("--token", help="integration token (default: the config's first)")
    send.add_argument("--token-header", help="header for the token (default: the config's)")
    send.add_argument("--timestamp", type=int, help="Unix ms (default: now)")
    send.add_argument("--deprecation", help="set v1's deprecation date")
    send.set_defaults(run=_send)

    positions = commands.add_parser("positions", help="list positions")
    _client_options(positions)
    positions.add_argument("--status", choices=["opening", "open", "closing", "closed"])
    positions.add_argument("--strategy", help="provider strategy id")
    positions.set_defaults(run=_positions)

    book = commands.add_parser("book", help="an account's book: balance, holdings, trades")
    _client_options(book)
    book.add_argument("account")
    book.set_defaults(run=_book)

    bench = commands.add_parser(
        "bench",
        help="measure the service against a bare Starlette app (starts both itself)",
        description="Start the service (one worker, log level WARNING, a fresh database) and a "
        "bare Starlette app, drive each from a separate process at every --concurrency, print "
        "deliveries per second, latency, memory, start-up and restart, and verify what was "
        "stored. A progress bar goes to stderr when it is a terminal. Exit code 1: "
        "verification failed; 2: the bench could not run.",
    )
    bench.add_argument(
        "--count", type=int, default=50000, help="deliveries per phase, at most (%(default)s)"
    )
    bench.add_argument(
        "--seconds", type=float, default=10.0, help="seconds per phase, at most (%(default)s)"
    )
    bench.add_argument(
        "--concurrency", default="1,32", help="levels, comma-separated (%(default)s)"
    )
    bench.add_argument(
        "--database-url",
        help="a PostgreSQL server: a fresh database is made beside this one and dropped after "
        "(default: a fresh SQLite file under $TMPDIR)",
    )
    bench.add_argument("--skip-baseline", action="store_true", help="measure the service only")
    bench.add_argument(
        "--runs",
        type=int,
        default=1,
        help="run everything this many times, one run after another, and report each figure "
        "as the median of its runs (%(default)s; at most 9)",
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(run=_bench)

    operator_commands.add(commands, _client_options)
    return parser


def _client_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--url", help="service URL (default: http://HOST:PORT from config)")
    command.add_argument(
        "--api-key",
        help="operator key (default: $SIGNALBRIDGE_API_KEY, else the config's first plain key)",
    )
    command.add_argument("--json", action="store_true", help="print the raw JSON answer")


def _worker_count(text: str) -> int:
    count = int(text)
    if count < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return count


def _serve(arguments: argparse.Namespace, settings: Settings) -> int:
    from app import server
    from app.application import create_app
    from app.database import is_sqlite

    options: dict[str, Any] = {
        "host": arguments.host or settings.host,
        "port": arguments.port or settings.port,
        "log_level": settings.log_level,
        "log_format": settings.log_format,
    }
    if arguments.workers == 1:
        server.serve(create_app(settings), **options)
        return 0
    if is_sqlite(settings.database_url):
        print(
            "signalbridge: --workers needs PostgreSQL (database_url = "
            "postgresql+asyncpg://...). SQLite, the embedded default, serves from one "
            "process: it has one writer at a time, so more processes would only queue.",
            file=sys.stderr,
        )
        return 2
    # Each worker process builds its own app from the same config file and environment.
    share_config(arguments.config)
    server.serve(
        "app.application:create_app_from_environment",
        factory=True,
        workers=arguments.workers,
        **options,
    )
    return 0


def _bench(arguments: argparse.Namespace, settings: Settings) -> int:
    from app.bench import command

    return command.run(arguments, settings)


def _migrate(_arguments: argparse.Namespace, settings: Settings) -> int:
    from app import migrate
    from app.database import create_engine

    async def run() -> str:
        engine = create_engine(settings.database_url)
        try:
            return await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    try:
        said = asyncio.run(run())
    except migrate.SchemaMismatch as exc:
        print(f"signalbridge: {exc}", file=sys.stderr)
        return 2
    print(said)
    return 0


def _url(arguments: argparse.Namespace, settings: Settings) -> str:
    return str(arguments.url or f"http://{settings.host}:{settings.port}").rstrip("/")


def _send(arguments: argparse.Namespace, settings: Settings) -> int:
    integration = settings.integrations[0] if settings.integrations else None
    token = arguments.token
    if token is None and integration is not None and integration.tokens:
        token = integration.tokens[0].get_secret_value()
    header = arguments.token_header or (
        integration.token_header if integration else "x-signalbridge-token"
    )
    envelope = {"v1": {"deprecation": arguments.deprecation, "event": _event(arguments)}}
    # The quantity goes into the JSON as the exact decimal text given (never via a float).
    quantity = str(Decimal(arguments.quantity))
    body = json.dumps(envelope).replace(f'"{QUANTITY_PLACEHOLDER}"', quantity)
    response = http(
        "POST",
        f"{_url(arguments, settings)}/webhooks/proquant",
        content=body,
        headers={"content-type": "application/json", **({header: token} if token else {})},
        timeout=10,
    )
    if arguments.json:
        print(response.text or "{}")
    else:
        typed = " (typed: x-proquant-error)" if response.headers.get("x-proquant-error") else ""
        print(f"{response.status_code}{typed} {response.text}".rstrip())
    return 0 if response.status_code == 200 else 1


def _event(arguments: argparse.Namespace) -> dict[str, Any]:
    timestamp = arguments.timestamp if arguments.timestamp is not None else int(time.time() * 1000)
    data: Any = None
    if arguments.type.startswith("SIGNAL_"):
        data = {
            "direction": arguments.direction,
            "ticker": arguments.ticker,
            "quantity": QUANTITY_PLACEHOLDER,
            "strategy": {"id": arguments.strategy_id, "name": arguments.strategy_name},
            "proquantPositionId": arguments.position_id,
        }
    elif arguments.type.startswith("STRATEGY_"):
        data = {"id": arguments.strategy_id, "name": arguments.strategy_name}
    return {
        "timestamp": timestamp,
        "type": arguments.type,
        "integration": EXAMPLE_INTEGRATION,
        "data": data,
    }


def _positions(arguments: argparse.Namespace, settings: Settings) -> int:
    params = {"status": arguments.status, "strategy": arguments.strategy}
    answer = request(arguments, settings, "GET", "/api/positions", params=params)
    columns = ["id", "strategy_id", "ticker", "direction", "status", "quantity", "average_entry",
               "realized_pnl", "attention"]  # fmt: skip
    if arguments.json:
        return show(arguments, answer, None)
    print(table(answer["positions"], columns))
    return 0


def _book(arguments: argparse.Namespace, settings: Settings) -> int:
    answer = request(arguments, settings, "GET", f"/api/accounts/{arguments.account}/book")
    if arguments.json:
        return show(arguments, answer, None)
    print(f"account {answer['account']}: balance {answer['balance']}, "
          f"realized PnL {answer['realized_pnl']}, fees {answer['fees']}")  # fmt: skip
    holding = ", ".join(f"{t} {q}" for t, q in answer["holding"].items()) or "none"
    print(f"holding: {holding}")
    print(table(answer["trades"], ["at", "type", "ticker", "quantity", "price", "fee"]))
    return 0
