"""Sending persisted order intents to the broker, and settling what they became.

Every broker call is bounded by ``broker_timeout_seconds``. When a submit fails with an
unknown outcome (timeout, unreachable), the order is never resubmitted blindly: it is looked
up by its client order id first. Found: it is applied as the broker reports it. Not placed:
the intent is rejected (funds and position claim released) and the event answers 503, so a
redelivery may run it again. Still unknown: the intent stays ``pending``, the event answers
503, and reconciliation (at start-up, or when the event is delivered again) settles it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from sqlalchemy import select

from app import inbox, schema, trading
from app.broker import Broker, OrderReport, OrderRequest
from app.database import Database
from app.errors import BrokerUnavailable, OrderRejected
from app.instruments import Instrument

log = logging.getLogger(__name__)
ResultT = TypeVar("ResultT")
FILLED = frozenset({"filled", "partially_filled"})


class LegBusy(Exception):
    """The position is ``opening`` or ``closing`` under another event; wait and retry."""


class Execution:
    def __init__(
        self,
        *,
        database: Database,
        brokers: Mapping[str, Broker],
        clock: Callable[[], datetime],
        timeout: float,
    ) -> None:
        self._database = database
        self._brokers = brokers
        self._clock = clock
        self._timeout = timeout

    def instrument(self, account: str, ticker: str) -> Instrument | None:
        return self._brokers[account].instrument(ticker)

    async def quote(self, account: str, symbol: str) -> Decimal:
        return await self._bounded(self._brokers[account].quote(symbol), what="quote")

    async def execute(
        self, account: str, intent: trading.OrderIntent, *, timings: dict[str, float]
    ) -> OrderReport:
        """Submit a persisted intent, record the outcome, raise if it did not fill."""
        broker = self._brokers[account]
        started = asyncio.get_running_loop().time()
        error: Exception | None = None
        request = OrderRequest(intent.client_order_id, intent.symbol, intent.side, intent.quantity)
        try:
            report = await self._bounded(broker.submit(request), what="submit")
        except OrderRejected as exc:
            report, error = _rejected(intent, str(exc)), exc
        except BrokerUnavailable as exc:
            found = await self._lookup(broker, intent)
            report = found or _rejected(intent, "not placed: the broker could not be reached")
            error = None if found else exc
        committing = asyncio.get_running_loop().time()
        _add(timings, "broker_ms", committing - started)
        async with self._database.write() as connection:
            await trading.apply_report(connection, intent, report, now=self._clock())
        _add(timings, "commit_ms", asyncio.get_running_loop().time() - committing)
        if error is not None:
            raise error
        if report.status == "rejected":
            raise OrderRejected(report.reason or "the broker rejected the order")
        if report.status == "pending":
            raise BrokerUnavailable("the broker has not filled the order yet")
        return report

    async def resume(
        self, event_id: int, purpose: trading.Purpose, *, resuming: bool
    ) -> int | None:
        """The attempt number for an event's leg, or None when the leg is already done.

        A first run is attempt 1 without a look. A re-run first settles the leg's pending
        intents with the broker, then skips the leg if an earlier attempt filled.
        """
        if not resuming:
            return 1
        async with self._database.read() as connection:
            pending = [
                intent
                for intent in await trading.pending_intents(connection, event_id=event_id)
                if intent.purpose == purpose
            ]
        for intent in pending:
            await self.settle(intent, account=await self._account_name(intent.account_id))
        async with self._database.read() as connection:
            statuses = await trading.leg_orders(connection, event_id=event_id, purpose=purpose)
        if FILLED & set(statuses):
            return None
        return len(statuses) + 1

    async def settle(self, intent: trading.OrderIntent, *, account: str) -> None:
        """Ask the broker what became of an intent and record it (unknown: raise 503)."""
        report = await self._lookup(self._brokers[account], intent)
        if report is None:
            report = _rejected(intent, "the broker has no such order")
        async with self._database.write() as connection:
            await trading.apply_report(connection, intent, report, now=self._clock())

    async def reconcile(self) -> None:
        """At start-up: settle every intent without a final state, then mark deliveries a
        crash left running as retryable, so that a redelivery resumes them."""
        async with self._database.read() as connection:
            intents = await trading.pending_intents(connection)
        for intent in intents:
            try:
                await self.settle(intent, account=await self._account_name(intent.account_id))
            except BrokerUnavailable:
                log.warning("order %s is still unknown at the broker", intent.client_order_id)
        answer = inbox.Answer(
            503,
            b'{"error":"interrupted","message":"the service stopped while running this event; '
            b'deliver it again"}',
            error_type="interrupted",
        )
        async with self._database.write() as connection:
            for event_id in await inbox.interrupted(connection):
                await inbox.finish(
                    connection, event_id, answer, state="retryable", now=self._clock()
                )

    async def _lookup(self, broker: Broker, intent: trading.OrderIntent) -> OrderReport | None:
        return await self._bounded(
            broker.fetch_order(intent.client_order_id, symbol=intent.symbol), what="order lookup"
        )

    async def _bounded(self, call: Awaitable[ResultT], *, what: str) -> ResultT:
        try:
            return await asyncio.wait_for(call, self._timeout)
        except TimeoutError:
            raise BrokerUnavailable(f"the broker did not answer the {what} in time") from None

    async def _account_name(self, account_id: int) -> str:
        async with self._database.read() as connection:
            name = await connection.scalar(
                select(schema.accounts.c.name).where(schema.accounts.c.id == account_id)
            )
        return str(name)


def _add(timings: dict[str, float], phase: str, seconds: float) -> None:
    timings[phase] = timings.get(phase, 0.0) + seconds * 1000


def _rejected(intent: trading.OrderIntent, reason: str) -> OrderReport:
    return OrderReport(
        client_order_id=intent.client_order_id, broker_order_id="", status="rejected", reason=reason
    )
