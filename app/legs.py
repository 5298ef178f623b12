"""The legs of a signal: opening and closing a strategy's position on its account's broker.

Each leg runs the pure rules inside one transaction that also persists the order intent
(:mod:`app.intents`, :mod:`app.trading`), then hands the intent to :mod:`app.execution`.
``SIGNAL_REOPEN`` is a close leg, waited for, then an open leg.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from app import directory, inbox, intents, strategies, trading
from app.database import Database, Pending
from app.errors import BrokerUnavailable, InsufficientFunds, PositionNotFound, UnsupportedInstrument
from app.execution import Execution, LegBusy
from app.protocol import ParsedEvent
from app.rules import AccountTerms, Direction, StrategyRules, check_session, plan_open
from app.settings import AccountConfig, Settings

POLL_SECONDS = 0.01


@dataclass(slots=True)
class Run:
    """One event being executed."""

    event_id: int
    dedupe_key: str
    parsed: ParsedEvent
    integration: directory.Integration
    resuming: bool
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    pending: Pending = field(default_factory=Pending)  # its writes' commits, not yet awaited
    # The strategy the event names, as the delivery's token check read it (None when it was
    # not read, or not there): see strategies.settled.
    strategy: strategies.Strategy | None = None
    # Set by the handler before the run's last leg: its answer, which that leg's fill may
    # store (Execution.execute); the receiver then stores it only if the fill did not.
    answer_with_fill: inbox.AnswerWithFill | None = None

    def last_leg(self) -> None:
        """What comes next is the run's last leg: its fill may carry the answer."""
        self.answer_with_fill = inbox.AnswerWithFill(self.event_id, self.notes, self.timings)


class Legs:
    def __init__(
        self,
        *,
        settings: Settings,
        database: Database,
        execution: Execution,
        clock: Callable[[], datetime],
    ) -> None:
        self._settings = settings
        self._database = database
        self._execution = execution
        self._clock = clock

    async def open(self, run: Run, strategy: strategies.Strategy) -> None:
        signal = run.parsed.signal
        assert signal is not None
        account = self._execution.account(run.integration.account_name)
        attempt = await self._execution.resume(
            account.name, run.event_id, "open", resuming=run.resuming, pending=run.pending
        )
        if attempt is None:
            return
        instrument = self._execution.instrument(account.name, signal.ticker)
        broker_started = time.perf_counter()
        quote = venue_cash = None
        if instrument is not None:
            quote = await self._execution.quote(account.name, instrument.symbol)
            quote_asset = _assets(instrument.symbol, account.currency)[1]
            venue_cash = await self._execution.venue_free(account.name, quote_asset)
        run.timings["quote_ms"] = (time.perf_counter() - broker_started) * 1000
        configured = self._settings.strategy_rules(
            integration=run.integration.name, strategy_id=strategy.external_id
        )
        rules = StrategyRules(  # the operator's rules win over the config's
            strategy.quantity_multiplier or configured.quantity_multiplier,
            strategy.max_order_quantity or configured.max_order_quantity,
            strategy.allocation_percent or configured.allocation_percent,
        )
        terms = _terms(account)
        direction: Direction = "long" if signal.direction == "BUY" else "short"
        now = self._clock()
        checks_started = time.perf_counter()
        # Locked as the transaction begins: the funds are read under the account's lock.
        async with self._database.transaction(
            run.pending, locking_account=run.integration.account_id
        ) as tx:
            intent = await intents.reserve_open(
                tx,
                event_id=run.event_id,
                strategy_id=strategy.id,
                account_id=run.integration.account_id,
                client_order_id=client_order_id(run.dedupe_key, "o", attempt),
                provider_position_id=signal.proquantPositionId,
                direction=direction,
                terms=terms,
                decide=lambda funds, has_open: plan_open(
                    instrument,
                    signal.ticker,
                    direction=direction,
                    quantity=signal.quantity,
                    quote=quote or Decimal(0),
                    rules=rules,
                    terms=terms,
                    funds=funds,
                    has_open_position=has_open,
                    now=now,
                ),
                now=now,
                venue_cash=venue_cash,
            )
        run.timings["checks_ms"] = (time.perf_counter() - checks_started) * 1000
        await self._execution.execute(
            account.name,
            intent,
            timings=run.timings,
            pending=run.pending,
            answer=run.answer_with_fill,
        )

    async def close(self, run: Run, strategy: strategies.Strategy, *, required: bool) -> bool:
        """Close the strategy's position; False when there is none and none is required."""
        account = self._execution.account(run.integration.account_name)
        attempt = await self._execution.resume(
            account.name, run.event_id, "close", resuming=run.resuming, pending=run.pending
        )
        if attempt is None:
            return True
        base_free = await self._base_free(account.name, strategy.id)
        intent = None
        if base_free is None:  # a live venue's spot close checks its balance first
            intent = await self._close_as_signalled(
                run, strategy, attempt=attempt, account=account.name
            )
        deadline = time.monotonic() + self._settings.duplicate_wait_seconds
        while intent is None:
            try:
                intent = await self._reserve_close(
                    run, strategy, attempt=attempt, account=account.name, base_free=base_free
                )
            except LegBusy:
                # An earlier event's order for this position is still at the broker.
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(
                        "the position is still being opened or closed"
                    ) from None
                await asyncio.sleep(POLL_SECONDS)
                continue
            if intent is None:
                if required:
                    raise PositionNotFound("the strategy has no open position")
                return False
        await self._execution.execute(
            account.name,
            intent,
            timings=run.timings,
            pending=run.pending,
            answer=run.answer_with_fill,
        )
        return True

    async def _close_as_signalled(
        self, run: Run, strategy: strategies.Strategy, *, attempt: int, account: str
    ) -> intents.OrderIntent | None:
        """On PostgreSQL, the close of a position in the ticker its signal names, in an
        open market: checked first, then claimed with its intent made, in one statement of
        its own (:func:`intents.claim_and_reserve_close`). None, with nothing written, for
        anything else (SQLite, an operator's close, no such position open, a market
        closed): :meth:`_reserve_close` then claims first and checks after, so that the
        answer follows the design's order of checks (no position before a closed market)."""
        signal = run.parsed.signal
        if signal is None or self._database.dialect.name != "postgresql":
            return None
        instrument = self._execution.instrument(account, signal.ticker)
        now = self._clock()
        if instrument is None or not instrument.sessions.is_open(now):
            return None
        async with self._database.autocommit(run.pending) as tx:
            intent = await intents.claim_and_reserve_close(
                tx,
                strategy_id=strategy.id,
                ticker=signal.ticker,
                event_id=run.event_id,
                account_id=run.integration.account_id,
                client_order_id=client_order_id(run.dedupe_key, "c", attempt),
                symbol=instrument.symbol,
                now=now,
            )
        if intent is not None:
            _note_quantity(run, intent.quantity)
        return intent

    async def _base_free(self, account: str, strategy_id: int) -> Decimal | None:
        """On a live venue, the free balance of the asset a spot close would sell."""
        if not self._execution.is_live(account):
            return None
        async with self._database.snapshot() as tx:
            position = await trading.position_of(tx, strategy_id)
        if position is None or position.direction != "long":
            return None
        instrument = self._execution.instrument(account, position.ticker)
        if instrument is None:
            return None
        return await self._execution.venue_free(account, _assets(instrument.symbol, "")[0])

    async def _reserve_close(
        self,
        run: Run,
        strategy: strategies.Strategy,
        *,
        attempt: int,
        account: str,
        base_free: Decimal | None,
    ) -> intents.OrderIntent | None:
        now = self._clock()
        async with self._database.transaction(run.pending) as tx:
            # Claimed first, in one statement; a check that fails below undoes the claim.
            position = await trading.claim_close(tx, strategy.id)
            if position is None:
                unsettled = await trading.position_of(tx, strategy.id)
                if unsettled is None:
                    return None
                raise LegBusy(unsettled.status)
            instrument = self._execution.instrument(run.integration.account_name, position.ticker)
            if instrument is None:
                raise UnsupportedInstrument(f"{position.ticker} is no longer configured")
            check_session(instrument, now=now)
            if base_free is not None and base_free < position.quantity:
                raise InsufficientFunds(
                    f"the exchange holds {base_free} free to sell; the position is "
                    f"{position.quantity}"
                )
            _note_quantity(run, position.quantity)
            return await intents.reserve_close(
                tx,
                position,
                event_id=run.event_id,
                strategy_id=strategy.id,
                account_id=run.integration.account_id,
                client_order_id=client_order_id(run.dedupe_key, "c", attempt),
                symbol=instrument.symbol,
                now=now,
            )


def _note_quantity(run: Run, position_quantity: Decimal) -> None:
    signal = run.parsed.signal
    if signal is not None and signal.quantity != position_quantity:
        run.notes.append(
            f"signal quantity {signal.quantity} differs from the position's "
            f"{position_quantity}; closed the whole position"
        )


def client_order_id(dedupe_key: str, leg: str, attempt: int) -> str:
    """Deterministic from the event: the same event asks the broker for the same order.

    ``sb`` + 24 hex digits of the key's SHA-256 + the leg (``o`` open, ``c`` close) + the
    attempt number: 30 characters of ``[a-z0-9-]``, inside every exchange's charset.
    """
    return f"sb-{hashlib.sha256(dedupe_key.encode()).hexdigest()[:24]}-{leg}{attempt}"


def _assets(symbol: str, currency: str) -> tuple[str, str]:
    """(base, quote) of a ``BASE/QUOTE`` symbol; a bare symbol is quoted in ``currency``."""
    base, _, quote = symbol.partition("/")
    return base, (quote.split(":")[0] or currency)


def _terms(account: AccountConfig) -> AccountTerms:
    return AccountTerms(
        allow_short=account.allow_short,
        short_margin=account.short_margin,
        fee_bps=account.fee_bps,
        slippage_bps=account.slippage_bps,
    )
