"""Sending persisted order intents to the broker, and settling what they became.

Every broker call is bounded by ``broker_timeout_seconds``. When a submit fails with an
unknown outcome (timeout, unreachable), the order is never resubmitted blindly: it is looked
up by its client order id first. Found: it is applied as the broker reports it. Not placed:
the intent is rejected (funds and position claim released) and the event answers 503, so a
redelivery may run it again. Still unknown: the intent stays ``pending``, the event answers
503, and reconciliation (at start-up, or when the event is delivered again) settles it.

With several processes on one database, reconciliation touches only the work of processes
that are gone (:mod:`app.workers`): their deliveries left running become retryable, their
intents are settled; a live process's running deliveries and intents are its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from app import inbox, intents, journal, queries, reports, trading
from app.broker import Broker, OrderReport, OrderRequest
from app.database import Database, Pending
from app.errors import BrokerUnavailable, OrderRejected, ProtocolError, SignalbridgeError
from app.faults import CrashStep, crash_after
from app.instruments import Instrument
from app.metrics import Metrics
from app.settings import AccountConfig
from app.workers import Worker

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
        accounts: Mapping[str, AccountConfig],
        brokers: dict[str, Broker],
        clock: Callable[[], datetime],
        timeout: float,
        metrics: Metrics,
        worker: Worker,
        crash_at: CrashStep | None = None,
    ) -> None:
        self._worker = worker
        self._crash_at = crash_at
        self._metrics = metrics
        self._database = database
        self._accounts = dict(accounts)
        self._brokers = brokers  # shared with the API's views: accounts added here show there
        self._clock = clock
        self._timeout = timeout
        self._ready: set[str] = set()
        self._lookups: dict[int, int] = {}

    def account(self, name: str) -> AccountConfig:
        """The account's terms (the config's, or defaults for one created through the API)."""
        return self._accounts[name]

    async def add_account(self, config: AccountConfig, broker: Broker) -> None:
        """Serve a new account from now on (created through the API)."""
        self._accounts[config.name] = config
        self._brokers[config.name] = broker
        await self.prepare(config.name)

    def instrument(self, account: str, ticker: str) -> Instrument | None:
        return self._brokers[account].instrument(ticker)

    async def quote(self, account: str, symbol: str) -> Decimal:
        broker = self._brokers[account]
        return await self._bounded(broker, broker.quote(symbol), what="quote")

    async def execute(
        self,
        account: str,
        intent: intents.OrderIntent,
        *,
        timings: dict[str, float],
        pending: Pending,
        answer: inbox.AnswerWithFill | None = None,
    ) -> OrderReport:
        """Submit a persisted intent (to a live venue once it and every write before it are
        durable); record the outcome (in ``pending``); raise if it did not fill. ``answer``:
        the delivery's, when this is its last write: stored with the fill when the order
        filled (``answer.stored``), else left to the caller."""
        broker = self._brokers[account]
        # The phases are timed by time.perf_counter, as the receiver's are: uvloop's loop.time()
        # is the time of the loop's pass in whole milliseconds, and timed a paper fill as 0.
        started = time.perf_counter()
        error: Exception | None = None
        request = OrderRequest(intent.client_order_id, intent.symbol, intent.side, intent.quantity)
        if broker.is_live:
            # A venue remembers what it was sent: the intent must be on disk before it is.
            # A paper broker's book dies with the process, as its uncommitted intent would.
            await pending.durable()
        await crash_after("intent", self._crash_at, pending)
        await self._database.take_turns()  # the fill's stage: see Database.take_turns
        try:
            report = await self._bounded(broker, broker.submit(request), what="submit")
            await crash_after("accepted", self._crash_at, pending)
        except (OrderRejected, ProtocolError) as exc:  # refused: final, nothing was placed
            self._metrics.broker_errors.labels(account=account, kind="refused").inc()
            report, error = _rejected(intent, exc.message), exc
        except BrokerUnavailable as exc:
            self._metrics.broker_errors.labels(account=account, kind="unavailable").inc()
            found = await self._lookup(broker, intent)
            report = found or _rejected(intent, "not placed: the broker could not be reached")
            error = None if found else exc
        committing = time.perf_counter()
        _add(timings, "broker_ms", committing - started)
        now = self._clock()
        failure = error or _failure(report)
        carried = answer if failure is None else None  # only a delivery that succeeds
        recorded = False
        if reports.applies_alone(self._database.dialect.name, intent, report):
            async with self._database.autocommit(pending) as tx:  # one statement
                values = None if carried is None else carried.values(now)
                recorded = await reports.apply_new_fill(tx, intent, report, now=now, answer=values)
            if carried is not None:
                carried.stored = recorded
        if not recorded:
            async with self._database.transaction(pending) as tx:
                await reports.apply_report(tx, intent, report, now=now)
                if carried is not None:
                    await carried.store(tx, now=now)
            if carried is not None:
                carried.stored = True
        _add(timings, "commit_ms", time.perf_counter() - committing)
        if failure is not None:
            raise failure
        return report

    async def resume(
        self,
        account: str,
        event_id: int,
        purpose: intents.Purpose,
        *,
        resuming: bool,
        pending: Pending,
    ) -> int | None:
        """The attempt number for an event's leg, or None when the leg is already done.

        A first run is attempt 1 without a look. A re-run first settles the leg's pending
        intents with the broker, then skips the leg if an earlier attempt filled. (Read
        through the writer: the event's own writes may still wait for their commit.)
        """
        if not resuming:
            return 1
        async with self._database.transaction(pending) as tx:
            unsettled = [
                intent
                for intent in await intents.pending_intents(tx, event_id=event_id)
                if intent.purpose == purpose
            ]
        for intent in unsettled:
            await self.settle(intent, account=account, pending=pending)
        async with self._database.transaction(pending) as tx:
            statuses = await intents.leg_orders(tx, event_id=event_id, purpose=purpose)
        if FILLED & set(statuses):
            return None
        return len(statuses) + 1

    async def settle(
        self, intent: intents.OrderIntent, *, account: str, pending: Pending | None = None
    ) -> None:
        """Ask the broker what became of an intent and record it (unknown: raise 503)."""
        report = await self._lookup(self._brokers[account], intent)
        if report is None:
            report = _rejected(intent, "the broker has no such order")
        async with self._database.transaction(pending) as tx:
            await reports.apply_report(tx, intent, report, now=self._clock())

    def readiness(self) -> dict[str, bool]:
        return {account: account in self._ready for account in self._brokers}

    def ensure_ready(self, account: str) -> None:
        if account not in self._ready:
            raise BrokerUnavailable(
                f"the account {account} is being reconciled with its broker; try again shortly"
            )

    async def prepare(self, account: str) -> bool:
        """Make an account ready to serve: markets loaded, its unfinished intents settled
        (those no live process is sending), its open positions checked against a live
        venue. False (and not ready) when the broker cannot be reached or an intent is still
        unknown; try again later."""
        broker = self._brokers[account]
        try:
            await broker.start()
            async with self._database.read() as connection:
                account_id = await queries.account_id(connection, account)
                orphaned = await intents.orphaned_intents(
                    connection, self._worker, account_id=account_id
                )
            for intent in orphaned:
                await self.settle(intent, account=account)
            if broker.is_live:
                await self._sync_with_venue(account, account_id)
        except SignalbridgeError as exc:  # unreachable, refused credentials, ...
            log.warning(
                "account %s is not ready: %s", account, exc.message, extra={"account": account}
            )
            self._ready.discard(account)
            return False
        self._ready.add(account)
        return True

    async def reconcile(self) -> None:
        """At start-up: prepare every account, then mark deliveries that gone processes
        left running as retryable, so that a redelivery resumes them."""
        for account in self._brokers:
            await self.prepare(account)
        await self._interrupt()

    async def _interrupt(self) -> None:
        async with self._database.write() as connection:
            interrupted = await inbox.interrupt(
                connection, self._worker, INTERRUPTED, now=self._clock()
            )
        if interrupted:
            log.warning("deliveries a stopped process left running are retryable: %s", interrupted)

    async def reconcile_pending(self, *, max_lookups: int) -> None:
        """The background pass: prepare accounts that are not ready; look up every intent
        still without a final state that no live process is sending (after
        ``max_lookups`` failed lookups, reject it); make deliveries that processes which
        have stopped since left running retryable."""
        for account in self._brokers:
            if account not in self._ready:
                await self.prepare(account)
        async with self._database.read() as connection:
            orphaned = await intents.orphaned_intents(connection, self._worker)
            names = await trading.account_names(connection)
        for intent in orphaned:
            try:
                await self.settle(intent, account=names[intent.account_id])
            except BrokerUnavailable:
                tries = self._lookups.get(intent.order_id, 0) + 1
                self._lookups[intent.order_id] = tries
                if tries >= max_lookups:
                    reason = f"still unknown at the broker after {tries} lookups"
                    async with self._database.transaction() as tx:
                        await reports.apply_report(
                            tx, intent, _rejected(intent, reason), now=self._clock()
                        )
                    log.error("order %s rejected: %s", intent.client_order_id, reason)
        await self._interrupt()

    async def _sync_with_venue(self, account: str, account_id: int) -> None:
        """Post the venue's free cash as the opening balance (once), and flag open
        positions the venue's balances contradict; never change them silently."""
        broker = self._brokers[account]
        balances = await broker.balances()
        async with self._database.transaction() as tx:
            currency = await trading.account_currency(tx, account_id)
            if opening := balances.get(currency, Decimal(0)):
                await journal.record_deposit(
                    tx,
                    account_id,
                    amount=opening,
                    reference=f"opening-balance:{account}",
                    now=self._clock(),
                )
            for position in await trading.open_positions(tx, account_id=account_id):
                instrument = broker.instrument(position.ticker)
                base = (instrument.symbol if instrument else position.ticker).split("/")[0]
                held = balances.get(base, Decimal(0))
                if position.direction == "long" and held < position.quantity:
                    await trading.flag_position(
                        tx,
                        position.id,
                        f"the exchange holds {held} {base}; this position is {position.quantity}",
                    )

    def is_live(self, account: str) -> bool:
        return self._brokers[account].is_live

    async def venue_free(self, account: str, asset: str) -> Decimal | None:
        """A live venue's free balance of ``asset``; None for paper accounts."""
        broker = self._brokers[account]
        if not broker.is_live:
            return None
        balances = await self._bounded(broker, broker.balances(), what="balance")
        return balances.get(asset, Decimal(0))

    async def _lookup(self, broker: Broker, intent: intents.OrderIntent) -> OrderReport | None:
        return await self._bounded(
            broker,
            broker.fetch_order(intent.client_order_id, symbol=intent.symbol),
            what="order lookup",
        )

    async def _bounded(self, broker: Broker, call: Awaitable[ResultT], *, what: str) -> ResultT:
        """The broker's answer, within the timeout (a local broker's without one: it
        answers from memory, and a timer per call is a measurable part of a delivery)."""
        if broker.is_local:
            return await call
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for runs the call in a new task.
        try:
            async with asyncio.timeout(self._timeout):
                return await call
        except TimeoutError:
            raise BrokerUnavailable(f"the broker did not answer the {what} in time") from None


INTERRUPTED = inbox.Answer(
    503,
    b'{"error":"interrupted","message":"the service stopped while running this event; '
    b'deliver it again"}',
    error_type="interrupted",
)


def _add(timings: dict[str, float], phase: str, seconds: float) -> None:
    timings[phase] = timings.get(phase, 0.0) + seconds * 1000


def _failure(report: OrderReport) -> SignalbridgeError | None:
    """What :meth:`Execution.execute` raises for a report that did not fill, or None."""
    if report.status == "rejected":
        return OrderRejected(report.reason or "the broker rejected the order")
    if report.status == "pending":
        return BrokerUnavailable("the broker has not filled the order yet")
    return None


def _rejected(intent: intents.OrderIntent, reason: str) -> OrderReport:
    return OrderReport(
        client_order_id=intent.client_order_id, broker_order_id="", status="rejected", reason=reason
    )
