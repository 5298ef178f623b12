"""Probes, metrics and structured logs."""

from __future__ import annotations

import json
import logging

import pytest

from app.logs import JSONFormatter
from tests.conftest import OPERATOR_KEY, Service, ServiceFactory, signal
from tests.test_live import live_overrides


def test_health_and_readiness_need_no_key(service: Service) -> None:
    assert service.client.get("/healthz").json() == {"status": "ok"}
    ready = service.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"database": "ok", "accounts": {"demo-paper": "ready"}}


def test_an_account_not_reconciled_makes_the_service_not_ready(
    start_service: ServiceFactory,
) -> None:
    service = start_service(brokers="app", **live_overrides("http://127.0.0.1:9"))
    ready = service.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["accounts"] == {"live": "reconciling"}


def test_metrics_count_deliveries_latency_errors_and_open_positions(service: Service) -> None:
    assert service.client.get("/metrics").status_code == 401
    service.send("SIGNAL_OPEN", signal())
    service.send("SIGNAL_OPEN", signal(position_id="again"))
    service.post(b"{")
    text = service.client.get("/metrics", headers={"x-api-key": OPERATOR_KEY}).text
    assert 'signalbridge_deliveries_total{outcome="ok",type="SIGNAL_OPEN"} 1.0' in text
    assert (
        'signalbridge_deliveries_total{outcome="PositionAlreadyExists",type="SIGNAL_OPEN"} 1.0'
        in text
    )
    assert 'signalbridge_deliveries_total{outcome="malformed_body",type="unparsed"} 1.0' in text
    assert "signalbridge_answer_seconds_count 3.0" in text
    assert "signalbridge_open_positions 1.0" in text


def test_unknown_event_types_share_one_metric_label(service: Service) -> None:
    for name in ("NEW_A", "NEW_B"):
        service.send(name)
    text = service.client.get("/metrics", headers={"x-api-key": OPERATOR_KEY}).text
    assert 'signalbridge_deliveries_total{outcome="ok",type="other"} 2.0' in text


def test_log_lines_about_an_event_carry_its_dedupe_key_as_json(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="app.receiver"):
        service.send("SIGNAL_OPEN", signal())
    [record] = [r for r in caplog.records if hasattr(r, "dedupe_key")]
    line = json.loads(JSONFormatter().format(record))
    key_parts = "|SIGNAL_OPEN|6bbc583bf6d70605bbbc892f66367ab7|960fe1a63d264d0f4e19a0ebf385497e|"
    assert key_parts in line["dedupe_key"]
    assert line["level"] == "INFO"
    assert set(line["timings"]) >= {"receive_ms", "broker_ms"}
    assert "demo-token" not in json.dumps(line)
