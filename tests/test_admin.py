"""Users, accounts, money, integrations and API keys: the operator's management, through a
real server and the real CLI."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.cli import main
from tests.conftest import (
    CONFIG,
    OPERATOR_KEY,
    STRATEGY,
    Service,
    ServiceFactory,
    check_invariants,
    signal,
)
from tests.server import Server

WRITE = {"x-api-key": OPERATOR_KEY}


def post(service: Service, path: str, body: Any = None, **headers: str) -> Any:
    content = None if body is None else json.dumps(body)
    return service.client.post(path, content=content, headers={**WRITE, **headers})


def test_users_and_accounts(service: Service) -> None:
    created = post(service, "/api/users", {"email": "ada@example.com"})
    assert [u["email"] for u in created.json()["users"]] == ["demo@example.com", "ada@example.com"]
    assert post(service, "/api/users", {"email": "not an email"}).status_code == 400
    accounts = {a["name"]: a["cash"] for a in service.api("/api/accounts")["accounts"]}
    assert accounts == {"demo-paper": "100000", "sandbox-2": "0"}  # ada's sandbox


def test_deposits_and_withdrawals_post_to_the_ledger_once(service: Service) -> None:
    path = "/api/accounts/demo-paper/deposits"
    first = post(service, path, {"amount": "250.50"}, **{"idempotency-key": "d1"})
    again = post(service, path, {"amount": "250.50"}, **{"idempotency-key": "d1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert Decimal(again.json()["balance"]) == Decimal("100250.50")
    out = post(service, "/api/accounts/demo-paper/withdrawals", {"amount": 1000})
    assert Decimal(out.json()["balance"]) == Decimal("99250.50")
    too_much = post(service, "/api/accounts/demo-paper/withdrawals", {"amount": 10**6})
    assert too_much.status_code == 422
    assert too_much.json()["error"] == "insufficient_cash"
    assert post(service, path, {"amount": -5}).status_code == 400
    assert Decimal(service.api("/api/accounts/demo-paper/book")["capital"]) == Decimal("99250.50")
    check_invariants(service)


def test_a_retried_withdrawal_is_answered_as_posted_though_the_cash_is_lower_now(
    service: Service,
) -> None:
    """Found by tests/test_stateful.py: the retry used to be refused, 422 insufficient_cash."""
    path = "/api/accounts/demo-paper/withdrawals"
    first = post(service, path, {"amount": 60000}, **{"idempotency-key": "w1"})
    assert first.status_code == 201
    assert post(service, path, {"amount": 30000}, **{"idempotency-key": "w2"}).status_code == 201
    again = post(service, path, {"amount": 60000}, **{"idempotency-key": "w1"})
    assert again.status_code == 200, again.text
    assert again.json()["recorded"] is False
    assert Decimal(again.json()["balance"]) == 10000
    check_invariants(service)


def test_a_new_integration_hands_over_its_token_once_and_waits_for_approval(
    service: Service,
) -> None:
    created = post(
        service,
        "/api/integrations",
        {"name": "ada-proquant", "user": "demo@example.com", "account": "demo-paper"},
    )
    assert created.status_code == 201
    answer = created.json()
    token = answer["token"]
    assert answer["webhook"] == {
        "url": "http://127.0.0.1:8000/webhooks/proquant",
        "headers": {"x-signalbridge-token": token},
    }
    listed = {i["name"]: i for i in service.api("/api/integrations")["integrations"]}
    assert listed["ada-proquant"]["status"] == "pending"
    assert token not in json.dumps(listed)
    own = {"id": "ada-strategy", "name": "Ada"}
    pending = service.send("SIGNAL_OPEN", signal(strategy=own), token=token)
    assert pending.status_code == 401
    assert "pending" in pending.json()["message"]
    assert service.send("INTEGRATION_APPROVED", token=token).status_code == 200
    assert service.send("SIGNAL_OPEN", signal(strategy=own), token=token).status_code == 200


def test_rotation_keeps_both_tokens_until_the_old_one_is_revoked(service: Service) -> None:
    old = post(
        service,
        "/api/integrations",
        {"name": "rotating", "user": "demo@example.com", "account": "demo-paper"},
    ).json()["token"]
    service.send("INTEGRATION_APPROVED", token=old)
    new = post(service, "/api/integrations/rotating/rotate").json()["token"]
    assert post(service, "/api/integrations/rotating/rotate").status_code == 409  # two live
    assert service.send("STRATEGY_ENABLED", STRATEGY, token=old).status_code == 200
    assert service.send("STRATEGY_ENABLED", STRATEGY, token=new).status_code == 200
    assert post(service, "/api/integrations/rotating/revoke").status_code == 200
    assert service.send("STRATEGY_ENABLED", STRATEGY, token=old).status_code == 401
    assert service.send("STRATEGY_ENABLED", STRATEGY, token=new).status_code == 200
    assert post(service, "/api/integrations/rotating/revoke").status_code == 409  # last one


def test_a_token_header_of_its_own_counts_from_the_integrations_first_delivery(
    service: Service,
) -> None:
    """A delivery's token is looked up in the headers live tokens are sent in, as the
    process last read them; they are read again when no token is found, so an integration
    made since with a header of its own is found at its first delivery. Its token counts
    in that header only."""
    assert service.send("STRATEGY_ENABLED", STRATEGY).status_code == 200  # headers read
    created = post(
        service,
        "/api/integrations",
        {
            "name": "own-header",
            "user": "demo@example.com",
            "account": "demo-paper",
            "token_header": "x-provider-key",
        },
    ).json()
    token = created["token"]
    assert created["webhook"]["headers"] == {"x-provider-key": token}
    own = {"x-provider-key": token}
    assert service.send("INTEGRATION_APPROVED", token=None, headers=own).status_code == 200
    assert service.send("STRATEGY_ENABLED", STRATEGY, token=token).status_code == 401
    assert service.send("STRATEGY_ENABLED", STRATEGY, token=None, headers=own).status_code == 200
    listed = {i["name"]: i for i in service.api("/api/integrations")["integrations"]}
    assert listed["own-header"]["status"] == "approved"
    assert service.send("STRATEGY_ENABLED", STRATEGY).status_code == 200  # the demo's too


def test_integrations_from_the_config_are_managed_in_the_config(service: Service) -> None:
    refused = post(service, "/api/integrations/demo-proquant/rotate")
    assert refused.status_code == 409
    assert "config" in refused.json()["message"]


@pytest.fixture
def provider() -> Any:
    received: list[dict[str, Any]] = []

    async def integrations(request: Request) -> JSONResponse:
        received.append(await request.json())
        return JSONResponse({"id": "pq-1"}, status_code=201)

    app = Starlette(
        routes=[Route("/api/integrations/v1/integrations", integrations, methods=["POST"])]
    )
    server = Server(app, lifespan="off")
    server.start()
    yield server.url, received
    server.stop()


def test_registering_with_the_provider_sends_the_webhook_and_stays_pending(
    start_service: ServiceFactory, provider: Any
) -> None:
    url, received = provider
    service = start_service(provider_api_url=url, public_url="https://bridge.example.com")
    post(
        service,
        "/api/integrations",
        {"name": "ada", "user": "demo@example.com", "account": "demo-paper"},
    )

    answer = post(service, "/api/integrations/ada/register", {"description": "Signalbridge"})

    assert answer.json() == {"integration": "ada", "status": "pending", "provider_status": 201}
    [body] = received
    assert body["userEmail"] == body["name"] == "demo@example.com"
    assert body["webhook"]["url"] == "https://bridge.example.com/webhooks/proquant"
    [token] = body["webhook"]["headers"].values()
    assert service.send("INTEGRATION_APPROVED", token=token).status_code == 200
    listed = {i["name"]: i for i in service.api("/api/integrations")["integrations"]}
    assert listed["ada"]["status"] == "approved"


def run_cli(service: Service, *arguments: str) -> int:
    return main(["--config", str(CONFIG), *arguments, "--url", service.url])


def test_api_keys_from_the_cli_are_hashed_scoped_and_revocable(
    service: Service, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = ["--config", str(CONFIG)]
    monkeypatch.setenv("SIGNALBRIDGE_DATABASE_URL", service.settings.database_url)
    assert main([*config, "api-keys", "create", "dashboard"]) == 0
    key = capsys.readouterr().out.splitlines()[-1]
    assert key.startswith("sbk_")
    stored = service.rows("SELECT key_sha256, scope FROM api_keys")
    assert [row["scope"] for row in stored] == ["read"]
    assert key not in str([dict(row) for row in stored])
    headers = {"x-api-key": key}
    assert service.client.get("/api/events", headers=headers).status_code == 200
    assert service.client.post("/api/events/1/replay", headers=headers).status_code == 403
    assert main([*config, "api-keys", "revoke", "dashboard"]) == 0
    assert service.client.get("/api/events", headers=headers).status_code == 401


def test_operator_commands_print_tables_and_json(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    service.send("SIGNAL_OPEN", signal())
    assert run_cli(service, "strategies", "list") == 0
    assert STRATEGY["id"] in capsys.readouterr().out
    assert run_cli(service, "strategies", "close", "1") == 0
    assert json.loads(capsys.readouterr().out)["status"] == 200
    assert run_cli(service, "accounts", "create", "paper-9", "--user", "demo@example.com") == 0
    assert "paper-9" in capsys.readouterr().out
    assert run_cli(service, "deposit", "demo-paper", "10.5") == 0
    assert json.loads(capsys.readouterr().out)["recorded"] is True
    assert run_cli(service, "events", "list", "--type", "OPERATOR_CLOSE") == 0
    assert "OPERATOR_CLOSE" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="404"):
        run_cli(service, "strategies", "pause", "99")
    with pytest.raises(SystemExit, match="409"):  # a done event cannot be replayed
        run_cli(service, "events", "replay", "1")
    assert run_cli(service, "events", "show", "1") == 0
    assert json.loads(capsys.readouterr().out)["state"] == "done"


def test_a_production_account_trades_only_once_verified(start_service: ServiceFactory) -> None:
    production = {
        "name": "demo-paper",
        "user": "demo@example.com",
        "initial_deposit": "100000",
        "is_sandbox": False,
        "is_verified": False,
    }
    service = start_service(accounts=[production])
    refused = service.send("SIGNAL_OPEN", signal())
    assert refused.status_code == 401
    assert refused.json() == {
        "type": "InvalidCredentials",
        "message": "the production account demo-paper is not verified yet",
    }
    assert run_cli(service, "accounts", "verify", "demo-paper") == 0
    assert service.send("SIGNAL_OPEN", signal()).status_code == 200
    restarted = start_service(accounts=[production], clock=service.clock)
    [account] = restarted.api("/api/accounts")["accounts"]
    assert account["is_verified"] is True  # the operator's verification outlives the config's


def test_a_new_user_gets_a_sandbox_account_that_trades_at_once(
    start_service: ServiceFactory,
) -> None:
    service = start_service()
    created = post(service, "/api/users", {"email": "ada@example.com"}).json()["users"]
    ada = next(user for user in created if user["email"] == "ada@example.com")
    sandbox = f"sandbox-{ada['id']}"
    accounts = {a["name"]: a for a in service.api("/api/accounts")["accounts"]}
    assert (accounts[sandbox]["is_sandbox"], accounts[sandbox]["cash"]) == (True, "0")
    post(service, f"/api/accounts/{sandbox}/deposits", {"amount": 5000})
    token = post(
        service, "/api/integrations", {"name": "ada", "user": "ada@example.com", "account": sandbox}
    ).json()["token"]
    service.send("INTEGRATION_APPROVED", token=token)
    own = {"id": "ada-btc", "name": "Ada BTC"}
    opened = service.send(
        "SIGNAL_OPEN", signal(ticker="BTCUSDT", quantity=Decimal("0.05"), strategy=own), token=token
    )
    assert opened.status_code == 200, opened.text
    assert Decimal(service.api(f"/api/accounts/{sandbox}/book")["balance"]) == Decimal(5000) - 3250
    check_invariants(service, account=sandbox)
    # after a restart the account is still served
    restarted = start_service(clock=service.clock)
    closed = restarted.send(
        "SIGNAL_CLOSE",
        signal(ticker="BTCUSDT", strategy=own),
        token=token,
        timestamp=service.clock.milliseconds() + 99,
    )
    assert closed.status_code == 200, closed.text


def test_accounts_can_be_created_for_a_user(service: Service) -> None:
    created = post(service, "/api/accounts", {"name": "paper-2", "user": "demo@example.com"})
    assert created.status_code == 201
    assert "paper-2" in {a["name"] for a in created.json()["accounts"]}
    assert (
        post(service, "/api/accounts", {"name": "paper-2", "user": "demo@example.com"}).status_code
        == 409
    )
    assert (
        post(service, "/api/accounts", {"name": "x", "user": "nobody@example.com"}).status_code
        == 404
    )
    assert service.client.get("/readyz").json()["accounts"]["paper-2"] == "ready"
