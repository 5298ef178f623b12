"""Receiving one delivery: the use case from raw body to stored answer.

``Receiver.receive`` is the whole flow of DESIGN.md section 3 after the size limit:
store the delivery, authenticate, claim the dedupe key (a repeat gets the stored answer),
route by type (:mod:`app.handlers`: run the rules, persist the intent, call the broker),
record the outcome as the event's answer. The rules are pure (:mod:`app.rules`), and so is
what the delivery alone decides (:mod:`app.intake`: its media type, credentials, dedupe key
and an error's answer); the storage
steps are :mod:`app.inbox`, :mod:`app.directory`, :mod:`app.trading` and :mod:`app.intents`,
each inside one transaction opened here or in the handlers.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime

from app import directory, inbox, intake, strategies
from app.broker import Broker
from app.database import Database, Pending
from app.errors import (
    BrokerUnavailable,
    Conflict,
    IdempotencyConflict,
    InvalidCredentials,
    NotFound,
    RequestError,
    SignalbridgeError,
    UnsupportedVersion,
)
from app.execution import Execution
from app.faults import crash_after
from app.handlers import OPERATOR_CLOSE, Handlers
from app.legs import Legs, Run
from app.metrics import Metrics
from app.protocol import (
    INTEGRATION_TYPES,
    SIGNAL_TYPES,
    STRATEGY_TYPES,
    EventV1,
    ParsedEvent,
    StrategyData,
    parse_envelope,
)
from app.settings import AccountConfig, Settings
from app.workers import Worker

log = logging.getLogger(__name__)
# A repeat looks at its first delivery after 5 ms, then waits twice as long each time, up to
# 100 ms: a burst of repeats must not flood the database while the first one runs.
REPEAT_POLL_SECONDS = (0.005, 0.1)
KNOWN_TYPES = SIGNAL_TYPES | STRATEGY_TYPES | INTEGRATION_TYPES  # bounded metric labels


class Receiver:
    def __init__(
        self,
        *,
        settings: Settings,
        database: Database,
        accounts: Mapping[str, AccountConfig],
        brokers: dict[str, Broker],
        clock: Callable[[], datetime],
        metrics: Metrics,
        worker: Worker,
    ) -> None:
        self._worker = worker
        self._settings = settings
        self._database = database
        self._clock = clock
        self._metrics = metrics
        self._token_headers = directory.TokenHeaders()
        self._execution = Execution(
            database=database,
            accounts=accounts,
            brokers=brokers,
            clock=clock,
            timeout=settings.broker_timeout_seconds,
            metrics=metrics,
            worker=worker,
            crash_at=settings.crash_at,
        )
        self._handlers = Handlers(
            settings=settings,
            database=database,
            execution=self._execution,
            legs=Legs(settings=settings, database=database, execution=self._execution, clock=clock),
            clock=clock,
        )

    async def reconcile(self) -> None:
        """Settle what a crash left open; run before the first delivery is served."""
        await self._execution.reconcile()

    async def add_account(self, config: AccountConfig, broker: Broker) -> None:
        await self._execution.add_account(config, broker)

    def readiness(self) -> dict[str, bool]:
        """Each account: ready to serve signals (reconciled with its broker)?"""
        return self._execution.readiness()

    async def reconcile_forever(self) -> None:
        """The background reconciler: every ``reconcile_interval_seconds``."""
        while True:
            await asyncio.sleep(self._settings.reconcile_interval_seconds)
            try:
                await self._execution.reconcile_pending(
                    max_lookups=self._settings.reconcile_max_lookups
                )
            except Exception:
                log.exception("reconciliation pass failed; the next pass retries")

    async def replay(self, event_id: int) -> inbox.Answer:
        """Run a stored event again: one answered 503 (``retryable``), or one whose envelope
        version was not understood. Anything else is final: 409."""
        async with self._database.snapshot() as tx:
            stored = await inbox.replayable(tx, event_id)
            integration = (
                await directory.integration_by_id(tx, stored.integration_id)
                if stored is not None and stored.integration_id is not None
                else None
            )
        if stored is None:
            raise NotFound(f"no event {event_id}")
        if stored.duplicate_of is not None:
            raise Conflict(f"event {event_id} repeats event {stored.duplicate_of}; replay that")
        if integration is None:
            raise Conflict(f"event {event_id} was not authenticated; it cannot be replayed")
        if stored.state == "retryable" and stored.dedupe_key is not None:
            async with self._database.transaction() as tx:
                if not await inbox.rerun(tx, event_id, worker_id=self._worker.id):
                    raise Conflict(f"event {event_id} is already running again")
            parsed = parse_envelope(stored.raw_body)
            run = Run(event_id, stored.dedupe_key, parsed, integration, resuming=True)
            return await self._run(run)
        if stored.state == "failed" and stored.error_type == UnsupportedVersion.code:
            try:
                parsed = parse_envelope(stored.raw_body)
            except RequestError as exc:
                return intake.answer_for(exc)
            return await self._accept(
                inbox.Delivery(
                    stored.raw_body, intake.sha256(stored.raw_body), None, self._clock()
                ),
                parsed,
                integration,
                key=parsed.dedupe_key(integration.id),
                started=time.perf_counter(),
            )
        raise Conflict(
            f"event {event_id} is {stored.state}; only events answered 503 or of a version "
            "this build did not understand can be replayed"
        )

    async def receive(
        self, raw_body: bytes, *, content_type: str | None, headers: Mapping[str, str]
    ) -> inbox.Answer:
        """Store, run and answer one delivery; count it in the metrics."""
        started = time.perf_counter()
        self._database.deliveries_in_flight += 1
        try:
            answer, event_type = await self._receive(
                raw_body, content_type=content_type, headers=headers, started=started
            )
        finally:
            self._database.deliveries_in_flight -= 1
        known = event_type if event_type in KNOWN_TYPES else "other" if event_type else None
        self._metrics.delivered(
            known, answer.error_type or "ok", seconds=time.perf_counter() - started
        )
        return answer

    async def _receive(
        self,
        raw_body: bytes,
        *,
        content_type: str | None,
        headers: Mapping[str, str],
        started: float,
    ) -> tuple[inbox.Answer, str | None]:
        # Each stage of a delivery (parsing, the token check and claim, the checks and the
        # intent, the fill) runs for every delivery in flight before the next: see
        # Database.take_turns. It arrived before its first turn.
        received_at = self._clock()
        await self._database.take_turns()
        digest = intake.sha256(raw_body)
        delivery = inbox.Delivery(raw_body, digest, content_type, received_at)
        parsed: ParsedEvent | None = None
        error: SignalbridgeError | None = None
        try:
            intake.check_content_type(content_type)
            parsed = parse_envelope(raw_body)
        except RequestError as exc:
            error = exc
        await self._database.take_turns()
        pending = Pending()
        # One write block reads the tokens (and the strategy the event names: see
        # directory.authenticate) and stores the delivery (its claim, or its refusal). On
        # SQLite the read runs on the writer, whose page cache is warm: a separate reader's
        # cache is dropped at every commit. The tokens are never written inside a batch
        # (only through Database.write), so it reads what is committed of them.
        async with self._database.autocommit(pending) as tx:
            found = await directory.authenticate(
                tx,
                headers,
                token_headers=self._token_headers,
                strategy=parsed.strategy_id if parsed is not None else None,
            )
            integration, presented = found.integration, found.presented
            if presented:
                # The provider echoes its webhook headers, token included, inside the body.
                redacted = raw_body.replace(presented.encode(), b"[redacted]")
                delivery = inbox.Delivery(redacted, digest, content_type, delivery.received_at)
            details = intake.details_of(parsed, integration)
            key = ""
            if error is None and parsed is not None:
                error = intake.credentials_error(parsed, integration)
            if error is None and parsed is not None and integration is not None:
                try:
                    key = intake.dedupe_key(parsed, integration.id, headers)
                except RequestError as exc:
                    error = exc
            refused: inbox.Answer | None = None
            event_id: int | None = None
            if error is not None or parsed is None or integration is None:
                refused = intake.answer_for(error or InvalidCredentials("unknown integration"))
                await inbox.store(
                    tx,
                    delivery,
                    details,
                    dedupe_key=None,
                    answer=refused,
                    worker_id=self._worker.id,
                )
            else:
                event_id = await inbox.store(
                    tx, delivery, details, dedupe_key=key, worker_id=self._worker.id
                )
        if refused is not None:
            await pending.durable()
            return refused, details.event_type
        await self._database.take_turns()
        assert parsed is not None
        assert integration is not None
        if parsed.deprecation:
            log.warning(
                "envelope version %s is deprecated from %s", parsed.version, parsed.deprecation
            )
        answer = await self._accept(
            delivery,
            parsed,
            integration,
            key=key,
            started=started,
            claimed=(event_id, pending),
            strategy=found.strategy,
        )
        return answer, parsed.event.type

    async def _accept(
        self,
        delivery: inbox.Delivery,
        parsed: ParsedEvent,
        integration: directory.Integration,
        *,
        key: str,
        started: float,
        claimed: tuple[int | None, Pending] | None = None,
        strategy: strategies.Strategy | None = None,
    ) -> inbox.Answer:
        """Claim the dedupe key and run the event, or answer as its first delivery did.
        ``claimed``: the caller stored the delivery already (its id, None when the key was
        taken, and the pending commit of that write). ``strategy``: the one the event names,
        as its token check read it (:attr:`app.legs.Run.strategy`)."""
        if claimed is None:
            pending = Pending()
            async with self._database.autocommit(pending) as tx:  # one INSERT: the claim
                event_id = await inbox.store(
                    tx,
                    delivery,
                    intake.details_of(parsed, integration),
                    dedupe_key=key,
                    worker_id=self._worker.id,
                )
        else:
            event_id, pending = claimed
        if event_id is None:
            details = intake.details_of(parsed, integration)
            return await self._repeat(delivery, details, key, parsed, integration)
        await crash_after("stored", self._settings.crash_at, pending)
        run = Run(
            event_id, key, parsed, integration, resuming=False, pending=pending, strategy=strategy
        )
        run.timings["receive_ms"] = (time.perf_counter() - started) * 1000
        return await self._run(run)

    async def _repeat(
        self,
        delivery: inbox.Delivery,
        details: inbox.Details,
        key: str,
        parsed: ParsedEvent,
        integration: directory.Integration,
    ) -> inbox.Answer:
        """A repeat of a claimed key: wait for the first to finish, answer what it answered."""
        deadline = time.monotonic() + self._settings.duplicate_wait_seconds
        poll, longest = REPEAT_POLL_SECONDS
        while True:
            async with self._database.snapshot() as tx:
                first = await inbox.first_delivery(tx, key)
            if first is None:  # its claim is not committed yet
                pass
            elif first.body_sha256 != delivery.body_sha256:
                answer = intake.answer_for(
                    IdempotencyConflict("this dedupe key was delivered before with another body")
                )
                break
            elif first.state == "retryable":
                async with self._database.transaction() as tx:
                    claimed = await inbox.rerun(tx, first.id, worker_id=self._worker.id)
                if claimed:
                    answer = await self._run(Run(first.id, key, parsed, integration, resuming=True))
                    break
            elif first.state != "pending" and first.answer is not None:
                answer = first.answer
                break
            if time.monotonic() > deadline:
                answer = intake.answer_for(
                    BrokerUnavailable("the first delivery of this event is still running")
                )
                break
            await asyncio.sleep(poll)
            poll = min(poll * 2, longest)
        async with self._database.transaction() as tx:
            await inbox.store(
                tx,
                delivery,
                details,
                # A first delivery never seen (its commit failed) leaves the key unclaimed.
                dedupe_key=key if first is not None else None,
                answer=answer,
                duplicate_of=first.id if first is not None else None,
                worker_id=self._worker.id,
            )
        return answer

    async def _run(self, run: Run) -> inbox.Answer:
        state: inbox.State = "done"
        answer = inbox.OK
        try:
            if not await self._handlers.handle(run):
                state = "ignored"
        except BrokerUnavailable as exc:
            state, answer = "retryable", intake.answer_for(exc)
        except SignalbridgeError as exc:
            state, answer = "failed", intake.answer_for(exc)
        except Exception:
            # A bug, not a verdict: recorded as retryable, so a redelivery (or a replay)
            # runs the event again, settling with the broker first whatever it had sent,
            # instead of finding it pending until this process stops.
            log.exception(
                "event %s failed unexpectedly; a redelivery runs it again",
                run.dedupe_key,
                extra={"dedupe_key": run.dedupe_key, "event_id": run.event_id},
            )
            unexpected = SignalbridgeError("an unexpected error; see the log")
            state, answer = "retryable", intake.answer_for(unexpected)
        await crash_after("recorded", self._settings.crash_at, run.pending)
        carried = run.answer_with_fill
        if state != "done" or carried is None or not carried.stored:
            async with self._database.autocommit(run.pending) as tx:  # one UPDATE
                await inbox.finish(
                    tx,
                    run.event_id,
                    answer,
                    state=state,
                    now=self._clock(),
                    note="; ".join(run.notes) or None,
                    timings=run.timings,
                )
        await run.pending.durable()
        log.info(
            "event %s %s answered %s",
            run.dedupe_key,
            run.parsed.event.type,
            answer.status,
            extra={"dedupe_key": run.dedupe_key, "event_id": run.event_id, "timings": run.timings},
        )
        return answer

    async def operator_close(
        self, strategy_id: int, *, idempotency_key: str | None, retire: bool = False
    ) -> inbox.Answer:
        """Close a strategy's position by hand: a normal order through the broker and the
        ledger, recorded in the inbox as an ``OPERATOR_CLOSE`` event. ``retire`` pauses the
        strategy first and succeeds with no position to close. A repeated
        ``idempotency_key`` gets the stored answer."""
        now = self._clock()
        async with self._database.transaction() as tx:
            strategy = await strategies.strategy_by_id(tx, strategy_id)
            if strategy is None:
                raise NotFound(f"no strategy {strategy_id}")
            integration = await directory.integration_by_id(tx, strategy.integration_id)
            if retire:
                await strategies.update_strategy(tx, strategy.id, paused=True, now=now)
        action = "retire" if retire else "close"
        body = intake.json_body({"action": action, "strategy": strategy.id, "by": "operator"})
        parsed = ParsedEvent(
            version="operator",
            deprecation=None,
            event=EventV1(
                timestamp=int(now.timestamp() * 1000),
                type=OPERATOR_CLOSE,
                data={"strategy": strategy.id, "required": not retire},
            ),
            strategy=StrategyData(id=strategy.external_id, name=strategy.name),
        )
        key = f"operator|{action}|{strategy.id}|{idempotency_key or uuid.uuid4().hex}"
        delivery = inbox.Delivery(body, intake.sha256(body), "application/json", now)
        return await self._accept(
            delivery, parsed, integration, key=key, started=time.perf_counter()
        )
