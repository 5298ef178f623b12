"""The operator API's write side: strategies, money in and out of paper accounts, users,
accounts and integrations. Every endpoint here needs a ``write`` key, except the lists."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select, update
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app import directory, journal, provisioning, queries, schema, sql, strategies
from app.api import require_key, whole
from app.errors import Conflict, InsufficientCash, MalformedBody, NotFound
from app.paper import PaperBroker
from app.protocol import load_json
from app.responses import JSON
from app.settings import AccountConfig

# Amounts an operator may send: finite, at most 30 digits of which 18 after the point.
EXACT: dict[str, Any] = {"allow_inf_nan": False, "max_digits": 30, "decimal_places": 18}
MAX_KEY_LENGTH = 100


def idempotency_key(request: Request) -> str | None:
    """The request's ``Idempotency-Key``: printable ASCII, at most 100 characters."""
    key = request.headers.get("idempotency-key")
    if key is not None and not (key.isascii() and key.isprintable() and 0 < len(key) <= 100):
        raise MalformedBody(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters")
    return key


def parse(model: type[BaseModel], raw: bytes) -> Any:
    """A JSON body (numbers as Decimal) as ``model``, or a 400 naming the field."""
    try:
        return model.model_validate(load_json(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        raise MalformedBody(f"{field}: {first['msg']}") from None


class SizingRules(BaseModel):
    """The operator's sizing rules for one strategy; null: back to the config's."""

    model_config = ConfigDict(extra="forbid")
    quantity_multiplier: Decimal | None = Field(default=None, gt=0, **EXACT)
    max_order_quantity: Decimal | None = Field(default=None, gt=0, **EXACT)
    allocation_percent: Decimal | None = Field(default=None, gt=0, le=100, **EXACT)


async def list_strategies(request: Request) -> Response:
    async with request.state.services.database.read() as connection:
        return JSON({"strategies": await queries.strategies(connection)})


async def edit_strategy(request: Request) -> Response:
    strategy_id = whole(request.path_params["id"], "strategy id")
    rules = parse(SizingRules, await request.body())
    changes = rules.model_dump(exclude_unset=True)
    return await _update_strategy(request, strategy_id, changes)


async def pause(request: Request) -> Response:
    strategy_id = whole(request.path_params["id"], "strategy id")
    return await _update_strategy(request, strategy_id, {"paused": True})


async def resume(request: Request) -> Response:
    strategy_id = whole(request.path_params["id"], "strategy id")
    return await _update_strategy(request, strategy_id, {"paused": False})


async def _update_strategy(request: Request, strategy_id: int, changes: dict[str, Any]) -> Response:
    services = request.state.services
    async with services.database.transaction() as tx:
        if await strategies.strategy_by_id(tx, strategy_id) is None:
            raise NotFound(f"no strategy {strategy_id}")
        if changes:
            await strategies.update_strategy(tx, strategy_id, now=services.clock(), **changes)
    async with services.database.read() as connection:
        found = [s for s in await queries.strategies(connection) if s["id"] == strategy_id]
    return JSON(found[0])


async def close_position(request: Request) -> Response:
    """Close the strategy's position by hand (an order through the broker and the ledger,
    recorded as the operator's action). ``Idempotency-Key`` makes a retry safe."""
    return await _operator_close(request, retire=False)


async def retire(request: Request) -> Response:
    """Pause the strategy and close its position, if it has one."""
    return await _operator_close(request, retire=True)


async def _operator_close(request: Request, *, retire: bool) -> Response:
    strategy_id = whole(request.path_params["id"], "strategy id")
    answer = await request.state.services.receiver.operator_close(
        strategy_id, idempotency_key=idempotency_key(request), retire=retire
    )
    body = json.loads(answer.body) if answer.body else None
    return JSON(
        {"strategy": strategy_id, "status": answer.status, "answer": body},
        status_code=200 if answer.status == 200 else answer.status,
    )


class Money(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Decimal = Field(gt=0, **EXACT)


async def deposit(request: Request) -> Response:
    """Money into a paper account, posted to the ledger once per ``Idempotency-Key``."""
    return await _move_money(request, sign=1)


async def withdraw(request: Request) -> Response:
    """Money out of a paper account; never more than its cash."""
    return await _move_money(request, sign=-1)


async def _move_money(request: Request, *, sign: int) -> Response:
    services = request.state.services
    name = request.path_params["name"]
    amount = parse(Money, await request.body()).amount * sign
    account = next((a for a in services.settings.accounts if a.name == name), None)
    if account is not None and account.broker != "paper":
        raise Conflict(f"{name} trades on {account.exchange}: its cash is the exchange's")
    key = idempotency_key(request) or uuid.uuid4().hex
    async with services.database.write() as connection:
        account_id = await queries.account_id(connection, name)
        cash = await connection.scalar(  # locked: two withdrawals must not both pass
            select(schema.accounts.c.cash)
            .where(schema.accounts.c.id == account_id)
            .with_for_update()
        )
        kind = "deposit" if amount > 0 else "withdrawal"
        reference = f"{kind}:{name}:{key}"
        # A retry of a withdrawal already posted is answered as one, whatever the cash is now.
        tx = await sql.tx_on(connection)
        if amount < 0 and cash + amount < 0 and not await journal.is_posted(tx, reference):
            raise InsufficientCash(f"{name} has {cash} in cash; cannot withdraw {-amount}")
        recorded = await journal.record_deposit(
            tx, account_id, amount=amount, reference=reference, now=services.clock()
        )
    async with services.database.read() as connection:
        book = await queries.book(connection, name)
    return JSON(
        {"recorded": recorded, "balance": book["balance"]}, status_code=201 if recorded else 200
    )


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")


_NEW_USER = sql.insert_or_ignore(schema.users, ["email", "created_at"], unique=["email"])


async def users(request: Request) -> Response:
    """Users; a new user gets a sandbox paper account, ``sandbox-<user id>``."""
    services = request.state.services
    if request.method == "POST":
        user = parse(NewUser, await request.body())
        async with services.database.write() as connection:
            known = await connection.scalar(
                select(schema.users.c.id).where(schema.users.c.email == user.email)
            )
            if known is None:
                await (await sql.tx_on(connection)).run(
                    _NEW_USER, email=user.email, created_at=services.clock()
                )
                user_id = await connection.scalar(
                    select(schema.users.c.id).where(schema.users.c.email == user.email)
                )
                sandbox = await provisioning.create_paper_account(
                    connection,
                    name=f"sandbox-{user_id}",
                    user_email=user.email,
                    currency="USD",
                    now=services.clock(),
                )
        if known is None:
            await _serve_account(services, sandbox)
    async with services.database.read() as connection:
        rows = await connection.execute(select(schema.users).order_by(schema.users.c.id))
        return JSON({"users": [dict(row._mapping) for row in rows]})


async def accounts(request: Request, *, status_code: int = 200) -> Response:
    async with request.state.services.database.read() as connection:
        rows = await connection.execute(
            select(
                schema.accounts.c.id,
                schema.accounts.c.name,
                schema.accounts.c.broker,
                schema.accounts.c.currency,
                schema.accounts.c.is_sandbox,
                schema.accounts.c.is_verified,
                schema.accounts.c.cash,
            ).order_by(schema.accounts.c.id)
        )
        return JSON({"accounts": [dict(row._mapping) for row in rows]}, status_code=status_code)


async def verify(request: Request) -> Response:
    """Mark a production account verified: only then do its signals trade."""
    services = request.state.services
    name = request.path_params["name"]
    async with services.database.write() as connection:
        account_id = await queries.account_id(connection, name)
        await connection.execute(
            update(schema.accounts)
            .where(schema.accounts.c.id == account_id)
            .values(is_verified=True)
        )
    return await accounts(request)


class NewAccount(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")
    user: str
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3,10}$")


async def create_account(request: Request) -> Response:
    """A sandbox paper account for a user, served at once. Production accounts bind a
    broker with credentials: they are defined in the config file."""
    services = request.state.services
    new = parse(NewAccount, await request.body())
    async with services.database.write() as connection:
        config = await provisioning.create_paper_account(
            connection,
            name=new.name,
            user_email=new.user,
            currency=new.currency,
            now=services.clock(),
        )
    await _serve_account(services, config)
    return await accounts(request, status_code=201)


async def _serve_account(services: Any, config: AccountConfig) -> None:
    broker = PaperBroker.for_account(services.settings, config, clock=services.clock)
    await services.receiver.add_account(config, broker)


class NewIntegration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    user: str
    account: str
    token_header: str = Field(default="x-signalbridge-token", pattern=r"^[A-Za-z0-9-]{1,100}$")


async def integrations(request: Request) -> Response:
    services = request.state.services
    if request.method == "POST":
        new = parse(NewIntegration, await request.body())
        async with services.database.write() as connection:
            integration_id, token = await provisioning.create_integration(
                connection,
                name=new.name,
                user_email=new.user,
                account=new.account,
                token_header=new.token_header,
                now=services.clock(),
            )
        return JSON(
            {
                "id": integration_id,
                "status": "pending",
                **_handover(services, new.token_header, token),
            },
            status_code=201,
        )
    async with services.database.read() as connection:
        return JSON({"integrations": await queries.integrations(connection)})


def _handover(services: Any, header: str, token: str) -> dict[str, Any]:
    """What to give the provider: shown once, never stored in plain text."""
    return {
        "token": token,
        "webhook": {
            "url": services.settings.public_url.rstrip("/") + "/webhooks/proquant",
            "headers": {header.lower(): token},
        },
    }


async def rotate(request: Request) -> Response:
    """A second live token; the old one works until revoked."""
    services = request.state.services
    name = request.path_params["name"]
    _not_from_config(services, name)
    async with services.database.write() as connection:
        integration_id = await provisioning.integration_id_by_name(connection, name)
        token = await provisioning.add_token(connection, integration_id, now=services.clock())
        tx = await sql.tx_on(connection)
        header = (await directory.integration_by_id(tx, integration_id)).token_header
    return JSON(_handover(services, header, token), status_code=201)


async def revoke(request: Request) -> Response:
    """The older of two live tokens stops working."""
    services = request.state.services
    name = request.path_params["name"]
    _not_from_config(services, name)
    async with services.database.write() as connection:
        integration_id = await provisioning.integration_id_by_name(connection, name)
        await provisioning.revoke_oldest_token(connection, integration_id, now=services.clock())
    return JSON({"revoked": "the older token"})


def _not_from_config(services: Any, name: str) -> None:
    if any(integration.name == name for integration in services.settings.integrations):
        raise Conflict(f"{name} is defined in the config file: change its tokens there")


class NewRegistration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = "Signalbridge"
    image_url: str = ""


async def register(request: Request) -> Response:
    """Ask the provider to create the integration request (it stays pending until the
    user approves it in the provider's app). Rotates in a token for the handover."""
    services = request.state.services
    name = request.path_params["name"]
    details = parse(NewRegistration, await request.body() or b"{}")
    if services.settings.provider_api_url is None:
        raise Conflict("set provider_api_url to register integrations with the provider")
    async with services.database.write() as connection:
        integration_id = await provisioning.integration_id_by_name(connection, name)
        integration = await directory.integration_by_id(await sql.tx_on(connection), integration_id)
        email = await queries.integration_user(connection, integration_id)
        token = await provisioning.add_token(connection, integration_id, now=services.clock())
    handover = _handover(services, integration.token_header, token)
    # Imported here: it brings httpx, which nothing else the service runs needs, and which
    # took about a tenth of a second of every start-up.
    from app.provider import ProviderClient, Registration

    async with ProviderClient(services.settings.provider_api_url) as client:
        result = await client.register(
            Registration(
                name=email,
                description=details.description,
                image_url=details.image_url,
                user_email=email,
                webhook_url=handover["webhook"]["url"],
                webhook_headers=handover["webhook"]["headers"],
            )
        )
    return JSON({"integration": name, "status": "pending", "provider_status": result.status_code})


routes = [
    Route("/api/strategies", require_key(list_strategies)),
    Route("/api/strategies/{id}", require_key(edit_strategy, scope="write"), methods=["PATCH"]),
    Route("/api/strategies/{id}/pause", require_key(pause, scope="write"), methods=["POST"]),
    Route("/api/strategies/{id}/resume", require_key(resume, scope="write"), methods=["POST"]),
    Route(
        "/api/strategies/{id}/close", require_key(close_position, scope="write"), methods=["POST"]
    ),
    Route("/api/strategies/{id}/retire", require_key(retire, scope="write"), methods=["POST"]),
    Route("/api/accounts", require_key(accounts), methods=["GET"]),
    Route("/api/accounts", require_key(create_account, scope="write"), methods=["POST"]),
    Route("/api/accounts/{name}/verify", require_key(verify, scope="write"), methods=["POST"]),
    Route("/api/accounts/{name}/deposits", require_key(deposit, scope="write"), methods=["POST"]),
    Route(
        "/api/accounts/{name}/withdrawals", require_key(withdraw, scope="write"), methods=["POST"]
    ),
    Route("/api/users", require_key(users), methods=["GET"]),
    Route("/api/users", require_key(users, scope="write"), methods=["POST"]),
    Route("/api/integrations", require_key(integrations), methods=["GET"]),
    Route("/api/integrations", require_key(integrations, scope="write"), methods=["POST"]),
    Route("/api/integrations/{name}/rotate", require_key(rotate, scope="write"), methods=["POST"]),
    Route("/api/integrations/{name}/revoke", require_key(revoke, scope="write"), methods=["POST"]),
    Route(
        "/api/integrations/{name}/register", require_key(register, scope="write"), methods=["POST"]
    ),
]
