"""The OpenAPI 3.0.3 document of the service, served at ``GET /api/openapi.json``.

:func:`document` builds it as plain dicts on each call (nothing at import but constants).
Response shapes follow :mod:`app.queries`, their field types the columns of
:mod:`app.schema`: decimals are JSON strings (exact), datetimes ISO 8601 with a zone. Request
bodies mirror the pydantic models of :mod:`app.admin` and :mod:`app.protocol`; path and query
parameters are described as the endpoints validate them. ``tests/test_openapi.py`` checks that
every route is here and nothing else is, and fuzzes the live service from this document.

Its parts: :mod:`.shapes` (the building blocks: types, objects, operations, parameters),
:mod:`.paths` (the probes, the webhook and what operators read), :mod:`.writes` (what
operators change) and :mod:`.components` (the named schemas every part refers to).
"""

from __future__ import annotations

from importlib.metadata import version

from starlette.requests import Request
from starlette.responses import Response

from app.openapi.components import error_schemas, request_schemas, response_schemas
from app.openapi.paths import probes, reads, webhook
from app.openapi.shapes import Schema
from app.openapi.writes import writes
from app.responses import JSON
from app.settings import Settings


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
        "paths": {**probes(), **webhook(), **reads(), **writes()},
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
            "schemas": {**error_schemas(), **request_schemas(), **response_schemas()},
        },
    }


async def endpoint(request: Request) -> Response:
    """``GET /api/openapi.json``. No key needed: it is documentation, and shows no data."""
    return JSON(document(request.state.services.settings))
