"""The one error tree of Signalbridge.

Every failure the service reports is one of these. Foreign exceptions (the database driver's,
a broker library's) are translated once, at their edge, and re-raised as one of these with
``raise ... from exc``.

::

    SignalbridgeError                  (status, code; answered as {"error", "message"})
    ├── RequestError                   the request itself is wrong; do not retry it unchanged
    │   ├── BodyTooLarge               413: body over the limit
    │   ├── BodyTimeout                408: body not all received within the time limit
    │   ├── UnsupportedMediaType       415: a content type that is not JSON
    │   ├── MalformedBody              400: not JSON, or a schema violation (names the field)
    │   ├── UnsupportedVersion         400: no envelope version this build understands
    │   ├── StaleSignal                422: timestamp too far from now
    │   ├── IdempotencyConflict        422: same dedupe key, different body
    │   ├── InsufficientCash           422: a withdrawal larger than the paper account's cash
    │   ├── Unauthorized               401: operator API key missing or wrong
    │   ├── Forbidden                  403: a read-only key on a write endpoint
    │   ├── NotFound                   404: an operator API resource that does not exist
    │   ├── Conflict                   409: the resource's state does not allow the action
    │   │   └── StrategyPaused         409: a signal for a strategy the operator paused
    │   └── ProviderRefused            502: the signal provider refused a registration (4xx)
    ├── ProtocolError                  a ProQuant typed error: answered with x-proquant-error: 1
    │   ├── InvalidCredentials         401
    │   ├── UnsupportedInstrument      422
    │   ├── InvalidQuantityPrecision   422
    │   ├── QuantityTooLow             422
    │   ├── QuantityTooHigh            422
    │   ├── MarketClosed               422
    │   ├── PositionAlreadyExists      409
    │   ├── PositionNotFound           404
    │   └── InsufficientFunds          422
    ├── BrokerError                    the broker edge
    │   ├── BrokerUnavailable          503: outcome unknown or broker unreachable; retry later
    │   └── OrderRejected              422: the broker refused the order; do not retry unchanged
    └── ProviderUnavailable            503: the signal provider unreachable on every try

A ``ProtocolError`` is final for its event: a redelivery gets the same answer back. A
``BrokerUnavailable`` is transient: the event may be delivered again and is then re-run.
"""

from __future__ import annotations


class SignalbridgeError(Exception):
    """Base of every error the service raises on purpose."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RequestError(SignalbridgeError):
    """The request is wrong as sent; the sender should fix it, not retry it."""

    status_code = 400
    code = "bad_request"


class BodyTooLarge(RequestError):
    """Raised while reading a body that passes the size limit (declared or streamed)."""

    status_code = 413
    code = "body_too_large"


class BodyTimeout(RequestError):
    """Raised while reading a body that has not all arrived within ``body_timeout_seconds``
    of the request's start (a sender stalled, or a slowloris); nothing of it is stored."""

    status_code = 408
    code = "body_timeout"


class UnsupportedMediaType(RequestError):
    """Raised for a content type other than JSON."""

    status_code = 415
    code = "unsupported_media_type"


class MalformedBody(RequestError):
    """Raised for a body that is not JSON, or JSON that breaks the schema."""

    status_code = 400
    code = "malformed_body"


class UnsupportedVersion(RequestError):
    """Raised when the envelope carries no version this build understands.

    The delivery stays stored so that it can be replayed after an upgrade.
    """

    status_code = 400
    code = "unsupported_version"


class StaleSignal(RequestError):
    """Raised for a signal whose timestamp is further than ``max_signal_age`` from now."""

    status_code = 422
    code = "stale_signal"


class IdempotencyConflict(RequestError):
    """Raised when a dedupe key arrives again with a different body."""

    status_code = 422
    code = "idempotency_conflict"


class InsufficientCash(RequestError):
    """Raised for a withdrawal larger than the account's cash."""

    status_code = 422
    code = "insufficient_cash"


class Unauthorized(RequestError):
    """Raised when an operator endpoint gets no API key or a wrong one."""

    status_code = 401
    code = "unauthorized"


class Forbidden(RequestError):
    """Raised when an operator key's scope does not cover the endpoint."""

    status_code = 403
    code = "forbidden"


class Conflict(RequestError):
    """Raised when the resource's state does not allow the action (e.g. replaying an event
    that is done)."""

    status_code = 409
    code = "conflict"


class ProviderRefused(RequestError):
    """The provider answered 4xx to a registration; retrying it unchanged will fail again."""

    status_code = 502
    code = "provider_refused"


class ProviderUnavailable(SignalbridgeError):
    """The provider could not be reached, or answered 429/5xx, on every try; retry later."""

    status_code = 503
    code = "provider_unavailable"


class StrategyPaused(Conflict):
    """A signal arrived for a strategy the operator paused: stored, not executed. Answered
    without ``x-proquant-error`` (the protocol has no type for it): the provider notifies
    its user generically."""

    code = "strategy_paused"


class NotFound(RequestError):
    """Raised when an operator endpoint names something that does not exist."""

    status_code = 404
    code = "not_found"


class ProtocolError(SignalbridgeError):
    """A ProQuant typed error: the provider shows its ``type`` to the user.

    Final for the event: a redelivery gets the stored answer and nothing runs again.
    """

    status_code = 422

    @property
    def type(self) -> str:
        return type(self).__name__


class InvalidCredentials(ProtocolError):
    """No integration, or one that may not send this event, owns the presented token."""

    status_code = 401


class UnsupportedInstrument(ProtocolError):
    """The ticker is not configured (or the broker does not list it)."""


class InvalidQuantityPrecision(ProtocolError):
    """The quantity is not a whole multiple of the instrument's quantity step."""


class QuantityTooLow(ProtocolError):
    """The quantity or its notional is under the instrument's minimum."""


class QuantityTooHigh(ProtocolError):
    """The quantity is over the instrument's or the strategy's maximum."""


class MarketClosed(ProtocolError):
    """The instrument's trading session is closed now."""


class PositionAlreadyExists(ProtocolError):
    """The strategy already has an open position (at most one per strategy)."""

    status_code = 409


class PositionNotFound(ProtocolError):
    """A close arrived for a strategy with no open position."""

    status_code = 404


class InsufficientFunds(ProtocolError):
    """The account's free funds, or the strategy's allocation, cannot carry the order."""


class BrokerError(SignalbridgeError):
    """Raised at the broker edge."""

    status_code = 502
    code = "broker_error"


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached, or the outcome of an order is unknown.

    Transient: the order intent stays for reconciliation; the provider may deliver again.
    """

    status_code = 503
    code = "broker_unavailable"


class OrderRejected(BrokerError):
    """The broker refused the order; retrying it unchanged will fail again."""

    status_code = 422
    code = "order_rejected"
