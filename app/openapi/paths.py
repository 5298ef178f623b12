"""The OpenAPI document's paths for the probes, the webhook and what operators read (lists,
books, the event log, each with its live stream)."""

from __future__ import annotations

from app.openapi.shapes import (
    ANY,
    DATETIME,
    DIGITS,
    ERRORS,
    INTEGER,
    NAME,
    RESUME,
    STRING,
    Schema,
    array_of,
    id_parameter,
    json_answer,
    list_answer,
    object_of,
    operation,
    parameter,
    ref,
)


def probes() -> Schema:
    readiness = object_of(
        {
            "database": STRING,
            "accounts": {
                "type": "object",
                "additionalProperties": {"type": "string", "enum": ["ready", "reconciling"]},
            },
        }
    )
    health = object_of({"status": {"type": "string", "enum": ["ok"]}})
    metrics = {"description": "Prometheus' text format.", "content": {"text/plain": {}}}
    spec = json_answer({"type": "object"}, "This document.")
    return {
        "/healthz": {
            "get": operation("healthz", "Alive.", {200: json_answer(health, "Alive.")}, scope=None)
        },
        "/readyz": {
            "get": operation(
                "readyz",
                "Ready: the database answers and every account is reconciled.",
                {200: json_answer(readiness, "Ready."), 503: json_answer(readiness, "Not ready.")},
                scope=None,
            )
        },
        "/metrics": {"get": operation("metrics", "Prometheus metrics.", {200: metrics})},
        "/api/openapi.json": {
            "get": operation("openapi", "This document (no key).", {200: spec}, scope=None)
        },
    }


def webhook() -> Schema:
    flag = {"schema": {"type": "string", "enum": ["1"]}, "description": "Set on typed errors."}
    either = {"oneOf": [ref("TypedError"), ref("Error")]}

    def answer(schema_: Schema, description: str) -> Schema:
        return {**json_answer(schema_, description), "headers": {"x-proquant-error": flag}}

    key = {"type": "string", "minLength": 1, "maxLength": 200}
    operation = {
        "operationId": "proquantWebhook",
        "summary": "The ProQuant provider's webhook: one event, answered exactly once; a"
        " redelivery gets the stored answer.",
        "security": [{"integrationToken": []}],
        "parameters": [
            parameter("Idempotency-Key", "header", key, "The event's dedupe key, if sent."),
            parameter("webhook-id", "header", key, "The dedupe key, if no Idempotency-Key."),
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ref("Envelope")}},
        },
        "responses": {
            "200": {"description": "Accepted: executed, recorded or ignored; no body."},
            "400": json_answer(ref("Error"), "malformed_body or unsupported_version."),
            "401": answer(ref("TypedError"), "InvalidCredentials."),
            "404": answer(ref("TypedError"), "PositionNotFound."),
            "409": answer(either, "PositionAlreadyExists, or strategy_paused."),
            "408": json_answer(ref("Error"), ERRORS[408]),
            "413": json_answer(ref("Error"), ERRORS[413]),
            "415": json_answer(ref("Error"), "A content type other than JSON."),
            "422": answer(
                either, "A typed refusal, or stale_signal, idempotency_conflict, order_rejected."
            ),
            "503": json_answer(ref("Error"), "broker_unavailable: deliver the event again later."),
        },
    }
    return {"/webhooks/proquant": {"post": operation}}


def reads() -> Schema:
    text = parameter
    events = (
        text("limit", "query", {"type": "string", "pattern": DIGITS, "default": "100"}, "1-1000."),
        text("type", "query", STRING),
        text("state", "query", STRING),
        text("strategy", "query", STRING, "The provider's strategy id."),
        text("since", "query", DATETIME, "Received at or after; needs a time zone."),
        text("until", "query", DATETIME, "Received before; needs a time zone."),
    )
    book = json_answer(ref("Book"), "The account's book, derived from its journal.")
    action = object_of({"event": INTEGER, "status": INTEGER, "answer": ANY})
    return {
        "/api/positions": {
            "get": operation(
                "listPositions",
                "Positions in id order.",
                {200: list_answer("positions", ref("Position"), "Positions.")},
                (400,),
                parameters=(
                    text("status", "query", STRING),
                    text("strategy", "query", STRING),
                    *RESUME,
                ),
            )
        },
        "/api/orders": {
            "get": operation(
                "listOrders",
                "Orders with their fills, in id order (the first 100).",
                {200: list_answer("orders", ref("Order"), "Orders.")},
                (400,),
                parameters=RESUME,
            )
        },
        "/api/accounts/{name}/book": {
            "get": operation(
                "accountBook", "An account's book.", {200: book}, (404,), parameters=(NAME,)
            )
        },
        "/api/accounts/{name}/ledger": {
            "get": operation(
                "accountLedger",
                "An account's ledger transactions with their postings (the first 100).",
                {200: list_answer("ledger", ref("LedgerTransaction"), "Ledger transactions.")},
                (400, 404),
                parameters=(NAME, *RESUME),
            )
        },
        "/api/events": {
            "get": operation(
                "listEvents",
                "Deliveries, latest first.",
                {200: list_answer("events", ref("EventSummary"), "Deliveries.")},
                (400,),
                parameters=(*events, *RESUME),
            )
        },
        "/api/events/{id}": {
            "get": operation(
                "getEvent",
                "One delivery with everything stored about it.",
                {200: json_answer(ref("Event"), "The delivery.")},
                (400, 404),
                parameters=(id_parameter("event"),),
            )
        },
        "/api/events/{id}/replay": {
            "post": operation(
                "replayEvent",
                "Run a stored event again (answered 503, or of a version not understood).",
                {200: json_answer(action, "What the event answered this time.")},
                (400, 404, 409),
                scope="write",
                parameters=(id_parameter("event"),),
            )
        },
        "/api/instruments": {
            "get": operation(
                "listInstruments",
                "Instruments with their rules, session and quotes.",
                {
                    200: json_answer(
                        object_of({"instruments": array_of(ref("Instrument"))}), "Instruments."
                    )
                },
            )
        },
        "/api/versions": {
            "get": operation(
                "deprecatedVersions",
                "Envelope versions in use that the provider dated for deprecation.",
                {
                    200: json_answer(
                        object_of({"deprecated_versions": array_of(ref("VersionWarning"))}), ""
                    )
                },
            )
        },
    }
