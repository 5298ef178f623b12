"""The OpenAPI document's building blocks: the types of values (decimals as exact strings,
datetimes with a zone), objects, a column's schema from its type, parameters, and an
operation with the error answers its key and body limits add."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Column, Integer, Table

from app.admin import MAX_KEY_LENGTH
from app.api import MAX_ID, Scope
from app.columns import ExactDecimal, UTCDateTime

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


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def object_of(properties: Schema, *, optional: tuple[str, ...] = (), closed: bool = True) -> Schema:
    required = [name for name in properties if name not in optional]
    result: Schema = {"type": "object", "properties": properties}
    if required:
        result["required"] = required
    if closed:
        result["additionalProperties"] = False
    return result


def nullable(base: Schema) -> Schema:
    return {**base, "nullable": True}


def array_of(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def column_schema(column: Column[Any]) -> Schema:
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
    return nullable(base) if column.nullable else dict(base)


def columns(table: Table, names: str = "", **renamed: str) -> Schema:
    """Properties for ``table``'s columns: ``names`` as they are, ``renamed`` as label=name."""
    pairs = [(name, name) for name in names.split()] + list(renamed.items())
    return {label: column_schema(table.c[name]) for label, name in pairs}


def row(table: Table, **extra: Schema) -> Schema:
    """Every column of ``table`` (``select(table)``), plus ``extra`` fields."""
    return object_of({**{column.name: column_schema(column) for column in table.c}, **extra})


def json_answer(schema_: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema_}}}


def operation(
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
        responses[str(status)] = json_answer(ref("Error"), ERRORS[status])
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


def parameter(name: str, where: str, schema_: Schema, description: str = "") -> Schema:
    result: Schema = {"name": name, "in": where, "required": where == "path", "schema": schema_}
    if description:
        result["description"] = description
    return result


def id_parameter(what: str) -> Schema:
    schema_ = {"type": "string", "pattern": DIGITS, "maxLength": 10}
    return parameter("id", "path", schema_, f"The {what} id, at most {MAX_ID}.")


NAME = parameter("name", "path", STRING)
IDEMPOTENCY_KEY = parameter(
    "Idempotency-Key",
    "header",
    {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
    "A retry with the same key is answered, not repeated.",
)
RESUME = (
    parameter("Last-Event-ID", "header", {"type": "string", "pattern": DIGITS}, "Streams only."),
    parameter("last_event_id", "query", {"type": "string", "pattern": DIGITS}, "Streams only."),
)


def list_answer(key: str, item: Schema, description: str) -> Schema:
    """A list endpoint's 200: ``{key: [item]}`` as JSON, or its live stream."""
    answer = json_answer(object_of({key: array_of(item)}), description + SSE)
    answer["content"]["text/event-stream"] = {"schema": STRING}
    return answer
