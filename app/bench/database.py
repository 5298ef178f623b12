"""The bench's database: a fresh one per run, read back after the run with plain SQL
(SQLAlchemy Core, none of the service's code), then removed.

SQLite (the default): a new file in a new temporary directory (``$TMPDIR``). PostgreSQL:
the URL names a server and a database to connect to; the bench creates a new database
``signalbridge_bench_<hex>`` beside it (the role needs ``CREATEDB``), runs against that and
drops it afterwards. The named database itself is never written.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from app.bench import BenchError

EVENT_TYPES = ("SIGNAL_OPEN", "SIGNAL_CLOSE")
EXAMPLES = 3

Rows = Callable[[str], list[Any]]  # an SQL query (no parameters) -> its rows as tuples


def kind(database_url: str | None) -> str:
    return "sqlite" if database_url is None else make_url(database_url).get_backend_name()


@contextmanager
def fresh(database_url: str | None, *, directory: Path) -> Iterator[str]:
    """The URL of a new, empty database, removed when the block ends."""
    if database_url is None:
        yield f"sqlite+aiosqlite:///{directory / 'bench.db'}"
        return
    try:
        url = make_url(database_url)
    except ArgumentError as exc:
        raise BenchError(f"--database-url is not a database URL: {exc}") from exc
    if url.get_backend_name() != "postgresql":
        raise BenchError("--database-url must be a PostgreSQL URL (SQLite is the default)")
    name = f"signalbridge_bench_{uuid.uuid4().hex[:12]}"
    server = url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    _execute(server, f'CREATE DATABASE "{name}"')
    try:
        yield url.set(drivername="postgresql+asyncpg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        _execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_pids(database_url: str) -> list[int] | None:
    """The processes of a PostgreSQL server on this machine (its backends and background
    workers, as ``pg_stat_activity`` lists them), whose CPU time the bench can read; None
    for SQLite, or for a server elsewhere (none of them is a local ``postgres`` process)."""
    if kind(database_url) != "postgresql":
        return None
    listed = _reader(database_url)("SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()")
    local = [int(pid) for (pid,) in listed if _is_local_postgres(int(pid))]
    return local or None


def _is_local_postgres(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "postgres"
    except OSError:
        return False


def check(database_url: str, phases: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the database says is wrong with the run, for a person; empty when all is well.

    Every delivery the phases sent is stored exactly once, answered ``200`` and done, with
    one filled order; no position is left open; every ledger transaction balances; each
    account's cash equals its journal and is not negative.
    """
    rows = _reader(database_url)
    expected = {
        (f"{phase['strategy_prefix']}{n}", event_type)
        for phase in phases
        for n in range(phase["pairs"])
        for event_type in EVENT_TYPES
    }
    events = rows("SELECT id, strategy_external_id, event_type, state, answer_status FROM events")
    stored = Counter((strategy, event_type) for _id, strategy, event_type, _s, _a in events)
    problems = [
        _problem("deliveries not stored", sorted(expected - stored.keys())),
        _problem("events stored that the bench did not send", sorted(stored.keys() - expected)),
        _problem("deliveries stored more than once", sorted(k for k, n in stored.items() if n > 1)),
        _problem(
            "events not done with 200",
            [
                (i, strategy, state, status)
                for i, strategy, _t, state, status in events
                if state != "done" or status != 200
            ],
        ),
    ]
    orders: defaultdict[int, list[str]] = defaultdict(list)
    for event_id, status in rows("SELECT event_id, status FROM orders"):
        orders[event_id].append(status)
    problems.append(
        _problem(
            "events without exactly one filled order",
            [(i, orders[i]) for i, *_rest in events if orders[i] != ["filled"]],
        )
    )
    positions = rows("SELECT id, status FROM positions")
    problems.append(_problem("positions left open", [p for p in positions if p[1] != "closed"]))
    problems.append(_ledger(rows))
    return [problem for problem in problems if problem]


def _ledger(rows: Rows) -> str:
    transactions: defaultdict[int, Decimal] = defaultdict(Decimal)
    cash: defaultdict[int, Decimal] = defaultdict(Decimal)
    for transaction_id, account_id, ledger_account, amount in rows(
        "SELECT transaction_id, account_id, ledger_account, amount FROM postings"
    ):
        transactions[transaction_id] += Decimal(amount)
        if ledger_account == "cash":
            cash[account_id] += Decimal(amount)
    wrong: list[Any] = [(i, total) for i, total in transactions.items() if total != 0]
    for account_id, name, balance in rows("SELECT id, name, cash FROM accounts"):
        if Decimal(balance) != cash[account_id] or Decimal(balance) < 0:
            wrong.append((name, f"cash {balance}, journal {cash[account_id]}"))
    return _problem("ledger out of balance", wrong)


def _problem(what: str, examples: Sequence[Any]) -> str:
    if not examples:
        return ""
    shown = ", ".join(str(example) for example in examples[:EXAMPLES])
    return f"{what}: {len(examples)} (e.g. {shown})"


def _reader(database_url: str) -> Rows:
    def rows(sql: str) -> list[Any]:
        return asyncio.run(_fetch(database_url, sql))

    return rows


async def _fetch(database_url: str, sql: str) -> list[Any]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            return [tuple(row) for row in await connection.execute(text(sql))]
    finally:
        await engine.dispose()


def _execute(database_url: str, sql: str) -> None:
    async def run() -> None:
        engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                await connection.execute(text(sql))
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    except (OSError, SQLAlchemyError) as exc:
        raise BenchError(f"PostgreSQL: {sql.split(' ')[0].lower()} failed: {exc}") from exc
