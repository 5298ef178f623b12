"""The operator's levers on strategies, through a real server."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.conftest import OPERATOR_KEY, STRATEGY, Service, check_invariants, signal

WRITE = {"x-api-key": OPERATOR_KEY}


def strategy(service: Service) -> dict[str, Any]:
    [found] = service.api("/api/strategies")["strategies"]
    return dict(found)


def test_strategies_list_their_switches_rules_and_position(service: Service) -> None:
    service.send("SIGNAL_OPEN", signal())
    found = strategy(service)
    assert found["external_id"] == STRATEGY["id"]
    assert found["integration"] == "demo-proquant"
    assert (found["enabled"], found["paused"]) == (True, False)
    assert found["position_id"] is not None
    assert found["quantity_multiplier"] is None  # the config's rules apply


def test_a_paused_strategy_stores_signals_and_answers_409_without_the_typed_header(
    service: Service,
) -> None:
    service.send("STRATEGY_ENABLED", STRATEGY)
    paused = service.client.post(f"/api/strategies/{strategy(service)['id']}/pause", headers=WRITE)
    assert paused.json()["paused"] is True

    response = service.send("SIGNAL_OPEN", signal())

    assert response.status_code == 409
    assert "x-proquant-error" not in response.headers
    assert response.json()["error"] == "strategy_paused"
    assert service.rows("SELECT id FROM orders") == []
    [event] = service.api("/api/events", type="SIGNAL_OPEN")["events"]
    assert (event["state"], event["error_type"]) == ("failed", "strategy_paused")
    service.client.post(f"/api/strategies/{strategy(service)['id']}/resume", headers=WRITE)
    assert service.send("SIGNAL_OPEN", signal(position_id="after")).status_code == 200


def test_the_operators_sizing_rules_override_the_configs(service: Service) -> None:
    service.send("STRATEGY_ENABLED", STRATEGY)
    path = f"/api/strategies/{strategy(service)['id']}"
    edited = service.client.patch(
        path, content=b'{"quantity_multiplier": 0.5, "max_order_quantity": "20"}', headers=WRITE
    )
    assert edited.status_code == 200
    assert (edited.json()["quantity_multiplier"], edited.json()["max_order_quantity"]) == (
        "0.5",
        "20",
    )
    assert service.send("SIGNAL_OPEN", signal(quantity=10)).status_code == 200
    [position] = service.api("/api/positions")["positions"]
    assert Decimal(position["quantity"]) == 5
    refused = service.client.patch(path, content=b'{"allocation_percent": 101}', headers=WRITE)
    assert refused.status_code == 400
    assert "allocation_percent" in refused.json()["message"]
    unknown = service.client.patch(path, content=b'{"leverage": 5}', headers=WRITE)
    assert unknown.status_code == 400


def test_closing_by_hand_trades_through_the_broker_and_the_ledger_once(service: Service) -> None:
    service.send("SIGNAL_OPEN", signal())
    path = f"/api/strategies/{strategy(service)['id']}/close"
    headers = {**WRITE, "idempotency-key": "close-1"}

    first = service.client.post(path, headers=headers)
    again = service.client.post(path, headers=headers)

    assert first.json() == {"strategy": strategy(service)["id"], "status": 200, "answer": None}
    assert again.json() == first.json()
    assert service.api("/api/positions", status="open")["positions"] == []
    orders = service.api("/api/orders")["orders"]
    assert [order["side"] for order in orders] == ["buy", "sell"]
    [event] = service.api("/api/events", type="OPERATOR_CLOSE", state="done")["events"]
    assert event["note"] == "closed by the operator"
    assert event["strategy_id"] == STRATEGY["id"]
    nothing = service.client.post(path, headers=WRITE)
    assert nothing.status_code == 404
    assert nothing.json()["answer"]["type"] == "PositionNotFound"
    check_invariants(service)


def test_retiring_pauses_and_closes(service: Service) -> None:
    service.send("SIGNAL_OPEN", signal())
    retired = service.client.post(
        f"/api/strategies/{strategy(service)['id']}/retire", headers=WRITE
    )
    assert retired.json()["status"] == 200
    assert strategy(service)["paused"] is True
    assert service.api("/api/positions", status="open")["positions"] == []
    again = service.client.post(f"/api/strategies/{strategy(service)['id']}/retire", headers=WRITE)
    assert again.json()["status"] == 200  # nothing left to close: still retired


def test_unknown_strategy_is_404(service: Service) -> None:
    for method, path in [
        ("POST", "/api/strategies/99/pause"),
        ("POST", "/api/strategies/99/close"),
    ]:
        response = service.client.request(method, path, headers=WRITE)
        assert response.status_code == 404
