"""What the receiver decides about a delivery from the delivery alone: whether its media type
is JSON, whether its integration may send it, its dedupe key, the details stored beside its
raw body, and the answer an error gets. Pure functions: :mod:`app.receiver` runs them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from app import directory, inbox
from app.errors import (
    InvalidCredentials,
    ProtocolError,
    SignalbridgeError,
    UnsupportedMediaType,
)
from app.protocol import SIGNAL_TYPES, ParsedEvent, header_dedupe_key

IDEMPOTENCY_HEADERS = ("idempotency-key", "webhook-id")


def answer_for(error: SignalbridgeError) -> inbox.Answer:
    """The HTTP answer for an error: typed (with ``x-proquant-error``) or generic."""
    if isinstance(error, ProtocolError):
        body = {"type": error.type, "message": error.message}
        return inbox.Answer(error.status_code, json_body(body), typed=True, error_type=error.type)
    body = {"error": error.code, "message": error.message}
    return inbox.Answer(error.status_code, json_body(body), error_type=error.code)


def json_body(value: object) -> bytes:
    """``value`` as compact JSON bytes: an answer's body, or an operator event's."""
    return json.dumps(value, separators=(",", ":")).encode()


def sha256(raw_body: bytes) -> str:
    """The hex digest a delivery is stored and compared by (a repeat's body must match)."""
    return hashlib.sha256(raw_body).hexdigest()


def check_content_type(content_type: str | None) -> None:
    """Refuse (415) a declared media type that is not JSON; none declared is accepted."""
    if content_type is None:
        return
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(f"send application/json, not {media_type or 'nothing'}")


def credentials_error(
    parsed: ParsedEvent, integration: directory.Integration | None
) -> InvalidCredentials | None:
    """Why this integration may not send this event, or None: a signal needs an approved
    integration and a sandbox or verified account; other events only the token's owner."""
    if integration is None:
        return InvalidCredentials("no integration owns the token sent with this event")
    if parsed.event.type not in SIGNAL_TYPES:
        return None
    if integration.status != "approved":
        return InvalidCredentials(f"the integration is {integration.status}, not approved")
    if not integration.account_is_sandbox and not integration.account_is_verified:
        return InvalidCredentials(
            f"the production account {integration.account_name} is not verified yet"
        )
    return None


def details_of(
    parsed: ParsedEvent | None, integration: directory.Integration | None
) -> inbox.Details:
    """What the inbox stores beside the raw body, as far as the delivery was understood."""
    integration_id = integration.id if integration else None
    if parsed is None:
        return inbox.Details(integration_id=integration_id)
    return inbox.Details(
        integration_id=integration_id,
        version=parsed.version,
        deprecation=parsed.deprecation,
        event_type=parsed.event.type,
        strategy_external_id=parsed.strategy_id,
        provider_position_id=parsed.provider_position_id,
    )


def dedupe_key(parsed: ParsedEvent, integration_id: int, headers: Mapping[str, str]) -> str:
    """The delivery's own idempotency header if it sent one, else the event's identity."""
    for name in IDEMPOTENCY_HEADERS:
        value = headers.get(name)
        if value is not None:
            return header_dedupe_key(integration_id, value)
    return parsed.dedupe_key(integration_id)
