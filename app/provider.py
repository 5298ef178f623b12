"""The provider client: asks ProQuant to create an Integration request for one user.

``POST {base_url}/api/integrations/v1/integrations``; the integration stays pending until the
provider's ``INTEGRATION_APPROVED`` event reaches the webhook (see :mod:`app.receiver`).
Transport errors (timeouts included), 429 and 5xx are retried, ``attempts`` tries in all, with
exponential backoff (a 429's numeric ``Retry-After`` wins, capped at 30 s). httpx's errors are
translated here, once, into :class:`~app.errors.ProviderRefused` (4xx: fix, do not retry
unchanged) and :class:`~app.errors.ProviderUnavailable` (unreachable, timed out, 429 or 5xx on
every try: retry later).

The webhook headers carry the integration's token: no log line, exception message or
``repr(Registration)`` ever shows them.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import field
from typing import Any, Self

import httpx

from app.errors import ProviderRefused, ProviderUnavailable
from app.values import value

log = logging.getLogger(__name__)

REGISTRATION_PATH = "/api/integrations/v1/integrations"
MAX_RETRY_AFTER_SECONDS = 30.0
MAX_MESSAGE_LENGTH = 300


@value
class Registration:
    """One Integration request, as the protocol defines it."""

    name: str
    description: str
    image_url: str
    user_email: str
    webhook_url: str
    webhook_headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    def to_body(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "imageUrl": self.image_url,
            "userEmail": self.user_email,
            "webhook": {"url": self.webhook_url, "headers": dict(self.webhook_headers)},
        }


@value
class RegistrationResult:
    """The provider's acceptance: its status and its JSON object (None if empty or not one)."""

    status_code: int
    answer: dict[str, Any] | None


class ProviderClient:
    """Registers integrations with the provider over one ``httpx.AsyncClient``."""

    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_seconds: float = 5.0,
        attempts: int = 3,
        backoff_seconds: float = 0.5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._attempts = attempts
        self._backoff_seconds = backoff_seconds
        self._sleep = sleep
        self._client = httpx.AsyncClient(
            base_url=base_url, transport=transport, timeout=timeout_seconds
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def register(self, registration: Registration) -> RegistrationResult:
        """Create the integration request; it stays pending until the user approves it."""
        secrets = [value for value in registration.webhook_headers.values() if value]
        body = registration.to_body()
        for attempt in range(1, self._attempts + 1):
            response: httpx.Response | None = None
            cause: httpx.TransportError | None = None
            try:
                response = await self._client.post(REGISTRATION_PATH, json=body)
            except httpx.TransportError as exc:
                cause, failure = exc, _redact(f"{type(exc).__name__}: {exc}", secrets)
            else:
                status = response.status_code
                if response.is_success:
                    return RegistrationResult(status_code=status, answer=_json_object(response))
                if status != 429 and status < 500:
                    raise ProviderRefused(_refusal(response, secrets))
                failure = f"HTTP {status}"
            if attempt == self._attempts:
                message = f"provider unavailable after {attempt} attempts (last: {failure})"
                raise ProviderUnavailable(message) from cause
            delay = self._delay(attempt, response)
            log.warning("provider attempt %d failed (%s); retry in %.1f s", attempt, failure, delay)
            await self._sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        """Exponential backoff, or a 429's numeric ``Retry-After`` (capped) when it has one."""
        backoff = float(self._backoff_seconds * 2 ** (attempt - 1))
        if response is None or response.status_code != 429:
            return backoff
        try:
            seconds = float(response.headers.get("retry-after", ""))
        except ValueError:  # absent, or an HTTP date
            return backoff
        return min(seconds, MAX_RETRY_AFTER_SECONDS) if 0 <= seconds < math.inf else backoff


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        answer = response.json()
    except ValueError:  # empty, not JSON, or not UTF-8
        return None
    return answer if isinstance(answer, dict) else None


def _refusal(response: httpx.Response, secrets: list[str]) -> str:
    """The refusal with the provider's own words: its JSON ``message``, or its text."""
    message = (_json_object(response) or {}).get("message")
    text = message if isinstance(message, str) else response.text
    text = _redact(text, secrets)[:MAX_MESSAGE_LENGTH]
    return f"provider refused the registration ({response.status_code}): {text}"


def _redact(text: str, secrets: list[str]) -> str:
    """The provider may echo the request back; never let a webhook header value through."""
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text
