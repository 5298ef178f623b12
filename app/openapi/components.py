"""The OpenAPI document's named schemas (``components/schemas``): errors, request bodies and
the rows operators read."""

from __future__ import annotations

from app import schema
from app.errors import ProtocolError
from app.openapi.shapes import (
    ANY,
    DATETIME,
    DECIMAL,
    INTEGER,
    STRING,
    Schema,
    array_of,
    columns,
    nullable,
    object_of,
    ref,
    row,
)
from app.protocol import MAX_TIMESTAMP, SIGNAL_TYPES, STRATEGY_TYPES


def error_schemas() -> Schema:
    types = sorted(error.__name__ for error in ProtocolError.__subclasses__())
    return {
        "Error": object_of({"error": STRING, "message": STRING}),
        "TypedError": object_of({"type": {"type": "string", "enum": types}, "message": STRING}),
    }


def request_schemas() -> Schema:
    positive = {"type": "number", "minimum": 0, "exclusiveMinimum": True}
    text = {"type": "string", "pattern": r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"}
    amount = {"oneOf": [positive, text], "description": "A decimal above 0: a number or its text."}
    name = {"type": "string", "minLength": 1, "maxLength": 200}
    optional = nullable(STRING)
    known = sorted(SIGNAL_TYPES | STRATEGY_TYPES)
    strategy = object_of(
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
        "integration": nullable(
            object_of(
                {
                    "name": optional,
                    "description": optional,
                    "imageUrl": optional,
                    "webhook": nullable(
                        object_of(
                            {"url": optional, "headers": nullable({"type": "object"})},
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
        return object_of(properties, optional=optional_, closed=False)

    other_type = {"type": "string", "minLength": 1, "maxLength": 64, "not": {"enum": known}}
    return {
        "SizingRules": object_of(
            {
                "quantity_multiplier": nullable(amount),
                "max_order_quantity": nullable(amount),
                "allocation_percent": nullable(
                    {"oneOf": [{**positive, "maximum": 100}, text], "description": "(0, 100]."}
                ),
            },
            optional=("quantity_multiplier", "max_order_quantity", "allocation_percent"),
        ),
        "Money": object_of({"amount": amount}),
        "NewAccount": object_of(
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
        "NewUser": object_of(
            {
                "email": {
                    "type": "string",
                    "minLength": 3,
                    "maxLength": 320,
                    "pattern": r"^[^@\s]+@[^@\s]+$",
                }
            }
        ),
        "NewIntegration": object_of(
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
        "NewRegistration": object_of(
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
                "v1": object_of(
                    {
                        "deprecation": nullable({**STRING, "maxLength": 64}),
                        "event": ref("EventV1"),
                    },
                    optional=("deprecation",),
                    closed=False,
                )
            },
            "required": ["v1"],
        },
        "EventV1": {
            "oneOf": [
                event_of({"type": "string", "enum": sorted(SIGNAL_TYPES)}, ref("SignalData")),
                event_of({"type": "string", "enum": sorted(STRATEGY_TYPES)}, strategy),
                event_of(other_type, ANY, data_optional=True),
            ]
        },
        "SignalData": object_of(
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


def response_schemas() -> Schema:
    p, s, a, e = schema.positions, schema.strategies, schema.accounts, schema.events
    i, t, u = schema.integrations, schema.ledger_transactions, schema.users
    timings = nullable({"type": "object", "additionalProperties": {"type": "number"}})
    trade = object_of(
        {
            "at": DATETIME,
            "type": {"type": "string", "enum": ["buy", "sell"]},
            **dict.fromkeys(("price", "quantity", "fee"), DECIMAL),
            "ticker": STRING,
        }
    )
    answer = {"oneOf": [ref("Error"), ref("TypedError")], "description": "Its body."}
    return {
        "Position": object_of(
            {
                **columns(p, "id ticker direction status quantity realized_pnl"),
                **columns(p, "provider_position_id created_at opened_at closed_at attention"),
                **columns(s, strategy_id="external_id", strategy_name="name"),
                **columns(a, account="name"),
                "average_entry": nullable(DECIMAL),
            }
        ),
        "Order": row(schema.orders, fills=array_of(row(schema.fills))),
        "LedgerTransaction": row(
            t,
            postings=array_of(
                object_of(columns(schema.postings, "ledger_account amount ticker quantity"))
            ),
        ),
        "Book": object_of(
            {
                "account": STRING,
                **dict.fromkeys(("balance", "realized_pnl", "fees", "capital"), DECIMAL),
                "holding": {"type": "object", "additionalProperties": DECIMAL},
                "trades": array_of(trade),
                "value": array_of(object_of({"at": DATETIME, "equity": DECIMAL})),
            }
        ),
        "EventSummary": object_of(
            {
                **columns(e, "id received_at version deprecation provider_position_id state"),
                **columns(e, "duplicate_of error_type answer_status answer_body note"),
                **columns(e, type="event_type", strategy_id="strategy_external_id"),
                "timings": timings,
            }
        ),
        "Event": row(e, timings=timings),
        "Instrument": object_of(
            {
                **dict.fromkeys(("ticker", "symbol", "sessions"), STRING),
                **dict.fromkeys(("quantity_step", "min_quantity", "min_notional"), DECIMAL),
                "max_quantity": nullable(DECIMAL),
                "open_now": {"type": "boolean"},
                "quotes": {"type": "object", "additionalProperties": nullable(DECIMAL)},
            }
        ),
        "VersionWarning": object_of(
            {
                **columns(e, "version"),
                "deprecation": STRING,
                "last_seen": DATETIME,
                "deliveries": INTEGER,
            }
        ),
        "Strategy": object_of(
            {
                **columns(s, "id external_id name enabled paused quantity_multiplier"),
                **columns(s, "max_order_quantity allocation_percent"),
                **columns(i, integration="name"),
                "position_id": nullable(INTEGER),
            }
        ),
        "Account": object_of(
            columns(a, "id name broker currency is_sandbox is_verified cash"),
        ),
        "Integration": object_of(
            {
                **columns(i, "id name provider status token_header updated_at"),
                **columns(u, user="email"),
                **columns(a, account="name"),
                "live_tokens": INTEGER,
            }
        ),
        "OperatorAction": object_of(
            {"strategy": INTEGER, "status": INTEGER, "answer": nullable(answer)}
        ),
    }
