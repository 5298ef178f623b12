"""The OpenAPI document's paths for what operators change: strategies, accounts and their
money, users, integrations and their tokens."""

from __future__ import annotations

from app import schema
from app.api import Scope
from app.openapi.shapes import (
    DECIMAL,
    IDEMPOTENCY_KEY,
    INTEGER,
    NAME,
    STRING,
    Schema,
    array_of,
    id_parameter,
    json_answer,
    object_of,
    operation,
    ref,
    row,
)


def writes() -> Schema:
    strategy = json_answer(ref("Strategy"), "The strategy as it is now.")
    action = ref("OperatorAction")
    closed = json_answer(action, "The close's answer (as a webhook close would be answered).")
    moved = object_of({"recorded": {"type": "boolean"}, "balance": DECIMAL})
    money = {
        200: json_answer(moved, "Already posted under this Idempotency-Key."),
        201: json_answer(moved, "Posted."),
    }
    users = json_answer(object_of({"users": array_of(row(schema.users))}), "Every user.")
    created = object_of(
        {"id": INTEGER, "status": {"type": "string", "enum": ["pending"]}, **handover()}
    )
    registered = object_of({"integration": STRING, "status": STRING, "provider_status": INTEGER})
    strategy_id = (id_parameter("strategy"),)
    accounts = json_answer(object_of({"accounts": array_of(ref("Account"))}), "Every account.")
    write: Scope = "write"
    return {
        "/api/strategies": {
            "get": operation(
                "listStrategies",
                "Strategies with their switches, sizing rules and position.",
                {
                    200: json_answer(
                        object_of({"strategies": array_of(ref("Strategy"))}), "Strategies."
                    )
                },
            )
        },
        "/api/strategies/{id}": {
            "patch": operation(
                "editStrategy",
                "Set the operator's sizing rules (null: back to the config's).",
                {200: strategy},
                (400, 404),
                scope=write,
                parameters=strategy_id,
                body=ref("SizingRules"),
            )
        },
        "/api/strategies/{id}/pause": {
            "post": operation(
                "pauseStrategy",
                "Pause: its signals are stored, not executed.",
                {200: strategy},
                (400, 404),
                scope=write,
                parameters=strategy_id,
            )
        },
        "/api/strategies/{id}/resume": {
            "post": operation(
                "resumeStrategy",
                "Resume a paused strategy.",
                {200: strategy},
                (400, 404),
                scope=write,
                parameters=strategy_id,
            )
        },
        "/api/strategies/{id}/close": {
            "post": operation(
                "closePosition",
                "Close the strategy's position by hand.",
                {
                    200: closed,
                    404: json_answer(
                        {"oneOf": [ref("Error"), action]},
                        "No such strategy, or no open position (PositionNotFound).",
                    ),
                    422: closed,
                    503: closed,
                },
                (400,),
                scope=write,
                parameters=(*strategy_id, IDEMPOTENCY_KEY),
            )
        },
        "/api/strategies/{id}/retire": {
            "post": operation(
                "retireStrategy",
                "Pause the strategy and close its position, if it has one.",
                {200: closed, 422: closed, 503: closed},
                (400, 404),
                scope=write,
                parameters=(*strategy_id, IDEMPOTENCY_KEY),
            )
        },
        "/api/accounts": {
            "get": operation("listAccounts", "Accounts with their cash.", {200: accounts}),
            "post": operation(
                "createAccount",
                "A sandbox paper account for a user, served at once; answers every account.",
                {201: accounts},
                (400, 404, 409),
                scope=write,
                body=ref("NewAccount"),
            ),
        },
        "/api/accounts/{name}/verify": {
            "post": operation(
                "verifyAccount",
                "Mark a production account verified: only then do its signals trade.",
                {200: accounts},
                (404,),
                scope=write,
                parameters=(NAME,),
            )
        },
        "/api/accounts/{name}/deposits": {
            "post": operation(
                "deposit",
                "Money into a paper account, posted once per Idempotency-Key.",
                money,
                (400, 404, 409),
                scope=write,
                parameters=(NAME, IDEMPOTENCY_KEY),
                body=ref("Money"),
            )
        },
        "/api/accounts/{name}/withdrawals": {
            "post": operation(
                "withdraw",
                "Money out of a paper account; never more than its cash (422).",
                money,
                (400, 404, 409, 422),
                scope=write,
                parameters=(NAME, IDEMPOTENCY_KEY),
                body=ref("Money"),
            )
        },
        "/api/users": {
            "get": operation("listUsers", "Every user.", {200: users}),
            "post": operation(
                "createUser",
                "Add a user (an existing email is kept) with a sandbox paper account,"
                " sandbox-<user id>; answers every user.",
                {200: users},
                (400,),
                scope=write,
                body=ref("NewUser"),
            ),
        },
        "/api/integrations": {
            "get": operation(
                "listIntegrations",
                "Integrations with their user, account and live tokens (never the tokens).",
                {200: json_answer(object_of({"integrations": array_of(ref("Integration"))}), "")},
            ),
            "post": operation(
                "createIntegration",
                "Create an integration: its token is shown once, here.",
                {201: json_answer(created, "Created; hand the webhook to the provider.")},
                (400, 404, 409),
                scope=write,
                body=ref("NewIntegration"),
            ),
        },
        "/api/integrations/{name}/rotate": {
            "post": operation(
                "rotateToken",
                "A second live token; the old one works until revoked.",
                {201: json_answer(object_of(handover()), "The new token, shown once.")},
                (404, 409),
                scope=write,
                parameters=(NAME,),
            )
        },
        "/api/integrations/{name}/revoke": {
            "post": operation(
                "revokeToken",
                "The older of two live tokens stops working.",
                {200: json_answer(object_of({"revoked": STRING}), "Revoked.")},
                (404, 409),
                scope=write,
                parameters=(NAME,),
            )
        },
        "/api/integrations/{name}/register": {
            "post": operation(
                "registerIntegration",
                "Ask the provider to create the integration request.",
                {200: json_answer(registered, "Requested; pending the user's approval.")},
                (400, 404, 409, 502, 503),
                scope=write,
                parameters=(NAME,),
                body=ref("NewRegistration"),
                body_required=False,
            )
        },
    }


def handover() -> Schema:
    headers = {"type": "object", "additionalProperties": STRING}
    return {"token": STRING, "webhook": object_of({"url": STRING, "headers": headers})}
