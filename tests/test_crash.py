"""Crash faults: the real service killed (SIGKILL) at each step of the write path.

A server process runs with ``SIGNALBRIDGE_CRASH_AT=<step>`` and kills itself the first time
a delivery reaches that step; the client sees its connection drop. Then a server without the
setting starts on the same database (or, with several processes on PostgreSQL, the others
carry on) and reconciles; the invariants hold, no delivery is left without an answer, and
the provider's redelivery of the event answers as if nothing had happened: 200, one filled
order, the same cash as an uninterrupted run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Service, check_invariants, dumps, envelope, signal
from tests.fake_exchange import FakeExchange, FakeExchangeServer
from tests.processes import Processes, ServerProcess, poll
from tests.test_live import live_overrides

STEPS = ["stored", "intent", "accepted", "recorded"]
CLOSING_STEPS = {"intent", "accepted"}  # where a close differs from an open: the claim
STRATEGY = {"id": "crash-test", "name": "Crash test"}
QUANTITY = Decimal("0.01")
NOTIONAL = QUANTITY * Decimal("65000.00")  # BTCUSDT's paper price
FEE = NOTIONAL * Decimal("0.0001")  # the demo account's fee_bps = 1
DEPOSIT = Decimal(100000)
# The orders of the event after the redelivery. A paper broker's book is in memory: what a
# killed process had sent is gone with it, so reconciliation rejects the intent, and the
# redelivery sends a second attempt. A filled leg that was recorded is not sent again.
ORDERS_AFTER = {
    "stored": ["filled"],
    "intent": ["rejected", "filled"],
    "accepted": ["rejected", "filled"],
    "recorded": ["filled"],
}


@pytest.fixture
def processes(database_url: str, tmp_path: Path) -> Iterator[Processes]:
    started = Processes(database_url, tmp_path)
    yield started
    started.stop_all()


def delivery(event_type: str) -> bytes:
    """One event's body, sent again byte for byte when it is redelivered."""
    data = signal(ticker="BTCUSDT", quantity=QUANTITY, strategy=STRATEGY, position_id="p-1")
    return dumps(envelope(event_type, data, timestamp=int(time.time() * 1000))).encode()


def crash(server: ServerProcess, body: bytes) -> None:
    """Deliver ``body``; the connection drops and the process dies by SIGKILL."""
    service = server.service()
    try:
        with pytest.raises(httpx.TransportError):
            service.post(body)
    finally:
        service.client.close()
    server.wait_killed()


def first_delivery(service: Service, event_type: str) -> Any:
    [event] = service.rows(
        "SELECT id, state, answer_status, error_type FROM events"
        " WHERE duplicate_of IS NULL AND event_type = ?",
        event_type,
    )
    return event


def order_statuses(service: Service, event_id: int) -> list[str]:
    rows = service.rows("SELECT status FROM orders WHERE event_id = ? ORDER BY id", event_id)
    return [row["status"] for row in rows]


def balance(service: Service) -> Decimal:
    return Decimal(service.api("/api/accounts/demo-paper/book")["balance"])


def recover(processes: Processes, body: bytes, event_type: str, *, step: str) -> Service:
    """Restart without the crash; check what start-up reconciliation left; redeliver."""
    service = processes.service(processes.start())
    event = first_delivery(service, event_type)
    if step == "recorded":
        # The signal's fill, its last write, stored its answer with it.
        assert (event["state"], event["answer_status"], event["error_type"]) == ("done", 200, None)
    else:
        # Answered for the record (503, interrupted), and retryable: nothing left pending.
        assert (event["state"], event["answer_status"]) == ("retryable", 503)
        assert event["error_type"] == "interrupted"
    check_invariants(service)

    again = service.post(body)

    assert (again.status_code, again.content) == (200, b""), again.text
    assert order_statuses(service, event["id"]) == ORDERS_AFTER[step]
    assert first_delivery(service, event_type)["state"] == "done"
    check_invariants(service)
    return service


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_each_step_loses_nothing_and_doubles_nothing(
    processes: Processes, step: str
) -> None:
    opening = delivery("SIGNAL_OPEN")
    crash(processes.start(crash_at=step), opening)

    service = recover(processes, opening, "SIGNAL_OPEN", step=step)

    [position] = service.api("/api/positions", status="open")["positions"]
    assert Decimal(position["quantity"]) == QUANTITY
    assert balance(service) == DEPOSIT - NOTIONAL - FEE  # as if it had never crashed
    if step not in CLOSING_STEPS:
        return

    # The close's intent claims the position (closing); reconciliation gives it back (open)
    # when the order never filled, and the redelivery closes it, once.
    processes.stop_all()
    closing = delivery("SIGNAL_CLOSE")
    crash(processes.start(crash_at=step), closing)

    service = recover(processes, closing, "SIGNAL_CLOSE", step=step)

    assert service.api("/api/positions", status="open")["positions"] == []
    assert balance(service) == DEPOSIT - 2 * FEE  # bought and sold at one price: the fees


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_crash_after_a_live_exchange_accepted_the_order_finds_it_and_sends_nothing_again(
    processes: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a real venue the order outlives the process: reconciliation finds it by its client
    order id, and the redelivery does not send it again. (The venue, not the database, is
    what differs from the paper cases: one database is enough.)"""
    with FakeExchangeServer(FakeExchange(api_key="live-key")) as exchange:
        live = _live_settings(exchange.url)
        monkeypatch.setenv("TEST_EXCHANGE_KEY", "live-key")
        monkeypatch.setenv("TEST_EXCHANGE_SECRET", "live-secret")
        opening = delivery("SIGNAL_OPEN")
        crash(processes.start(crash_at="accepted", **live), opening)
        assert len(exchange.fake.orders) == 1

        service = processes.service(processes.start(**live))

        event = first_delivery(service, "SIGNAL_OPEN")
        assert event["state"] == "retryable"
        assert order_statuses(service, event["id"]) == ["filled"]  # found at the exchange
        again = service.post(opening)
        assert (again.status_code, again.content) == (200, b""), again.text
        assert order_statuses(service, event["id"]) == ["filled"]
        assert len(exchange.fake.orders) == 1
        check_invariants(service, account="live")


def _live_settings(url: str) -> dict[str, str]:
    """test_live's ccxt account at the fake exchange, as environment overrides."""
    overrides = live_overrides(url)
    return {key: dumps(overrides[key]) for key in ("accounts", "integrations", "instruments")}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_other_processes_take_over_a_crashed_ones_delivery_without_a_restart(
    processes: Processes,
) -> None:
    """Three processes on one PostgreSQL database; one dies holding a delivery. The
    survivors' background pass makes it retryable and settles its intent; redelivered to a
    survivor, it executes once."""
    quick = {"reconcile_interval_seconds": "0.2"}
    crashing = processes.start(crash_at="intent", wait=False, **quick)
    survivors = [processes.start(wait=False, **quick) for _ in range(2)]
    for server in [crashing, *survivors]:
        server.wait_ready()
    opening = delivery("SIGNAL_OPEN")

    crash(crashing, opening)

    service = processes.service(survivors[0])
    poll(
        "the survivors mark the dead process's delivery retryable",
        lambda: first_delivery(service, "SIGNAL_OPEN")["state"] == "retryable",
    )
    event = first_delivery(service, "SIGNAL_OPEN")
    poll(
        "the survivors settle the dead process's intent",
        lambda: order_statuses(service, event["id"]) == ["rejected"],
    )
    again = processes.service(survivors[1]).post(opening)
    assert (again.status_code, again.content) == (200, b""), again.text
    assert order_statuses(service, event["id"]) == ["rejected", "filled"]
    assert all(server.process.poll() is None for server in survivors)  # never restarted
    check_invariants(service)
    assert balance(service) == DEPOSIT - NOTIONAL - FEE
