"""Each event executes at most once: duplicates, concurrency, broker outages, restarts."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest

from app.broker import OrderReport, OrderRequest
from app.errors import BrokerUnavailable
from app.instruments import instruments_by_ticker
from app.paper import PaperBroker
from app.settings import load_settings
from tests.conftest import CONFIG, Service, ServiceFactory, check_invariants, envelope, signal


def test_a_repeated_delivery_gets_the_stored_answer_and_executes_nothing(
    service: Service,
) -> None:
    body = envelope("SIGNAL_OPEN", signal(), timestamp=service.clock.milliseconds())
    first, second = service.post(body), service.post(body)
    assert (first.status_code, second.status_code) == (200, 200)
    assert len(service.rows("SELECT * FROM orders")) == 1
    states = [row["state"] for row in service.rows("SELECT state FROM events ORDER BY id")]
    assert states == ["done", "duplicate"]


def test_a_repeated_failure_gets_the_same_typed_answer(service: Service) -> None:
    body = envelope("SIGNAL_CLOSE", signal(), timestamp=service.clock.milliseconds())
    first, second = service.post(body), service.post(body)
    assert first.status_code == second.status_code == 404
    assert second.headers["x-proquant-error"] == "1"
    assert first.json() == second.json()


def test_twenty_concurrent_duplicates_execute_once(service: Service) -> None:
    body = envelope("SIGNAL_OPEN", signal(), timestamp=service.clock.milliseconds())
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: service.post(body), range(20)))
    assert [answer.status_code for answer in answers] == [200] * 20
    assert len(service.rows("SELECT * FROM orders")) == 1
    assert len(service.rows("SELECT * FROM events")) == 20
    assert len(service.rows("SELECT * FROM events WHERE state = 'duplicate'")) == 19
    check_invariants(service)


def assert_one_succeeds(
    service: Service, bodies: list[dict[str, Any]], *, refused: tuple[int, str]
) -> None:
    """Send ``bodies`` all at once: one is answered 200, every other the typed refusal."""
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        answers = list(pool.map(service.post, bodies))
    status, error_type = refused
    assert sorted(answer.status_code for answer in answers) == [200] + [status] * (len(bodies) - 1)
    assert all(
        answer.json()["type"] == error_type for answer in answers if answer.status_code != 200
    )


def test_twenty_concurrent_opens_for_one_strategy_give_one_position(service: Service) -> None:
    now = service.clock.milliseconds()
    bodies = [
        envelope("SIGNAL_OPEN", signal(position_id=f"p{n}", quantity=1), timestamp=now + n)
        for n in range(20)
    ]
    assert_one_succeeds(service, bodies, refused=(409, "PositionAlreadyExists"))
    assert len(service.rows("SELECT * FROM positions")) == 1
    assert len(service.rows("SELECT * FROM orders")) == 1
    check_invariants(service)


def test_twenty_concurrent_closes_of_one_position_close_it_once(service: Service) -> None:
    """The losers wait for the winner's close, then find no position: each answers
    PositionNotFound, none is an error of the service."""
    now = service.clock.milliseconds()
    opened = service.post(envelope("SIGNAL_OPEN", signal(quantity=1), timestamp=now))
    assert opened.status_code == 200
    bodies = [
        envelope("SIGNAL_CLOSE", signal(quantity=1), timestamp=now + 1 + n) for n in range(20)
    ]
    assert_one_succeeds(service, bodies, refused=(404, "PositionNotFound"))
    assert [row["purpose"] for row in service.rows("SELECT purpose FROM orders ORDER BY id")] == [
        "open",
        "close",
    ]
    check_invariants(service, settled=True)


def test_same_key_with_another_body_is_422(service: Service) -> None:
    headers = {"Idempotency-Key": "delivery-1"}
    now = service.clock.milliseconds()
    first = service.post(envelope("SIGNAL_OPEN", signal(), timestamp=now), headers=headers)
    other = service.post(
        envelope("SIGNAL_OPEN", signal(quantity=2), timestamp=now + 1), headers=headers
    )
    assert first.status_code == 200
    assert other.status_code == 422
    assert other.json()["error"] == "idempotency_conflict"
    assert "x-proquant-error" not in other.headers
    assert len(service.rows("SELECT * FROM orders")) == 1


def test_an_idempotency_header_is_the_key(service: Service) -> None:
    now = service.clock.milliseconds()
    body = envelope("SIGNAL_OPEN", signal(), timestamp=now)
    service.post(body, headers={"webhook-id": "a"})
    second = service.post(body, headers={"webhook-id": "b"})
    # Another key: a new event, refused by the rules rather than deduplicated.
    assert second.status_code == 409


class UnreachableBroker(PaperBroker):
    """The paper broker behind a link that is down until ``up`` is set."""

    up = False
    placed_while_down = False

    async def submit(self, order: OrderRequest) -> OrderReport:
        if not self.up:
            if self.placed_while_down:
                await super().submit(order)  # the order got through; the answer did not
            raise BrokerUnavailable("connection refused")
        return await super().submit(order)

    async def fetch_order(self, client_order_id: str, *, symbol: str) -> OrderReport | None:
        if not self.up and not self.placed_while_down:
            raise BrokerUnavailable("connection refused")
        return await super().fetch_order(client_order_id, symbol=symbol)


def unreachable() -> dict[str, UnreachableBroker]:
    instruments = instruments_by_ticker(load_settings(CONFIG).instruments)
    return {"demo-paper": UnreachableBroker(instruments, currency="USD", cash=Decimal(100000))}


def test_broker_unreachable_is_503_and_a_redelivery_executes_once(
    start_service: ServiceFactory,
) -> None:
    brokers = unreachable()
    service = start_service(brokers=brokers)
    body = envelope("SIGNAL_OPEN", signal(), timestamp=service.clock.milliseconds())

    down = service.post(body)

    assert down.status_code == 503
    assert "x-proquant-error" not in down.headers
    assert down.json()["error"] == "broker_unavailable"
    [order] = service.rows("SELECT status FROM orders")
    assert order["status"] == "pending"  # outcome unknown: kept for reconciliation
    brokers["demo-paper"].up = True

    again = service.post(body)

    assert again.status_code == 200
    rows = service.rows("SELECT status, client_order_id FROM orders ORDER BY id")
    assert [row["status"] for row in rows] == ["rejected", "filled"]
    assert rows[0]["client_order_id"] != rows[1]["client_order_id"]
    assert len(service.api("/api/positions", status="open")["positions"]) == 1
    check_invariants(service)


def test_an_order_placed_despite_a_lost_answer_is_found_not_resent(
    start_service: ServiceFactory,
) -> None:
    brokers = unreachable()
    brokers["demo-paper"].placed_while_down = True
    service = start_service(brokers=brokers)

    response = service.send("SIGNAL_OPEN", signal())

    assert response.status_code == 200
    [order] = service.rows("SELECT status FROM orders")
    assert order["status"] == "filled"
    assert len(service.rows("SELECT * FROM fills")) == 1
    check_invariants(service)


def test_restart_reconciles_a_pending_intent_before_serving(
    start_service: ServiceFactory,
) -> None:
    brokers = unreachable()
    service = start_service(brokers=brokers)
    body = envelope("SIGNAL_OPEN", signal(), timestamp=service.clock.milliseconds())
    assert service.post(body).status_code == 503

    # A restart with a broker that is up and never saw the order.
    restarted = start_service(clock=service.clock)

    [order] = restarted.rows("SELECT status, reason FROM orders")
    assert order["status"] == "rejected"
    assert restarted.rows("SELECT * FROM positions") == []
    assert restarted.post(body).status_code == 200
    assert len(restarted.api("/api/positions", status="open")["positions"]) == 1
    check_invariants(restarted)


def test_an_event_left_running_by_a_crash_is_retryable_after_restart(
    start_service: ServiceFactory,
) -> None:
    service = start_service()
    body = envelope("SIGNAL_OPEN", signal(), timestamp=service.clock.milliseconds())
    assert service.post(body).status_code == 200
    # What a crash between the fill and the answer leaves: the event still pending.
    service.rows("UPDATE events SET state = 'pending', answer_status = NULL")

    restarted = start_service(clock=service.clock)

    [event] = restarted.rows("SELECT state FROM events")
    assert event["state"] == "retryable"
    again = restarted.post(body)
    assert again.status_code == 200  # resumed: the open leg had filled, nothing is re-sent
    assert len(restarted.rows("SELECT * FROM orders")) == 1
    check_invariants(restarted)


class BuggyBroker(PaperBroker):
    """A paper broker with a bug: its first submit raises an unexpected error, before the
    order went through or, with ``after_placing``, after."""

    after_placing = False
    raised = False

    async def submit(self, order: OrderRequest) -> OrderReport:
        if not self.raised:
            self.raised = True
            if self.after_placing:
                await super().submit(order)
            raise RuntimeError("a bug")
        return await super().submit(order)


@pytest.mark.parametrize("after_placing", [False, True])
def test_an_unexpected_error_is_500_and_a_redelivery_executes_once(
    start_service: ServiceFactory, after_placing: bool
) -> None:
    """A bug mid-event leaves it retryable, not pending until the process stops: the
    redelivery settles what the broker did, then finishes the event once."""
    instruments = instruments_by_ticker(load_settings(CONFIG).instruments)
    broker = BuggyBroker(instruments, currency="USD", cash=Decimal(100000))
    broker.after_placing = after_placing
    service = start_service(brokers={"demo-paper": broker})
    body = envelope("SIGNAL_OPEN", signal(), timestamp=service.clock.milliseconds())

    first = service.post(body)

    assert first.status_code == 500
    assert first.json()["error"] == "internal_error"
    assert [row["state"] for row in service.rows("SELECT state FROM events")] == ["retryable"]

    again = service.post(body)

    assert again.status_code == 200
    statuses = [row["status"] for row in service.rows("SELECT status FROM orders ORDER BY id")]
    assert statuses == (["filled"] if after_placing else ["rejected", "filled"])
    assert len(service.api("/api/positions", status="open")["positions"]) == 1
    check_invariants(service)


def test_a_paper_broker_on_fetched_prices_is_bounded_by_the_broker_timeout(
    start_service: ServiceFactory,
) -> None:
    """Only a broker that answers from memory goes without a timeout: a paper account whose
    prices come from an exchange (forward testing) waits at most ``broker_timeout_seconds``
    for a quote, answers 503, and opens nothing."""

    async def hanging(_symbol: str) -> Decimal:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    instruments = instruments_by_ticker(load_settings(CONFIG).instruments)
    broker = PaperBroker(instruments, currency="USD", cash=Decimal(100000), quotes=hanging)
    assert not broker.is_local
    service = start_service(brokers={"demo-paper": broker}, broker_timeout_seconds=0.2)

    response = service.send("SIGNAL_OPEN", signal())

    assert response.status_code == 503, response.text
    assert response.json()["error"] == "broker_unavailable"
    assert service.rows("SELECT id FROM orders") == []
    assert PaperBroker(instruments, currency="USD", cash=Decimal(1)).is_local


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_lone_deliveries_commit_on_the_loop_and_concurrent_ones_in_the_commit_thread(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver counts the deliveries in flight, and counts each one out again however
    it ends (a refused one too): one after another, every COMMIT runs on the event loop's
    thread and the commit thread is never started; twenty at once start it."""
    import app.batch  # the server runs in this process: its thread reads this module

    monkeypatch.setattr(app.batch, "INLINE_COMMIT_SECONDS", 60.0)  # a fast disk

    def commit_threads() -> int:
        return sum(thread.name.startswith("sqlite-commit") for thread in threading.enumerate())

    assert commit_threads() == 0
    opened = service.send("SIGNAL_OPEN", signal())
    refused = service.send("SIGNAL_CLOSE", signal(strategy={"id": "none", "name": "None"}))
    closed = service.send("SIGNAL_CLOSE", signal())
    assert [opened.status_code, refused.status_code, closed.status_code] == [200, 404, 200]
    assert commit_threads() == 0
    now = service.clock.milliseconds()
    bodies = [
        envelope(
            "SIGNAL_OPEN",
            signal(quantity=1, strategy={"id": f"s{n}", "name": "S"}),
            timestamp=now + n,
        )
        for n in range(20)
    ]
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(service.post, bodies))
    assert [answer.status_code for answer in answers] == [200] * 20
    assert commit_threads() == 1
    check_invariants(service)
