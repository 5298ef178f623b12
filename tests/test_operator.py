"""Operator endpoints beyond the basics: scopes, event detail and replay, live streams."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.conftest import OPERATOR_KEY, Service, ServiceFactory, envelope, signal
from tests.test_exactly_once import unreachable

READ_KEY = "read-only-key"
KEYS = [
    {"name": "demo", "key": OPERATOR_KEY, "scope": "write"},
    {"name": "reader", "key": READ_KEY},
]


def test_a_read_key_reads_but_may_not_act(start_service: ServiceFactory) -> None:
    service = start_service(operator_keys=KEYS)
    service.send("SIGNAL_OPEN", signal())
    read = {"x-api-key": READ_KEY}
    assert service.client.get("/api/events", headers=read).status_code == 200
    refused = service.client.post("/api/events/1/replay", headers=read)
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    assert service.client.post("/api/events/1/replay").status_code == 401


def test_event_detail_shows_the_raw_body_and_the_answer(service: Service) -> None:
    service.send("SIGNAL_OPEN", signal(ticker="NOPE"))
    [listed] = service.api("/api/events")["events"]
    detail = service.api(f"/api/events/{listed['id']}")
    assert json.loads(detail["raw_body"])["v1"]["event"]["data"]["ticker"] == "NOPE"
    assert detail["error_type"] == "UnsupportedInstrument"
    assert detail["answer_status"] == 422
    response = service.client.get("/api/events/999", headers={"x-api-key": OPERATOR_KEY})
    assert response.status_code == 404


def test_events_filter_by_strategy_and_time(service: Service) -> None:
    service.send("SIGNAL_OPEN", signal())
    service.send("SIGNAL_OPEN", signal(strategy={"id": "other", "name": "O"}))
    [other] = service.api("/api/events", strategy="other")["events"]
    assert other["strategy_id"] == "other"
    assert service.api("/api/events", since="2030-01-01T00:00:00+00:00")["events"] == []
    assert len(service.api("/api/events", until="2030-01-01T00:00:00+00:00")["events"]) == 2
    bad = service.client.get(
        "/api/events", params={"since": "yesterday"}, headers={"x-api-key": OPERATOR_KEY}
    )
    assert bad.status_code == 400


def test_orders_and_ledger_lists(service: Service) -> None:
    service.send("SIGNAL_OPEN", signal())
    [order] = service.api("/api/orders")["orders"]
    assert order["status"] == "filled"
    assert [Decimal(fill["quantity"]) for fill in order["fills"]] == [Decimal(10)]
    deposit, trade = service.api("/api/accounts/demo-paper/ledger")["ledger"]
    assert deposit["kind"] == "deposit"
    assert trade["kind"] == "trade"
    assert sum(Decimal(p["amount"]) for p in trade["postings"]) == 0


def test_replay_reruns_a_503_once_and_refuses_a_done_event(start_service: ServiceFactory) -> None:
    brokers = unreachable()
    service = start_service(brokers=brokers)
    body = envelope("SIGNAL_OPEN", signal(), timestamp=service.clock.milliseconds())
    assert service.post(body).status_code == 503
    brokers["demo-paper"].up = True
    [event] = service.api("/api/events")["events"]
    write = {"x-api-key": OPERATOR_KEY}

    replayed = service.client.post(f"/api/events/{event['id']}/replay", headers=write)

    assert replayed.status_code == 200
    assert replayed.json() == {"event": event["id"], "status": 200, "answer": None}
    assert len(service.api("/api/positions", status="open")["positions"]) == 1
    again = service.client.post(f"/api/events/{event['id']}/replay", headers=write)
    assert again.status_code == 409
    assert service.post(body).status_code == 200  # the provider's redelivery: stored answer
    assert len(service.api("/api/orders")["orders"]) == 2  # the rejected attempt and the fill


def test_replaying_an_unsupported_version_answers_as_it_would_now(service: Service) -> None:
    service.post({"v7": {"deprecation": None, "event": {}}})
    [event] = service.api("/api/events")["events"]
    replayed = service.client.post(
        f"/api/events/{event['id']}/replay", headers={"x-api-key": OPERATOR_KEY}
    )
    assert replayed.json()["status"] == 400
    assert replayed.json()["answer"]["error"] == "unsupported_version"


def read_stream(lines: Iterator[str], count: int) -> list[dict[str, Any]]:
    """The next ``count`` events of an SSE stream's lines (id, event, data)."""
    found: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in lines:
        if line.startswith(("id:", "event:", "data:")):
            field, _, value = line.partition(":")
            current[field] = value.strip()
        elif not line and "data" in current:
            current["data"] = json.loads(current["data"])
            found.append(current)
            current = {}
            if len(found) == count:
                return found
    raise AssertionError(f"the stream ended after {len(found)} events")


@pytest.fixture
def stream_client(service: Service) -> Iterator[httpx.Client]:
    headers = {"x-api-key": OPERATOR_KEY, "accept": "text/event-stream"}
    with httpx.Client(base_url=service.url, headers=headers, timeout=10) as client:
        yield client


def test_event_stream_resumes_without_gap_or_duplicate(
    service: Service, stream_client: httpx.Client
) -> None:
    with stream_client.stream("GET", "/api/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        service.send("SIGNAL_OPEN", signal())
        [first] = read_stream(response.iter_lines(), 1)
    assert first["event"] == "events"
    assert first["data"]["type"] == "SIGNAL_OPEN"
    # Dropped: two deliveries arrive while nobody listens.
    service.send("SIGNAL_CLOSE", signal())
    service.send("SOMETHING_ELSE")
    resume = {"last-event-id": first["id"]}
    with stream_client.stream("GET", "/api/events", headers=resume) as response:
        lines = response.iter_lines()
        missed = read_stream(lines, 2)
        service.send("SIGNAL_OPEN", signal(position_id="later"))
        [live] = read_stream(lines, 1)
    ids = [int(item["id"]) for item in [first, *missed, live]]
    assert ids == sorted(set(ids))
    assert [item["data"]["type"] for item in missed] == ["SIGNAL_CLOSE", "SOMETHING_ELSE"]
    assert live["data"]["type"] == "SIGNAL_OPEN"


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/api/orders", "orders"),
        ("/api/positions", "positions"),
        ("/api/accounts/demo-paper/ledger", "ledger"),
    ],
)
def test_orders_positions_and_ledger_stream_new_items(
    service: Service, stream_client: httpx.Client, path: str, kind: str
) -> None:
    with stream_client.stream("GET", path, params={"last_event_id": "0"}) as response:
        service.send("SIGNAL_OPEN", signal())
        items = read_stream(response.iter_lines(), 2 if kind == "ledger" else 1)
    assert {item["event"] for item in items} == {kind}
    assert int(items[-1]["id"]) >= 1


def test_an_idle_stream_sends_heartbeats(start_service: ServiceFactory) -> None:
    service = start_service(stream_heartbeat_seconds=0.3)
    headers = {"x-api-key": OPERATOR_KEY, "accept": "text/event-stream"}
    heartbeats = 0
    with (
        httpx.Client(base_url=service.url, headers=headers, timeout=10) as client,
        client.stream("GET", "/api/events") as response,
    ):
        for line in response.iter_lines():
            heartbeats += line == ": heartbeat"
            if heartbeats == 2:
                break
    assert heartbeats == 2
