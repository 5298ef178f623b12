"""The column types that keep money and time exact in both databases: ``ExactDecimal``
(a ``Decimal`` without loss, a float refused) and ``UTCDateTime`` (an aware UTC datetime,
a naive one refused)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, Dialect, String
from sqlalchemy.dialects.postgresql import NUMERIC
from sqlalchemy.types import TypeDecorator, TypeEngine


class ExactDecimal(TypeDecorator[Decimal]):
    """A ``Decimal`` stored without loss: ``NUMERIC`` (unbounded) on PostgreSQL, its exact
    text on SQLite, whose ``NUMERIC`` affinity would round past 15 significant digits.

    Binding a float is refused: floats never touch money.
    """

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(NUMERIC())
        return dialect.type_descriptor(String())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        process = self.bind_processor(dialect)
        return process(value) if process is not None else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(value)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """:meth:`process_bind_param` itself, without SQLAlchemy's wrapper around it: a
        delivery binds a few dozen amounts."""
        return _decimal_for_postgres if dialect.name == "postgresql" else _decimal_text

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        """PostgreSQL's driver gives Decimals already; SQLite's text becomes one."""
        if dialect.name == "postgresql":
            return None
        return _decimal_or_none


def _decimal_or_none(value: Any) -> Decimal | None:
    return None if value is None else Decimal(value)


def _exact(value: Any) -> Decimal:
    if not isinstance(value, Decimal):
        raise TypeError(f"money and quantities must be Decimal, not {type(value).__name__}")
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {value}")
    return value


def _decimal_text(value: Any) -> str | None:
    if value is None:
        return None
    if type(value) is Decimal and value.is_finite():  # the usual case, without a call
        return str(value)
    return str(_exact(value))


def _decimal_for_postgres(value: Any) -> Decimal | None:
    return None if value is None else _exact(value)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime in both databases (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("datetimes must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite, the text SQLAlchemy's DATETIME stores (``YYYY-MM-DD HH:MM:SS.ffffff``)
        written in one step: its own processor formats through a dict, several times
        slower, and a delivery binds a dozen datetimes."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        return _sqlite_datetime


def _sqlite_datetime(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not UTC:  # the clock's own zone needs no conversion
        if value.tzinfo is None:
            raise ValueError("datetimes must be timezone-aware")
        value = value.astimezone(UTC)
    # isoformat(" ", "microseconds") without the offset, in 60 % of its time: isoformat
    # goes through C's sprintf and formats the zone's offset; an f-string takes longer.
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
    )
