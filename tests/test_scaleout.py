"""Several server processes on one PostgreSQL database keep every guarantee of one.

Real ``signalbridge serve`` processes on loopback ports, one PostgreSQL database without rows per
test. What decides a race between processes is the database: the inbox's unique key, the
partial unique index on open positions, the account row's lock; and which process is alive
is its advisory lock.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from signal import SIGTERM

import asyncpg
import httpx
import pytest

from app.workers import LOCK_CLASS
from tests.conftest import CONFIG, TOKEN, check_invariants, dumps, envelope, signal
from tests.processes import Processes, poll

POSTGRESQL = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
PROCESSES = 3
STRATEGIES = 10
OPENS_PER_STRATEGY = 4  # conflicting opens: different events for one strategy
COPIES = 5  # each event delivered five times, byte for byte: 200 deliveries
# 0.2 BTC at 65000 costs 13000 (+ 1.30 fee): the account's 100000 pays for seven, not eight.
QUANTITY = Decimal("0.2")
AFFORDABLE = 7
SECONDS = 60.0


@pytest.fixture
def processes(database_url: str, tmp_path: Path) -> Iterator[Processes]:
    started = Processes(database_url, tmp_path)
    yield started
    started.stop_all()


def open_signal(strategy: int, position: int, *, timestamp: int) -> bytes:
    data = signal(
        ticker="BTCUSDT",
        quantity=QUANTITY,
        strategy={"id": f"scale-{strategy}", "name": f"Scale {strategy}"},
        position_id=f"p-{strategy}-{position}",
    )
    return dumps(envelope("SIGNAL_OPEN", data, timestamp=timestamp)).encode()


async def deliver_all(deliveries: list[tuple[str, bytes]]) -> list[httpx.Response]:
    """Every delivery at once: ``(base URL, body)``, answers in the same order."""
    headers = {"content-type": "application/json", "x-signalbridge-token": TOKEN}
    limits = httpx.Limits(max_connections=len(deliveries))
    async with httpx.AsyncClient(timeout=SECONDS, limits=limits) as client:
        posts = [
            client.post(f"{url}/webhooks/proquant", content=body, headers=headers)
            for url, body in deliveries
        ]
        return await asyncio.wait_for(asyncio.gather(*posts), SECONDS)


@POSTGRESQL
def test_concurrent_duplicates_and_conflicting_opens_across_processes_execute_once(
    processes: Processes,
) -> None:
    servers = [processes.start(wait=False) for _ in range(PROCESSES)]  # set-up races too
    for server in servers:
        server.wait_ready()
    now = int(time.time() * 1000)
    events = [
        open_signal(strategy, position, timestamp=now + strategy * OPENS_PER_STRATEGY + position)
        for strategy in range(STRATEGIES)
        for position in range(OPENS_PER_STRATEGY)
    ]
    # Copy c of event e goes to process (e + c) % 3: every event reaches every process.
    deliveries = [
        (index, servers[(index + copy) % PROCESSES].url)
        for index in range(len(events))
        for copy in range(COPIES)
    ]
    random.Random(5).shuffle(deliveries)

    answers = asyncio.run(deliver_all([(url, events[index]) for index, url in deliveries]))

    by_event: dict[int, set[tuple[int, bytes]]] = defaultdict(set)
    for (index, _url), answer in zip(deliveries, answers, strict=True):
        by_event[index].add((answer.status_code, answer.content))
    # Every answer to a duplicate equals the first's, status and body.
    differing = {
        index: sorted((status, body[:100]) for status, body in seen)
        for index, seen in by_event.items()
        if len(seen) != 1
    }
    assert differing == {}
    outcomes = {index: next(iter(seen)) for index, seen in by_event.items()}
    opened = [index for index, (status, _body) in outcomes.items() if status == 200]
    refused = {
        (status, json.loads(body)["type"]) for status, body in outcomes.values() if status != 200
    }
    assert refused <= {(409, "PositionAlreadyExists"), (422, "InsufficientFunds")}, refused
    assert len(opened) == AFFORDABLE  # the row lock: no two processes spend the same cash
    assert len({index // OPENS_PER_STRATEGY for index in opened}) == AFFORDABLE

    service = processes.service(servers[0])
    stored, firsts, orders, positions, cash = service.rows_many(
        ("SELECT id, answer_status FROM events", ()),
        (
            "SELECT id, strategy_external_id, provider_position_id, answer_status, answer_body"
            " FROM events WHERE duplicate_of IS NULL",
            (),
        ),
        ("SELECT event_id, status FROM orders", ()),
        ("SELECT strategy_id FROM positions WHERE status = 'open'", ()),
        ("SELECT cash FROM accounts WHERE name = 'demo-paper'", ()),
    )
    assert len(stored) == len(deliveries)
    assert all(row["answer_status"] is not None for row in stored)  # each with its outcome
    assert len(firsts) == len(events)  # one first delivery per event key
    for row in firsts:  # the stored answer is the one every copy got
        strategy, position = (int(part) for part in row["provider_position_id"].split("-")[1:])
        status, body = outcomes[strategy * OPENS_PER_STRATEGY + position]
        assert (row["answer_status"], row["answer_body"].encode()) == (status, body)
    assert len(orders) == len({row["event_id"] for row in orders}) == AFFORDABLE
    assert {row["status"] for row in orders} == {"filled"}
    assert len(positions) == len({row["strategy_id"] for row in positions}) == AFFORDABLE
    assert Decimal(cash[0]["cash"]) >= 0  # buys only: no margin to go below zero with
    check_invariants(service)


@POSTGRESQL
def test_another_process_leaves_a_live_ones_running_delivery_and_intent_alone(
    processes: Processes, database_url: str
) -> None:
    """A delivery held up after its intent (the test locks the fills table) stays the live
    process's own through another process's start-up and background passes; released, it
    completes once."""
    quick = {"reconcile_interval_seconds": "0.2"}
    service = processes.service(processes.start(**quick))
    body = open_signal(0, 0, timestamp=int(time.time() * 1000))
    locked, release = threading.Event(), threading.Event()
    answers: list[httpx.Response] = []

    async def hold_the_fills_table() -> None:
        connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        try:
            async with connection.transaction():
                await connection.execute("LOCK TABLE fills IN SHARE MODE")
                locked.set()
                await asyncio.to_thread(release.wait, SECONDS)
        finally:
            await connection.close()

    holder = threading.Thread(target=asyncio.run, args=(hold_the_fills_table(),))
    delivering = threading.Thread(target=lambda: answers.append(service.post(body)))
    holder.start()
    try:
        assert locked.wait(SECONDS)
        delivering.start()
        poll("the intent is persisted", lambda: service.rows("SELECT id FROM orders") != [])

        other = processes.start(**quick)  # its start-up reconciliation, then its passes
        time.sleep(1.0)  # five background passes of each process

        assert other.process.poll() is None
        assert [row["state"] for row in service.rows("SELECT state FROM events")] == ["pending"]
        assert [row["status"] for row in service.rows("SELECT status FROM orders")] == ["pending"]
    finally:
        release.set()
        holder.join(SECONDS)
    delivering.join(SECONDS)

    assert [answer.status_code for answer in answers] == [200]
    assert [row["status"] for row in service.rows("SELECT status FROM orders")] == ["filled"]
    assert [row["state"] for row in service.rows("SELECT state FROM events")] == ["done"]
    check_invariants(service)


@POSTGRESQL
def test_a_process_that_loses_its_liveness_lock_stops(
    processes: Processes, database_url: str
) -> None:
    """Others now treat it as gone and take its work over, so it must not go on."""
    server = processes.start(reconcile_interval_seconds="0.2")

    async def cut_its_lock_connection() -> int:
        connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        try:
            return int(
                await connection.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND classid = $1 AND objsubid = 2"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())",
                    LOCK_CLASS,
                )
            )
        finally:
            await connection.close()

    assert asyncio.run(cut_its_lock_connection()) == 1
    # It stops as an operator's SIGTERM stops it: gracefully, then exiting by the signal.
    assert server.process.wait(timeout=15) == -SIGTERM
    assert "lost its liveness lock" in server.log.read_text()


@pytest.mark.parametrize("empty_database_url", ["postgresql"], indirect=True)
def test_serve_workers_runs_several_processes_that_answer(
    empty_database_url: str, tmp_path: Path
) -> None:
    """On an empty database: the workers start together, and one builds the schema while
    the other waits its turn."""
    processes = Processes(empty_database_url, tmp_path)
    try:
        _serve_two_workers(processes)
    finally:
        processes.stop_all()


def _serve_two_workers(processes: Processes) -> None:
    server = processes.start(arguments=("--workers", "2"))
    service = processes.service(server)
    poll("both workers register", lambda: len(service.rows("SELECT pid FROM workers")) == 2)

    answer = service.post(open_signal(0, 0, timestamp=int(time.time() * 1000)))

    assert answer.status_code == 200, answer.text
    assert len({row["pid"] for row in service.rows("SELECT pid FROM workers")}) == 2
    check_invariants(service)
    assert server.stop() == 0


def test_serve_workers_refuses_sqlite_and_says_why(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "--config", str(CONFIG), "serve", "--workers", "2"],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("SIGNALBRIDGE_")},
            "SIGNALBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/db.sqlite",
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "--workers needs PostgreSQL" in result.stderr
    assert "one process" in result.stderr
    assert not (tmp_path / "db.sqlite").exists()  # refused before anything was made
