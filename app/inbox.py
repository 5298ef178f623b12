"""The inbox: every delivery that passes the size limit, stored with its answer.

A delivery row is written before anything executes. The first delivery of a dedupe key
claims it (a partial unique index over first deliveries); a repeat is stored as a duplicate
of the first and gets the first's stored answer. States of a first delivery:

==============  =============================================================
``pending``     claimed and running by worker ``worker_id`` (or interrupted: once that
                worker is gone, reconciliation makes it ``retryable``)
``done``        answered 200 after doing what the event asked
``ignored``     answered 200; nothing to do (an unknown or irrelevant type)
``failed``      answered with an error that is final for this event
``retryable``   answered 503 (broker unreachable, or interrupted); a redelivery runs it again
``duplicate``   a repeat of another delivery (``duplicate_of``)
==============  =============================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Insert, Select, bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from app import errors, schema, sql
from app.sql import Tx
from app.values import value
from app.workers import Worker

State = Literal["pending", "done", "ignored", "failed", "retryable", "duplicate"]
FINAL_STATES = frozenset({"done", "ignored", "failed", "retryable", "duplicate"})


@value
class Answer:
    status: int
    body: bytes = b""
    typed: bool = False
    error_type: str | None = None


OK = Answer(200)


@value
class Delivery:
    """What arrived, before any of it is trusted."""

    raw_body: bytes
    body_sha256: str
    content_type: str | None
    received_at: datetime


@value
class Details:
    """What parsing and authentication learned about a delivery."""

    integration_id: int | None = None
    version: str | None = None
    deprecation: str | None = None
    event_type: str | None = None
    strategy_external_id: str | None = None
    provider_position_id: str | None = None


@value
class Stored:
    id: int
    state: str
    body_sha256: str
    answer: Answer | None


async def store(
    tx: Tx,
    delivery: Delivery,
    details: Details,
    *,
    dedupe_key: str | None,
    answer: Answer | None = None,
    duplicate_of: int | None = None,
    worker_id: int | None = None,
) -> int | None:
    """Insert the delivery, stored by (and, when pending, claimed for) ``worker_id``.
    With a dedupe key already claimed, insert nothing and return None; the caller stores
    it again as a duplicate."""
    state: State = "duplicate" if duplicate_of is not None else "pending"
    values: dict[str, object] = {
        "received_at": delivery.received_at,
        "raw_body": delivery.raw_body,
        "body_sha256": delivery.body_sha256,
        "content_type": delivery.content_type,
        "dedupe_key": dedupe_key,
        "duplicate_of": duplicate_of,
        "integration_id": details.integration_id,
        "version": details.version,
        "deprecation": details.deprecation,
        "event_type": details.event_type,
        "strategy_external_id": details.strategy_external_id,
        "provider_position_id": details.provider_position_id,
        "state": state,
        "worker_id": worker_id,
    }
    if answer is None and dedupe_key is not None and duplicate_of is None:
        # The claim: nothing inserted (no id) when the key's first delivery exists.
        event_id = await tx.scalar(_CLAIM, **values)
        return None if event_id is None else int(event_id)
    final: State = "duplicate" if duplicate_of is not None else "failed"
    if answer is not None:
        values |= _answer_values(answer, state=final, now=delivery.received_at)
    return await sql.insert_id(tx, schema.events, **values)


_STORE_COLUMNS = (
    "received_at",
    "raw_body",
    "body_sha256",
    "content_type",
    "dedupe_key",
    "duplicate_of",
    "integration_id",
    "version",
    "deprecation",
    "event_type",
    "strategy_external_id",
    "provider_position_id",
    "state",
    "worker_id",
)


def _claim(dialect: str) -> Insert:
    table = schema.events
    module = postgresql if dialect == "postgresql" else sqlite
    values = {name: bindparam(name, type_=table.c[name].type) for name in _STORE_COLUMNS}
    claim: Insert = (
        module.insert(table)
        .values(values)
        .on_conflict_do_nothing(index_elements=["dedupe_key"], index_where=schema.FIRST_DELIVERY)
    )
    return claim


_CLAIM = sql.returning_id(_claim, schema.events)


def _stored_columns() -> Select[Any]:
    table = schema.events
    return select(
        table.c.id,
        table.c.state,
        table.c.body_sha256,
        table.c.answer_status,
        table.c.answer_body,
        table.c.error_type,
    )


_FIRST = sql.Statement(
    _stored_columns().where(
        schema.events.c.dedupe_key == bindparam("dedupe_key"), schema.FIRST_DELIVERY
    )
)
_LOAD = sql.Statement(_stored_columns().where(schema.events.c.id == bindparam("event_id")))


async def first_delivery(tx: Tx, dedupe_key: str) -> Stored | None:
    """The first delivery of a key; None when it is not committed yet (on SQLite its
    claim may still wait in the open batch)."""
    row = await tx.first(_FIRST, dedupe_key=dedupe_key)
    return None if row is None else _stored(row)


async def load(tx: Tx, event_id: int) -> Stored:
    return _stored(await tx.one(_LOAD, event_id=event_id))


@value
class Replayable:
    id: int
    state: str
    error_type: str | None
    raw_body: bytes
    integration_id: int | None
    dedupe_key: str | None
    duplicate_of: int | None


_REPLAYABLE = sql.Statement(
    select(
        schema.events.c.id,
        schema.events.c.state,
        schema.events.c.error_type,
        schema.events.c.raw_body,
        schema.events.c.integration_id,
        schema.events.c.dedupe_key,
        schema.events.c.duplicate_of,
    ).where(schema.events.c.id == bindparam("event_id"))
)


async def replayable(tx: Tx, event_id: int) -> Replayable | None:
    row = await tx.first(_REPLAYABLE, event_id=event_id)
    return None if row is None else Replayable(*row)


_RERUN = sql.Statement(
    update(schema.events)
    .where(schema.events.c.id == bindparam("event_id"), schema.events.c.state == "retryable")
    .values(state="pending", worker_id=bindparam("worker_id"))
)


async def rerun(tx: Tx, event_id: int, *, worker_id: int) -> bool:
    """Take a ``retryable`` event back to ``pending``, claimed for ``worker_id``; False if
    another delivery did first."""
    return await tx.run(_RERUN, event_id=event_id, worker_id=worker_id) == 1


async def finish(
    tx: Tx,
    event_id: int,
    answer: Answer,
    *,
    state: State,
    now: datetime,
    note: str | None = None,
    timings: dict[str, float] | None = None,
) -> None:
    values = _answer_values(answer, state=state, now=now)
    if note is not None:
        values["note"] = note
    if timings is not None:
        values["timings"] = _timings_text(timings)
    await sql.update_row(tx, schema.events, event_id, **values)


@dataclass(slots=True)
class AnswerWithFill:
    """A delivery's answer, 200 and ``done``, for its last write to store: its last fill,
    in the fill's one statement (PostgreSQL: :func:`app.reports.apply_new_fill`) or in the
    block that writes the report row by row (:meth:`app.execution.Execution.execute`, which
    sets ``stored``). The answer is then committed with the fill, and takes no statement
    (and on PostgreSQL no round trip) of its own. ``notes`` and ``timings`` are the run's
    own, written as they are then (the fill's ``commit_ms`` is not yet among them)."""

    event_id: int
    notes: list[str]
    timings: dict[str, float]
    stored: bool = False

    def values(self, now: datetime) -> dict[str, object]:
        """The event row's values as :func:`finish` writes them (a None note leaves the
        row's own)."""
        return _answer_values(OK, state="done", now=now) | {
            "event_id": self.event_id,
            "note": self._note(),
            "timings": _timings_text(self.timings),
        }

    async def store(self, tx: Tx, *, now: datetime) -> None:
        """Write the answer in ``tx``, the block that writes the fill row by row."""
        await finish(
            tx, self.event_id, OK, state="done", now=now, note=self._note(), timings=self.timings
        )

    def _note(self) -> str | None:
        return "; ".join(self.notes) or None


def _timings_text(timings: dict[str, float]) -> str:
    return json.dumps({k: round(v, 3) for k, v in timings.items()})


async def interrupt(
    connection: AsyncConnection, worker: Worker, answer: Answer, *, now: datetime
) -> list[int]:
    """Make the deliveries that gone workers left ``pending`` (a crash) ``retryable``,
    answered ``answer``; a live process's running deliveries are not touched. Returns
    their ids."""
    table = schema.events
    owners = set(
        (
            await connection.execute(
                select(table.c.worker_id).where(table.c.state == "pending").distinct()
            )
        ).scalars()
    )
    gone = await worker.gone(connection, owners)
    if not gone:
        return []
    ids = [owner for owner in gone if owner is not None]
    owned_by_gone: ColumnElement[bool] = table.c.worker_id.in_(ids)
    if None in gone:
        owned_by_gone = or_(owned_by_gone, table.c.worker_id.is_(None))
    # The owner's state is checked again by the UPDATE: a delivery another worker claimed
    # meanwhile (inbox.rerun) is that worker's now.
    result = await connection.execute(
        update(table)
        .where(table.c.state == "pending", owned_by_gone)
        .values(**_answer_values(answer, state="retryable", now=now))
        .returning(table.c.id)
    )
    return sorted(result.scalars())


def _answer_values(answer: Answer, *, state: State, now: datetime) -> dict[str, object]:
    return {
        "state": state,
        "answer_status": answer.status,
        "answer_body": answer.body.decode() if answer.body else "",
        "error_type": answer.error_type,
        "answered_at": now,
    }


def _stored(row: tuple[object, ...]) -> Stored:
    event_id, state, body_sha256, status, body, error_type = row
    answer = None
    if status is not None:
        answer = Answer(
            status=int(str(status)),
            body=str(body or "").encode(),
            typed=error_type is not None and _is_protocol_type(str(error_type)),
            error_type=None if error_type is None else str(error_type),
        )
    return Stored(
        id=int(str(event_id)), state=str(state), body_sha256=str(body_sha256), answer=answer
    )


def _is_protocol_type(error_type: str) -> bool:
    candidate = getattr(errors, error_type, None)
    return isinstance(candidate, type) and issubclass(candidate, errors.ProtocolError)
