"""JSON for the operator API and the CLI: decimals as strings (exact), datetimes as ISO 8601.
Every error answers in one shape: ``{"error": <code>, "message": <for a person>}``."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from starlette.responses import Response

from app.errors import SignalbridgeError


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")  # never exponent notation
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def to_json(value: Any, *, indent: int | None = None) -> str:
    return json.dumps(value, default=_default, indent=indent, ensure_ascii=False)


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return to_json(content).encode()


def error_response(error: SignalbridgeError) -> JSON:
    return JSON({"error": error.code, "message": error.message}, status_code=error.status_code)
