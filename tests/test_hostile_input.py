"""Inputs the schemathesis run found answering 500 once; each must be a clear 400 now, on
both databases, with nothing executed."""

from __future__ import annotations

import json

import pytest

from tests.conftest import OPERATOR_KEY, Service, envelope, signal

WRITE = {"x-api-key": OPERATOR_KEY}


@pytest.mark.parametrize(
    "path",
    [
        "/api/events/7060483570629646375908",
        "/api/events/45614910516",  # past PostgreSQL's 32-bit integers
        "/api/events/%C2%B2",  # a superscript two: a digit to str.isdigit, not to int()
        "/api/events?state=%00",
        "/api/accounts/a%00b/book",
    ],
)
def test_out_of_range_ids_and_nul_in_urls_are_400(service: Service, path: str) -> None:
    response = service.client.get(path, headers=WRITE)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "malformed_body"


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_strategy_ids_out_of_range_are_400(service: Service, method: str) -> None:
    path = "/api/strategies/99999999999" + ("/pause" if method == "POST" else "")
    response = service.client.request(method, path, headers=WRITE, content=b"{}")
    assert response.status_code == 400


@pytest.mark.parametrize(
    "amount",
    [".209293616812981046055E+759353721689", ".199117e12512009", "1e-9999999"],
)
def test_absurd_amounts_are_400_and_post_nothing(service: Service, amount: str) -> None:
    body = f'{{"amount": {amount}}}'.encode()
    response = service.client.post("/api/accounts/demo-paper/deposits", content=body, headers=WRITE)
    assert response.status_code == 400
    assert len(service.api("/api/accounts/demo-paper/ledger")["ledger"]) == 1  # the deposit


def test_an_overlong_idempotency_key_is_400(service: Service) -> None:
    headers = {**WRITE, "idempotency-key": "k" * 250}
    for path in ("/api/accounts/demo-paper/deposits", "/api/strategies/1/close"):
        response = service.client.post(path, content=b'{"amount": 1}', headers=headers)
        assert response.status_code == 400, path


def test_nul_in_a_webhook_body_is_400_and_the_body_is_stored(service: Service) -> None:
    body = json.dumps(
        envelope(
            "SIGNAL_OPEN", signal(ticker="XAU\u0000USD"), timestamp=service.clock.milliseconds()
        )
    ).encode()
    response = service.post(body)
    assert response.status_code == 400
    assert "NUL" in response.json()["message"]
    [row] = service.rows("SELECT raw_body, answer_status FROM events")
    assert row["answer_status"] == 400
    assert bytes(row["raw_body"]) == body.replace(b"demo-token", b"[redacted]")


def test_an_overlong_deprecation_and_a_huge_timestamp_are_400(service: Service) -> None:
    long_deprecation = envelope(
        "SIGNAL_OPEN", signal(), timestamp=service.clock.milliseconds(), deprecation="x" * 65
    )
    assert service.post(long_deprecation).status_code == 400
    huge = json.dumps(envelope("SIGNAL_CLOSE", signal(), timestamp=0)).replace(
        '"timestamp": 0', '"timestamp": 1' + "0" * 400
    )
    response = service.post(huge.encode())
    assert response.status_code == 400
    assert "timestamp" in response.json()["message"]
    assert service.rows("SELECT id FROM events WHERE answer_status IS NULL") == []


def test_a_timestamp_written_as_a_string_is_400_and_executes_nothing(service: Service) -> None:
    """Found by tests/test_generated_input.py: ``"timestamp": "<now>"`` used to trade."""
    now = service.clock.milliseconds()
    body = json.dumps(envelope("SIGNAL_OPEN", signal(), timestamp=now)).replace(
        f'"timestamp": {now}', f'"timestamp": "{now}"'
    )
    response = service.post(body.encode())
    assert response.status_code == 400
    assert "v1.event.timestamp" in response.json()["message"]
    assert service.rows("SELECT id FROM orders") == []
    [event] = service.rows("SELECT answer_status FROM events")
    assert event["answer_status"] == 400
