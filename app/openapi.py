"""The OpenAPI 3.0.3 document of the service, served at ``GET /api/openapi.json``.

:func:`document` builds it as plain dicts on each call (nothing at import but constants).
Response shapes follow :mod:`app.queries`, their field types the columns of
:mod:`app.schema`: decimals are JSON strings (exact), datetimes ISO 8601 with a zone. Request
bodies mirror the pydantic models of :mod:`app.admin` and :mod:`app.protocol`; path and query
parameters are described as the endpoints validate them. ``tests/test_openapi.py`` checks that
every route is here and nothing else is, and fuzzes the live service from this document.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from sqlalchemy import Boolean, Column, Integer, Table
from starlette.requests import Request
from starlette.responses import Response

from app import schema
from app.admin import MAX_KEY_LENGTH
from app.api import MAX_ID, Scope
from app.columns import ExactDecimal, UTCDateTime
from app.errors import ProtocolError
from app.protocol import MAX_TIMESTAMP, SIGNAL_TYPES, STRATEGY_TYPES
from app.responses import JSON
from app.settings import Settings

Schema = dict[str, Any]

DIGITS = r"^[0-9]+$"
DECIMAL: Schema = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$", "example": "2350.00"}
DATETIME: Schema = {"type": "string", "format": "date-time"}
STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
ANY: Schema = {"nullable": True, "description": "any JSON value"}
ERRORS = {
    400: "The request is malformed (names the field or parameter).",
    401: "The X-API-Key header is missing or not a known operator key.",
    403: "A read-only key on an endpoint that needs a write key.",
    404: "No such resource.",
    408: "The body did not all arrive within the time limit.",
    409: "The resource's state does not allow the action.",
    413: "The body is over the size limit.",
    422: "Understood, but refused.",
    502: "The signal provider refused the registration.",
    503: "Not available now; retry later.",
}
SSE = (
    " With `Accept: text/event-stream`, a live Server-Sent Events stream of new items instead"
    " (`id`: row id, `event`: the kind, `data`: the item as JSON); `Last-Event-ID` resumes."
)


def document(settings: Settings) -> Schema:
    """The whole OpenAPI 3.0.3 document, for this configuration (the body limit)."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Signalbridge",
            "version": version("signalbridge"),
            "description": (
                "Turns ProQuant trading-signal webhooks into executed, accounted trades. Every"
                f" request body is limited to {settings.max_body_bytes} bytes (413 beyond)"
                f" and must arrive within {settings.body_timeout_seconds:g} s (408 beyond)."
                ' Every error answers `{"error", "message"}`, except the webhook\'s typed'
                ' errors, `{"type", "message"}` with `x-proquant-error: 1`.'
            ),
        },
        "paths": {**_probes(), **_webhook(), **_reads(), **_writes()},
        "components": {
            "securitySchemes": {
                "operatorKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "integrationToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-signalbridge-token",
                    "description": "The integration's token, in the header it names (this is"
                    " the default `token_header`).",
                },
            },
            "schemas": {**_error_schemas(), **_request_schemas(), **_response_schemas()},
        },
    }


async def endpoint(request: Request) -> Response:
    """``GET /api/openapi.json``. No key needed: it is documentation, and shows no data."""
    return JSON(document(request.state.services.settings))


# Helpers ---------------------------------------------------------------------------------


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: Schema, *, optional: tuple[str, ...] = (), closed: bool = True) -> Schema:
    required = [name for name in properties if name not in optional]
    result: Schema = {"type": "object", "properties": properties}
    if required:
        result["required"] = required
    if closed:
        result["additionalProperties"] = False
    return result


def _nullable(base: Schema) -> Schema:
    return {**base, "nullable": True}


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def _column(column: Column[Any]) -> Schema:
    if isinstance(column.type, ExactDecimal):
        base = DECIMAL
    elif isinstance(column.type, UTCDateTime):
        base = DATETIME
    elif isinstance(column.type, Boolean):
        base = {"type": "boolean"}
    elif isinstance(column.type, Integer):
        base = INTEGER
    else:
        base = STRING  # String, Text; LargeBinary is sent decoded
    return _nullable(base) if column.nullable else dict(base)


def _columns(table: Table, names: str = "", **renamed: str) -> Schema:
    """Properties for ``table``'s columns: ``names`` as they are, ``renamed`` as label=name."""
    pairs = [(name, name) for name in names.split()] + list(renamed.items())
    return {label: _column(table.c[name]) for label, name in pairs}


def _row(table: Table, **extra: Schema) -> Schema:
    """Every column of ``table`` (``select(table)``), plus ``extra`` fields."""
    return _object({**{column.name: _column(column) for column in table.c}, **extra})


def _json(schema_: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema_}}}


def _operation(
    operation_id: str,
    summary: str,
    ok: dict[int, Schema],
    errors: tuple[int, ...] = (),
    *,
    scope: Scope | None = "read",
    parameters: tuple[Schema, ...] = (),
    body: Schema | None = None,
    body_required: bool = True,
) -> Schema:
    """One operation: its success answers, and the error shape for each status in
    ``errors`` (401, plus 403 for ``write``, and 408 and 413 are added)."""
    statuses = {408, 413, *errors}
    if scope is not None:
        statuses.add(401)
    if scope == "write":
        statuses.add(403)
    responses = {str(status): answer for status, answer in ok.items()}
    for status in sorted(statuses - ok.keys()):
        responses[str(status)] = _json(_ref("Error"), ERRORS[status])
    result: Schema = {
        "operationId": operation_id,
        "summary": summary if scope is None else f"{summary} Needs a {scope} key.",
        "security": [] if scope is None else [{"operatorKey": []}],
        "responses": responses,
    }
    if parameters:
        result["parameters"] = list(parameters)
    if body is not None:
        result["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": body}},
        }
    return result


def _parameter(name: str, where: str, schema_: Schema, description: str = "") -> Schema:
    result: Schema = {"name": name, "in": where, "required": where == "path", "schema": schema_}
    if description:
        result["description"] = description
    return result


def _id(what: str) -> Schema:
    schema_ = {"type": "string", "pattern": DIGITS, "maxLength": 10}
    return _parameter("id", "path", schema_, f"The {what} id, at most {MAX_ID}.")


NAME = _parameter("name", "path", STRING)
IDEMPOTENCY_KEY = _parameter(
    "Idempotency-Key",
    "header",
    {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
    "A retry with the same key is answered, not repeated.",
)
RESUME = (
    _parameter("Last-Event-ID", "header", {"type": "string", "pattern": DIGITS}, "Streams only."),
    _parameter("last_event_id", "query", {"type": "string", "pattern": DIGITS}, "Streams only."),
)


def _list(key: str, item: Schema, description: str) -> Schema:
    """A list endpoint's 200: ``{key: [item]}`` as JSON, or its live stream."""
    answer = _json(_object({key: _array(item)}), description + SSE)
    answer["content"]["text/event-stream"] = {"schema": STRING}
    return answer


# Paths -----------------------------------------------------------------------------------


def _probes() -> Schema:
    readiness = _object(
        {
            "database": STRING,
            "accounts": {
                "type": "object",
                "additionalProperties": {"type": "string", "enum": ["ready", "reconciling"]},
            },
        }
    )
    health = _object({"status": {"type": "string", "enum": ["ok"]}})
    metrics = {"description": "Prometheus' text format.", "content": {"text/plain": {}}}
    spec = _json({"type": "object"}, "This document.")
    return {
        "/healthz": {
            "get": _operation("healthz", "Alive.", {200: _json(health, "Alive.")}, scope=None)
        },
        "/readyz": {
            "get": _operation(
                "readyz",
                "Ready: the database answers and every account is reconciled.",
                {200: _json(readiness, "Ready."), 503: _json(readiness, "Not ready.")},
                scope=None,
            )
        },
        "/metrics": {"get": _operation("metrics", "Prometheus metrics.", {200: metrics})},
        "/api/openapi.json": {
            "get": _operation("openapi", "This document (no key).", {200: spec}, scope=None)
        },
    }


def _webhook() -> Schema:
    flag = {"schema": {"type": "string", "enum": ["1"]}, "description": "Set on typed errors."}
    either = {"oneOf": [_ref("TypedError"), _ref("Error")]}

    def answer(schema_: Schema, description: str) -> Schema:
        return {**_json(schema_, description), "headers": {"x-proquant-error": flag}}

    key = {"type": "string", "minLength": 1, "maxLength": 200}
    operation = {
        "operationId": "proquantWebhook",
        "summary": "The ProQuant provider's webhook: one event, answered exactly once; a"
        " redelivery gets the stored answer.",
        "security": [{"integrationToken": []}],
        "parameters": [
            _parameter("Idempotency-Key", "header", key, "The event's dedupe key, if sent."),
            _parameter("webhook-id", "header", key, "The dedupe key, if no Idempotency-Key."),
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("Envelope")}},
        },
        "responses": {
            "200": {"description": "Accepted: executed, recorded or ignored; no body."},
            "400": _json(_ref("Error"), "malformed_body or unsupported_version."),
            "401": answer(_ref("TypedError"), "InvalidCredentials."),
            "404": answer(_ref("TypedError"), "PositionNotFound."),
            "409": answer(either, "PositionAlreadyExists, or strategy_paused."),
            "408": _json(_ref("Error"), ERRORS[408]),
            "413": _json(_ref("Error"), ERRORS[413]),
            "415": _json(_ref("Error"), "A content type other than JSON."),
            "422": answer(
                either, "A typed refusal, or stale_signal, idempotency_conflict, order_rejected."
            ),
            "503": _json(_ref("Error"), "broker_unavailable: deliver the event again later."),
        },
    }
    return {"/webhooks/proquant": {"post": operation}}


def _reads() -> Schema:
    text = _parameter
    events = (
        text("limit", "query", {"type": "string", "pattern": DIGITS, "default": "100"}, "1-1000."),
        text("type", "query", STRING),
        text("state", "query", STRING),
        text("strategy", "query", STRING, "The provider's strategy id."),
        text("since", "query", DATETIME, "Received at or after; needs a time zone."),
        text("until", "query", DATETIME, "Received before; needs a time zone."),
    )
    book = _json(_ref("Book"), "The account's book, derived from its journal.")
    action = _object({"event": INTEGER, "status": INTEGER, "answer": ANY})
    return {
        "/api/positions": {
            "get": _operation(
                "listPositions",
                "Positions in id order.",
                {200: _list("positions", _ref("Position"), "Positions.")},
                (400,),
                parameters=(
                    text("status", "query", STRING),
                    text("strategy", "query", STRING),
                    *RESUME,
                ),
            )
        },
        "/api/orders": {
            "get": _operation(
                "listOrders",
                "Orders with their fills, in id order (the first 100).",
                {200: _list("orders", _ref("Order"), "Orders.")},
                (400,),
                parameters=RESUME,
            )
        },
        "/api/accounts/{name}/book": {
            "get": _operation(
                "accountBook", "An account's book.", {200: book}, (404,), parameters=(NAME,)
            )
        },
        "/api/accounts/{name}/ledger": {
            "get": _operation(
                "accountLedger",
                "An account's ledger transactions with their postings (the first 100).",
                {200: _list("ledger", _ref("LedgerTransaction"), "Ledger transactions.")},
                (400, 404),
                parameters=(NAME, *RESUME),
            )
        },
        "/api/events": {
            "get": _operation(
                "listEvents",
                "Deliveries, latest first.",
                {200: _list("events", _ref("EventSummary"), "Deliveries.")},
                (400,),
                parameters=(*events, *RESUME),
            )
        },
        "/api/events/{id}": {
            "get": _operation(
                "getEvent",
                "One delivery with everything stored about it.",
                {200: _json(_ref("Event"), "The delivery.")},
                (400, 404),
                parameters=(_id("event"),),
            )
        },
        "/api/events/{id}/replay": {
            "post": _operation(
                "replayEvent",
                "Run a stored event again (answered 503, or of a version not understood).",
                {200: _json(action, "What the event answered this time.")},
                (400, 404, 409),
                scope="write",
                parameters=(_id("event"),),
            )
        },
        "/api/instruments": {
            "get": _operation(
                "listInstruments",
                "Instruments with their rules, session and quotes.",
                {200: _json(_object({"instruments": _array(_ref("Instrument"))}), "Instruments.")},
            )
        },
        "/api/versions": {
            "get": _operation(
                "deprecatedVersions",
                "Envelope versions in use that the provider dated for deprecation.",
                {200: _json(_object({"deprecated_versions": _array(_ref("VersionWarning"))}), "")},
            )
        },
    }


def _writes() -> Schema:
    strategy = _json(_ref("Strategy"), "The strategy as it is now.")
    action = _ref("OperatorAction")
    closed = _json(action, "The close's answer (as a webhook close would be answered).")
    moved = _object({"recorded": {"type": "boolean"}, "balance": DECIMAL})
    money = {
        200: _json(moved, "Already posted under this Idempotency-Key."),
        201: _json(moved, "Posted."),
    }
    users = _json(_object({"users": _array(_row(schema.users))}), "Every user.")
    created = _object(
        {"id": INTEGER, "status": {"type": "string", "enum": ["pending"]}, **_handover()}
    )
    registered = _object({"integration": STRING, "status": STRING, "provider_status": INTEGER})
    strategy_id = (_id("strategy"),)
    accounts = _json(_object({"accounts": _array(_ref("Account"))}), "Every account.")
    write: Scope = "write"
    return {
        "/api/strategies": {
            "get": _operation(
                "listStrategies",
                "Strategies with their switches, sizing rules and position.",
                {200: _json(_object({"strategies": _array(_ref("Strategy"))}), "Strategies.")},
            )
        },
        "/api/strategies/{id}": {
            "patch": _operation(
                "editStrategy",
                "Set the operator's sizing rules (null: back to the config's).",
                {200: strategy},
                (400, 404),
                scope=write,
                parameters=strategy_id,
                body=_ref("SizingRules"),
            )
        },
        "/api/strategies/{id}/pause": {
            "post": _operation(
                "pauseStrategy",
                "Pause: its signals are stored, not executed.",
                {200: strategy},
                (400, 404),
                scope=write,
                parameters=strategy_id,
            )
        },
        "/api/strategies/{id}/resume": {
            "post": _operation(
                "resumeStrategy",
                "Resume a paused strategy.",
                {200: strategy},
                (400, 404),
                scope=write,
                parameters=strategy_id,
            )
        },
        "/api/strategies/{id}/close": {
            "post": _operation(
                "closePosition",
                "Close the strategy's position by hand.",
                {
                    200: closed,
                    404: _json(
                        {"oneOf": [_ref("Error"), action]},
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
            "post": _operation(
                "retireStrategy",
                "Pause the strategy and close its position, if it has one.",
                {200: closed, 422: closed, 503: closed},
                (400, 404),
                scope=write,
                parameters=(*strategy_id, IDEMPOTENCY_KEY),
            )
        },
        "/api/accounts": {
            "get": _operation("listAccounts", "Accounts with their cash.", {200: accounts}),
            "post": _operation(
                "createAccount",
                "A sandbox paper account for a user, served at once; answers every account.",
                {201: accounts},
                (400, 404, 409),
                scope=write,
                body=_ref("NewAccount"),
            ),
        },
        "/api/accounts/{name}/verify": {
            "post": _operation(
                "verifyAccount",
                "Mark a production account verified: only then do its signals trade.",
                {200: accounts},
                (404,),
                scope=write,
                parameters=(NAME,),
            )
        },
        "/api/accounts/{name}/deposits": {
            "post": _operation(
                "deposit",
                "Money into a paper account, posted once per Idempotency-Key.",
                money,
                (400, 404, 409),
                scope=write,
                parameters=(NAME, IDEMPOTENCY_KEY),
                body=_ref("Money"),
            )
        },
        "/api/accounts/{name}/withdrawals": {
            "post": _operation(
                "withdraw",
                "Money out of a paper account; never more than its cash (422).",
                money,
                (400, 404, 409, 422),
                scope=write,
                parameters=(NAME, IDEMPOTENCY_KEY),
                body=_ref("Money"),
            )
        },
        "/api/users": {
            "get": _operation("listUsers", "Every user.", {200: users}),
            "post": _operation(
                "createUser",
                "Add a user (an existing email is kept) with a sandbox paper account,"
                " sandbox-<user id>; answers every user.",
                {200: users},
                (400,),
                scope=write,
                body=_ref("NewUser"),
            ),
        },
        "/api/integrations": {
            "get": _operation(
                "listIntegrations",
                "Integrations with their user, account and live tokens (never the tokens).",
                {200: _json(_object({"integrations": _array(_ref("Integration"))}), "")},
            ),
            "post": _operation(
                "createIntegration",
                "Create an integration: its token is shown once, here.",
                {201: _json(created, "Created; hand the webhook to the provider.")},
                (400, 404, 409),
                scope=write,
                body=_ref("NewIntegration"),
            ),
        },
        "/api/integrations/{name}/rotate": {
            "post": _operation(
                "rotateToken",
                "A second live token; the old one works until revoked.",
                {201: _json(_object(_handover()), "The new token, shown once.")},
                (404, 409),
                scope=write,
                parameters=(NAME,),
            )
        },
        "/api/integrations/{name}/revoke": {
            "post": _operation(
                "revokeToken",
                "The older of two live tokens stops working.",
                {200: _json(_object({"revoked": STRING}), "Revoked.")},
                (404, 409),
                scope=write,
                parameters=(NAME,),
            )
        },
        "/api/integrations/{name}/register": {
            "post": _operation(
                "registerIntegration",
                "Ask the provider to create the integration request.",
                {200: _json(registered, "Requested; pending the user's approval.")},
                (400, 404, 409, 502, 503),
                scope=write,
                parameters=(NAME,),
                body=_ref("NewRegistration"),
                body_required=False,
            )
        },
    }


def _handover() -> Schema:
    headers = {"type": "object", "additionalProperties": STRING}
    return {"token": STRING, "webhook": _object({"url": STRING, "headers": headers})}


# Schemas ---------------------------------------------------------------------------------


def _error_schemas() -> Schema:
    types = sorted(error.__name__ for error in ProtocolError.__subclasses__())
    return {
        "Error": _object({"error": STRING, "message": STRING}),
        "TypedError": _object({"type": {"type": "string", "enum": types}, "message": STRING}),
    }


def _request_schemas() -> Schema:
    positive = {"type": "number", "minimum": 0, "exclusiveMinimum": True}
    text = {"type": "string", "pattern": r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"}
    amount = {"oneOf": [positive, text], "description": "A decimal above 0: a number or its text."}
    name = {"type": "string", "minLength": 1, "maxLength": 200}
    optional = _nullable(STRING)
    known = sorted(SIGNAL_TYPES | STRATEGY_TYPES)
    strategy = _object(
        {"id": name, "name": {"type": "string", "maxLength": 500, "default": ""}},
        optional=("name",),
        closed=False,
    )
    event = {
        "timestamp": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_TIMESTAMP,
            "description": "Unix time in ms.",
        },
        "integration": _nullable(
            _object(
                {
                    "name": optional,
                    "description": optional,
                    "imageUrl": optional,
                    "webhook": _nullable(
                        _object(
                            {"url": optional, "headers": _nullable({"type": "object"})},
                            optional=("url", "headers"),
                            closed=False,
                        )
                    ),
                },
                optional=("name", "description", "imageUrl", "webhook"),
                closed=False,
            )
        ),
    }

    def event_of(types: Schema, data: Schema, *, data_optional: bool = False) -> Schema:
        properties = {**event, "type": types, "data": data}
        optional_ = ("integration", "data") if data_optional else ("integration",)
        return _object(properties, optional=optional_, closed=False)

    other_type = {"type": "string", "minLength": 1, "maxLength": 64, "not": {"enum": known}}
    return {
        "SizingRules": _object(
            {
                "quantity_multiplier": _nullable(amount),
                "max_order_quantity": _nullable(amount),
                "allocation_percent": _nullable(
                    {"oneOf": [{**positive, "maximum": 100}, text], "description": "(0, 100]."}
                ),
            },
            optional=("quantity_multiplier", "max_order_quantity", "allocation_percent"),
        ),
        "Money": _object({"amount": amount}),
        "NewAccount": _object(
            {
                "name": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 100,
                    "pattern": r"^[A-Za-z0-9._-]+$",
                },
                "user": {"type": "string"},
                "currency": {"type": "string", "pattern": r"^[A-Z]{3,10}$", "default": "USD"},
            },
            optional=("currency",),
        ),
        "NewUser": _object(
            {
                "email": {
                    "type": "string",
                    "minLength": 3,
                    "maxLength": 320,
                    "pattern": r"^[^@\s]+@[^@\s]+$",
                }
            }
        ),
        "NewIntegration": _object(
            {
                "name": name,
                "user": {**STRING, "description": "The user's email."},
                "account": {**STRING, "description": "The account's name."},
                "token_header": {
                    "type": "string",
                    "pattern": r"^[A-Za-z0-9-]{1,100}$",
                    "default": "x-signalbridge-token",
                },
            },
            optional=("token_header",),
        ),
        "NewRegistration": _object(
            {
                "description": {**STRING, "default": "Signalbridge"},
                "image_url": {**STRING, "default": ""},
            },
            optional=("description", "image_url"),
        ),
        "Envelope": {
            "type": "object",
            "description": "One event in every version the provider supports: v1 is read;"
            " other keys (v2, ...) are ignored.",
            "properties": {
                "v1": _object(
                    {
                        "deprecation": _nullable({**STRING, "maxLength": 64}),
                        "event": _ref("EventV1"),
                    },
                    optional=("deprecation",),
                    closed=False,
                )
            },
            "required": ["v1"],
        },
        "EventV1": {
            "oneOf": [
                event_of({"type": "string", "enum": sorted(SIGNAL_TYPES)}, _ref("SignalData")),
                event_of({"type": "string", "enum": sorted(STRATEGY_TYPES)}, strategy),
                event_of(other_type, ANY, data_optional=True),
            ]
        },
        "SignalData": _object(
            {
                "direction": {"type": "string", "enum": ["BUY", "SELL"]},
                "ticker": {"type": "string", "minLength": 1, "maxLength": 64},
                "quantity": {**positive, "description": "A JSON number, at most 30 digits."},
                "strategy": strategy,
                "proquantPositionId": name,
            },
            closed=False,
        ),
    }


def _response_schemas() -> Schema:
    p, s, a, e = schema.positions, schema.strategies, schema.accounts, schema.events
    i, t, u = schema.integrations, schema.ledger_transactions, schema.users
    timings = _nullable({"type": "object", "additionalProperties": {"type": "number"}})
    trade = _object(
        {
            "at": DATETIME,
            "type": {"type": "string", "enum": ["buy", "sell"]},
            **dict.fromkeys(("price", "quantity", "fee"), DECIMAL),
            "ticker": STRING,
        }
    )
    answer = {"oneOf": [_ref("Error"), _ref("TypedError")], "description": "Its body."}
    return {
        "Position": _object(
            {
                **_columns(p, "id ticker direction status quantity realized_pnl"),
                **_columns(p, "provider_position_id created_at opened_at closed_at attention"),
                **_columns(s, strategy_id="external_id", strategy_name="name"),
                **_columns(a, account="name"),
                "average_entry": _nullable(DECIMAL),
            }
        ),
        "Order": _row(schema.orders, fills=_array(_row(schema.fills))),
        "LedgerTransaction": _row(
            t,
            postings=_array(
                _object(_columns(schema.postings, "ledger_account amount ticker quantity"))
            ),
        ),
        "Book": _object(
            {
                "account": STRING,
                **dict.fromkeys(("balance", "realized_pnl", "fees", "capital"), DECIMAL),
                "holding": {"type": "object", "additionalProperties": DECIMAL},
                "trades": _array(trade),
                "value": _array(_object({"at": DATETIME, "equity": DECIMAL})),
            }
        ),
        "EventSummary": _object(
            {
                **_columns(e, "id received_at version deprecation provider_position_id state"),
                **_columns(e, "duplicate_of error_type answer_status answer_body note"),
                **_columns(e, type="event_type", strategy_id="strategy_external_id"),
                "timings": timings,
            }
        ),
        "Event": _row(e, timings=timings),
        "Instrument": _object(
            {
                **dict.fromkeys(("ticker", "symbol", "sessions"), STRING),
                **dict.fromkeys(("quantity_step", "min_quantity", "min_notional"), DECIMAL),
                "max_quantity": _nullable(DECIMAL),
                "open_now": {"type": "boolean"},
                "quotes": {"type": "object", "additionalProperties": _nullable(DECIMAL)},
            }
        ),
        "VersionWarning": _object(
            {
                **_columns(e, "version"),
                "deprecation": STRING,
                "last_seen": DATETIME,
                "deliveries": INTEGER,
            }
        ),
        "Strategy": _object(
            {
                **_columns(s, "id external_id name enabled paused quantity_multiplier"),
                **_columns(s, "max_order_quantity allocation_percent"),
                **_columns(i, integration="name"),
                "position_id": _nullable(INTEGER),
            }
        ),
        "Account": _object(
            _columns(a, "id name broker currency is_sandbox is_verified cash"),
        ),
        "Integration": _object(
            {
                **_columns(i, "id name provider status token_header updated_at"),
                **_columns(u, user="email"),
                **_columns(a, account="name"),
                "live_tokens": INTEGER,
            }
        ),
        "OperatorAction": _object(
            {"strategy": INTEGER, "status": INTEGER, "answer": _nullable(answer)}
        ),
    }
