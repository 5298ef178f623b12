"""What an accepted event does, by its type: the step between the inbox's claim and its
answer (DESIGN.md section 3, "route by type").

A signal runs its legs (:mod:`app.legs`): a close, an open, or a close then an open; a
strategy's lifecycle event enables or disables it (and may close its position); an
integration's changes its status; the operator's own close runs a close leg. Each raises
the project's errors for the receiver to record as the event's answer.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from app import directory, strategies, trading
from app.database import Database
from app.errors import StaleSignal, StrategyPaused
from app.execution import Execution
from app.legs import Legs, Run
from app.protocol import INTEGRATION_TYPES, SIGNAL_TYPES
from app.settings import Settings

INTEGRATION_STATUS = {
    "INTEGRATION_APPROVED": "approved",
    "INTEGRATION_REJECTED": "rejected",
    "INTEGRATION_DELETED": "deleted",
}
OPERATOR_CLOSE = "OPERATOR_CLOSE"  # an inbox event type of our own: the operator's hand close


class Handlers:
    def __init__(
        self,
        *,
        settings: Settings,
        database: Database,
        execution: Execution,
        legs: Legs,
        clock: Callable[[], datetime],
    ) -> None:
        self._settings = settings
        self._database = database
        self._execution = execution
        self._legs = legs
        self._clock = clock

    async def handle(self, run: Run) -> bool:
        """Do what the event asks; False when its type asks nothing (it is ignored)."""
        event_type = run.parsed.event.type
        if event_type in SIGNAL_TYPES:
            await self._signal(run)
        elif event_type in INTEGRATION_TYPES:
            await self._integration_event(run)
        elif event_type == OPERATOR_CLOSE:
            await self._operator_close(run)
        elif run.parsed.strategy is not None:
            await self._strategy_event(run)
        else:
            return False
        return True

    async def _operator_close(self, run: Run) -> None:
        data = run.parsed.event.data
        async with self._database.transaction(run.pending) as tx:
            strategy = await strategies.strategy_by_id(tx, int(data["strategy"]))
        assert strategy is not None
        self._execution.ensure_ready(run.integration.account_name)
        closed = await self._legs.close(run, strategy, required=bool(data["required"]))
        run.notes.append("closed by the operator" if closed else "no position to close")

    async def _integration_event(self, run: Run) -> None:
        status = INTEGRATION_STATUS[run.parsed.event.type]
        async with self._database.write() as connection:
            await directory.set_integration_status(
                connection, run.integration.id, status, now=self._clock()
            )

    async def _strategy_event(self, run: Run) -> None:
        assert run.parsed.strategy is not None
        enabled = run.parsed.event.type == "STRATEGY_ENABLED"
        async with self._database.transaction(run.pending) as tx:
            strategy = await strategies.ensure_strategy(
                tx,
                run.integration.id,
                external_id=run.parsed.strategy.id,
                name=run.parsed.strategy.name,
                enabled=enabled,
                now=self._clock(),
            )
            position = await trading.position_of(tx, strategy.id)
            if enabled or position is None:
                return
            if not self._settings.close_position_on_disable:
                await trading.flag_position(
                    tx, position.id, "the provider disabled the strategy; still open"
                )
                run.notes.append(f"position {position.id} left open and flagged")
                return
        await self._legs.close(run, strategy, required=True)

    async def _signal(self, run: Run) -> None:
        signal = run.parsed.signal
        assert signal is not None
        age = abs(self._clock().timestamp() * 1000 - run.parsed.event.timestamp) / 1000
        if age > self._settings.max_signal_age_seconds:
            raise StaleSignal(
                f"the signal's timestamp is {age:.0f} s from now; at most "
                f"{self._settings.max_signal_age_seconds:.0f} s is accepted"
            )
        strategy = strategies.settled(run.strategy, name=signal.strategy.name, enabled=True)
        if strategy is None:
            async with self._database.autocommit(run.pending) as tx:  # each step idempotent
                strategy = await strategies.ensure_strategy(
                    tx,
                    run.integration.id,
                    external_id=signal.strategy.id,
                    name=signal.strategy.name,
                    enabled=True,
                    now=self._clock(),
                )
        if strategy.paused:
            raise StrategyPaused(
                f"the operator paused strategy {strategy.external_id}; the signal was stored "
                "and not executed"
            )
        self._execution.ensure_ready(run.integration.account_name)
        event_type = run.parsed.event.type
        if event_type == "SIGNAL_CLOSE":
            run.last_leg()
            await self._legs.close(run, strategy, required=True)
            return
        if event_type == "SIGNAL_REOPEN" and not await self._legs.close(
            run, strategy, required=False
        ):
            run.notes.append("reopen found no position to close; opened only")
        run.last_leg()
        await self._legs.open(run, strategy)
