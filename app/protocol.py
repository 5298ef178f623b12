"""The ProQuant integration protocol: the versioned envelope and the v1 event.

An envelope carries one event in every version the provider supports::

    {"v1": {"deprecation": null | "<ISO date>", "event": {...}}, "v2": {...}}

:func:`parse_envelope` picks the newest version this build understands (``v1`` today),
records which and its deprecation date, and validates the event. JSON numbers are read as
``Decimal`` (a float never appears), ``NaN``/``Infinity`` and duplicate keys are refused.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.errors import MalformedBody, UnsupportedVersion
from app.values import value

SUPPORTED_VERSIONS = ("v1",)
SIGNAL_TYPES = frozenset({"SIGNAL_OPEN", "SIGNAL_CLOSE", "SIGNAL_REOPEN"})
STRATEGY_TYPES = frozenset({"STRATEGY_ENABLED", "STRATEGY_DISABLED"})
INTEGRATION_TYPES = frozenset(
    {"INTEGRATION_APPROVED", "INTEGRATION_REJECTED", "INTEGRATION_DELETED"}
)
_VERSION_KEY = re.compile(r"v(\d+)")
ModelT = TypeVar("ModelT", bound=BaseModel)
MAX_TIMESTAMP = 2**53  # milliseconds: far past any real date, and exact as a float


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")


class Webhook(_Model):
    url: str | None = None
    headers: dict[str, Any] | None = None


class IntegrationInfo(_Model):
    name: str | None = None
    description: str | None = None
    imageUrl: str | None = None
    webhook: Webhook | None = None


class StrategyRef(_Model):
    id: str = Field(min_length=1, max_length=200)
    name: str = Field(default="", max_length=500)


class StrategyData(StrategyRef):
    pass


class SignalData(_Model):
    direction: Literal["BUY", "SELL"]
    ticker: str = Field(min_length=1, max_length=64)
    quantity: Decimal = Field(gt=0, allow_inf_nan=False, max_digits=30, decimal_places=18)
    strategy: StrategyRef
    proquantPositionId: str = Field(min_length=1, max_length=200)

    @field_validator("quantity", mode="before")
    @classmethod
    def _number_only(cls, value: Any) -> Any:
        return _json_number(value)


class EventV1(_Model):
    timestamp: int = Field(ge=0, le=MAX_TIMESTAMP, description="Unix time in milliseconds")
    type: str = Field(min_length=1, max_length=64)
    integration: IntegrationInfo | None = None
    data: Any = None

    @field_validator("timestamp", mode="before")
    @classmethod
    def _number_only(cls, value: Any) -> Any:
        return _json_number(value)


def _json_number(value: Any) -> Any:
    """A JSON number, not a string or a boolean that pydantic would read as one."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError("must be a JSON number")
    return value


class _VersionV1(_Model):
    deprecation: str | None = Field(default=None, max_length=64)
    event: EventV1


@value
class ParsedEvent:
    version: str
    deprecation: str | None
    event: EventV1
    signal: SignalData | None = None
    strategy: StrategyData | None = None

    @property
    def strategy_id(self) -> str | None:
        if self.signal is not None:
            return self.signal.strategy.id
        return self.strategy.id if self.strategy is not None else None

    @property
    def provider_position_id(self) -> str | None:
        return self.signal.proquantPositionId if self.signal is not None else None

    def dedupe_key(self, integration_id: int) -> str:
        """v1 has no event id: the key is (integration, type, strategy, position, timestamp)."""
        parts = (
            str(integration_id),
            self.event.type,
            self.strategy_id or "",
            self.provider_position_id or "",
            str(self.event.timestamp),
        )
        return "|".join(parts)


def header_dedupe_key(integration_id: int, header_value: str) -> str:
    """The key when the delivery names its own (``Idempotency-Key`` or ``webhook-id``)."""
    if not header_value or len(header_value) > 200:
        raise MalformedBody("the idempotency key header must be 1 to 200 characters")
    return f"{integration_id}|key|{header_value}"


def load_json(raw: bytes) -> Any:
    """Strict JSON: numbers as Decimal, no NaN/Infinity, no duplicate keys, no NUL
    characters (no database text column can hold them)."""
    # A NUL raw or as JSON's escape (\U0000 is no JSON, but is refused as one all the same),
    # searched as plain bytes: a regular expression's scan was 1 % of a delivery's work.
    # find, not ``in``: bytes' ``in`` first tries its operand as an integer, and raises and
    # clears a TypeError for every search.
    if raw.find(b"\x00") >= 0 or raw.find(b"\\u0000") >= 0 or raw.find(b"\\U0000") >= 0:
        raise MalformedBody("the body contains a NUL character")
    try:
        # What json.loads does with bytes, on a decoder made once (json.loads with these
        # arguments makes a new decoder, and its scanner, for every body).
        return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except RecursionError:
        raise MalformedBody("the body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):  # the rare case: find the key that came twice
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return result


_DECODER = json.JSONDecoder(
    parse_float=Decimal, parse_constant=_refuse_constant, object_pairs_hook=_refuse_duplicates
)


def parse_envelope(raw: bytes) -> ParsedEvent:
    document = load_json(raw)
    if not isinstance(document, dict):
        raise MalformedBody("the body must be a JSON object keyed by version (v1, v2, ...)")
    offered = sorted(
        (int(match.group(1)), key) for key in document if (match := _VERSION_KEY.fullmatch(key))
    )
    understood = [key for _, key in reversed(offered) if key in SUPPORTED_VERSIONS]
    if not understood:
        names = ", ".join(key for _, key in offered) or "none"
        raise UnsupportedVersion(
            f"no version this build understands (offered: {names}; "
            f"understood: {', '.join(SUPPORTED_VERSIONS)})"
        )
    version = understood[0]
    envelope = _validate(_VersionV1, document[version], prefix=version)
    event = envelope.event
    signal = strategy = None
    if event.type in SIGNAL_TYPES:
        signal = _validate(SignalData, event.data, prefix=f"{version}.event.data")
    elif event.type in STRATEGY_TYPES:
        strategy = _validate(StrategyData, event.data, prefix=f"{version}.event.data")
    return ParsedEvent(
        version=version,
        deprecation=envelope.deprecation,
        event=event,
        signal=signal,
        strategy=strategy,
    )


def _validate(model: type[ModelT], value: Any, *, prefix: str) -> ModelT:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join([prefix, *(str(part) for part in first["loc"])])
        raise MalformedBody(f"{where}: {first['msg']}") from None
