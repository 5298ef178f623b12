"""Who a delivery is from: the integration a request's token belongs to
(:func:`authenticate`), with its account and the strategy the delivery names.

Each function runs inside a transaction its caller owns. What makes the rows this reads
(the config's users, accounts and integrations, tokens made and revoked) is
:mod:`app.provisioning`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app import schema
from app.sql import Statement, Tx
from app.strategies import STRATEGY_COLUMNS, Strategy
from app.values import value

IntegrationStatus = str


@value
class Integration:
    id: int
    name: str
    status: IntegrationStatus
    account_id: int
    account_name: str
    account_is_sandbox: bool
    account_is_verified: bool
    token_header: str = "x-signalbridge-token"  # noqa: S105 (a header name)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_INTEGRATION_COLUMNS = (
    schema.integrations.c.id,
    schema.integrations.c.name,
    schema.integrations.c.status,
    schema.accounts.c.id,
    schema.accounts.c.name,
    schema.accounts.c.is_sandbox,
    schema.accounts.c.is_verified,
    schema.integrations.c.token_header,
)
_WITH_ACCOUNT = schema.integrations.join(
    schema.accounts, schema.accounts.c.id == schema.integrations.c.account_id
)
# A live token by its digest, with its integration and, when the delivery names one, that
# integration's strategy of that external id: authentication is one statement, and a
# signal of a known strategy needs no statement of its own to find it.
_NAMED_STRATEGY = schema.strategies.c.external_id == bindparam(
    "strategy", type_=schema.strategies.c.external_id.type
)
_LIVE = (
    schema.integration_tokens.c.revoked_at.is_(None),
    schema.integrations.c.status != "deleted",
)
_LIVE_TOKEN = Statement(
    select(*_INTEGRATION_COLUMNS, *STRATEGY_COLUMNS, schema.integration_tokens.c.token_sha256)
    .select_from(
        _WITH_ACCOUNT.join(schema.integration_tokens).outerjoin(
            schema.strategies,
            (schema.strategies.c.integration_id == schema.integrations.c.id) & _NAMED_STRATEGY,
        )
    )
    .where(*_LIVE, schema.integration_tokens.c.token_sha256 == bindparam("digest"))
)
# The headers live tokens arrive in.
_TOKEN_HEADERS = Statement(
    select(schema.integrations.c.token_header)
    .distinct()
    .select_from(schema.integrations.join(schema.integration_tokens))
    .where(*_LIVE)
)
# Where each part of a row of _LIVE_TOKEN begins: the integration's columns end with its
# token's header name; then the strategy's columns (all None when it has none), the digest.
_HEADER_AT = len(_INTEGRATION_COLUMNS) - 1
_STRATEGY_AT = len(_INTEGRATION_COLUMNS)
_TOKEN_AT = _STRATEGY_AT + len(STRATEGY_COLUMNS)
_INTEGRATION = Statement(
    select(*_INTEGRATION_COLUMNS)
    .select_from(_WITH_ACCOUNT)
    .where(schema.integrations.c.id == bindparam("integration_id"))
)


@value
class Authenticated:
    """What a delivery's token check found."""

    integration: Integration | None  # whose live token arrived in its header
    presented: str | None  # the token presented
    strategy: Strategy | None  # the integration's strategy the delivery names, if it exists


class TokenHeaders:
    """The header names live tokens arrive in (each integration's ``token_header``), as this
    process last read them: a delivery's token is looked up by the digest of what arrived
    in one of them. Read again when a delivery's token is not found, so that a header an
    integration made since (here or by another process) counts from its first delivery."""

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()


async def authenticate(
    tx: Tx, headers: Mapping[str, str], *, token_headers: TokenHeaders, strategy: str | None = None
) -> Authenticated:
    """The integration whose live token arrived in its header, the token presented, and the
    integration's strategy of the external id ``strategy`` (as read now; None when there
    is none, or none is named).

    What arrived in each token header is looked up by its SHA-256 digest (an index of the
    digests), so the check costs the same for one integration as for a hundred; the digest
    found is compared again in constant time. A lookup's timing can tell only whether a
    digest is stored, which says nothing of a token not yet known. When no token is found
    the header names are read again, and a header new to this process is looked up too.
    """
    tried = token_headers.names
    found = await _look_up(tx, headers, tried, strategy)
    if found.integration is None:
        # Another delivery may have read them meanwhile: new is new to this one's lookup.
        names = token_headers.names = tuple(await tx.scalars(_TOKEN_HEADERS))
        if any(name in headers and name not in tried for name in names):
            found = await _look_up(tx, headers, names, strategy)
    return found


async def _look_up(
    tx: Tx, headers: Mapping[str, str], names: tuple[str, ...], strategy: str | None
) -> Authenticated:
    found: Integration | None = None
    known: Strategy | None = None
    presented: str | None = None
    for header in names:
        value = headers.get(header)
        if value is None:
            continue
        presented = value
        digest = token_digest(value)
        row = await tx.first(_LIVE_TOKEN, digest=digest, strategy=strategy)
        # The token counts only in its own integration's header.
        if (
            row is not None
            and row[_HEADER_AT] == header
            and hmac.compare_digest(digest, row[_TOKEN_AT])
        ):
            found = Integration(*row[:_STRATEGY_AT])
            named = row[_STRATEGY_AT:_TOKEN_AT]
            known = Strategy(*named) if named[0] is not None else None
    return Authenticated(found, presented, known)


async def integration_by_id(tx: Tx, integration_id: int) -> Integration:
    return Integration(*await tx.one(_INTEGRATION, integration_id=integration_id))


async def set_integration_status(
    connection: AsyncConnection, integration_id: int, status: str, *, now: datetime
) -> None:
    await connection.execute(
        update(schema.integrations)
        .where(schema.integrations.c.id == integration_id)
        .values(status=status, updated_at=now)
    )
