"""Claiming a position for a close (app/trading.py), on a real database of each kind."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from app import intents, migrate, strategies, trading
from app.database import Database, create_engine
from app.instruments import Instrument
from app.rules import AccountTerms, Funds, OrderPlan
from app.sessions import ALWAYS
from app.sql import Statement
from tests.conftest import Service, signal


class CheckFailed(Exception):
    """What a close's check after the claim raises (market closed, instrument gone...)."""


def opened_strategy(service: Service) -> int:
    assert service.send("SIGNAL_OPEN", signal(quantity=1)).status_code == 200
    (row,) = service.rows("SELECT strategy_id FROM positions WHERE status = 'open'")
    return int(row["strategy_id"])


def test_of_two_closes_one_claims_and_the_other_finds_the_position_closing(
    service: Service,
) -> None:
    strategy_id = opened_strategy(service)

    async def scenario() -> None:
        database = Database(create_engine(service.database_url))
        try:

            async def second_close() -> tuple[object, object]:
                async with database.transaction() as tx:
                    claimed = await trading.claim_close(tx, strategy_id)
                    return claimed, await trading.position_of(tx, strategy_id)

            async with database.transaction() as tx:
                first = await trading.claim_close(tx, strategy_id)
                second = asyncio.create_task(second_close())
                await asyncio.sleep(0.2)
                # It waits: for the row's lock on PostgreSQL, for the one writer on SQLite.
                assert not second.done()
            assert first is not None
            assert first.status == "closing"
            assert first.quantity == 1
            claimed, seen = await asyncio.wait_for(second, 10)
            assert claimed is None
            assert seen is not None
            assert seen.status == "closing"  # the caller waits for it (LegBusy)
        finally:
            await database.dispose()

    asyncio.run(scenario())


def test_a_check_that_fails_after_the_claim_undoes_it(service: Service) -> None:
    strategy_id = opened_strategy(service)

    async def scenario() -> None:
        database = Database(create_engine(service.database_url))
        try:

            async def claim_then_fail() -> None:
                async with database.transaction() as tx:
                    assert await trading.claim_close(tx, strategy_id) is not None
                    raise CheckFailed

            with pytest.raises(CheckFailed):
                await claim_then_fail()
            async with database.snapshot() as tx:
                position = await trading.position_of(tx, strategy_id)
            assert position is not None
            assert position.status == "open"
        finally:
            await database.dispose()

    asyncio.run(scenario())
    assert service.send("SIGNAL_CLOSE", signal(quantity=1)).status_code == 200


def test_the_funds_check_and_a_re_runs_lookup_read_through_their_indexes(
    tmp_path: Path,
) -> None:
    """SQLite's plans for an open's funds check and a re-run's look at its leg's orders:
    the partial indexes of what is in flight, and orders by event (migrations 0002 and
    0003), not a read of every order or position. A partial index serves a query only when
    the query names its condition as the same literal text (``schema.PENDING_ORDER``)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/plan.db"
    engine = create_engine(url)

    async def migrated() -> None:
        await migrate.upgrade(engine)
        await engine.dispose()

    asyncio.run(migrated())

    def plan(statement: Statement) -> str:
        sql = statement.compiled(engine.dialect).sql
        connection = sqlite3.connect(tmp_path / "plan.db")
        try:
            rows = connection.execute(f"EXPLAIN QUERY PLAN {sql}", [1] * sql.count("?"))
            return "\n".join(str(row[-1]) for row in rows)
        finally:
            connection.close()

    funds = plan(trading._COMMITTED)
    assert "SEARCH orders USING INDEX orders_pending (account_id=?)" in funds
    assert "SEARCH positions USING INDEX positions_open_by_account (account_id=?)" in funds
    assert "SCAN" not in funds
    assert "SEARCH orders USING INDEX orders_event (event_id=?)" in plan(intents._LEG_ORDERS)


def test_the_funds_read_sums_every_pending_order_and_open_position(service: Service) -> None:
    """An open's funds (``trading.funds``) on an account with two long positions, two short
    ones and two pending intents: every reservation and every position's cost counted once,
    each short's collateral on top, whatever the order the database lists them in."""
    opens = [("BUY", "XAUUSD", 1), ("SELL", "BTCUSDT", Decimal("0.01"))]
    opens += [("BUY", "BTCUSDT", Decimal("0.02")), ("SELL", "XAUUSD", 2)]
    for number, (direction, ticker, quantity) in enumerate(opens):
        strategy = {"id": f"funds-{number}", "name": f"Funds {number}"}
        answer = service.send(
            "SIGNAL_OPEN",
            signal(direction=direction, ticker=ticker, quantity=quantity, strategy=strategy),
        )
        assert answer.status_code == 200, answer.text
    (event,) = service.rows("SELECT max(id) AS id, max(integration_id) AS integration FROM events")
    (account,) = service.rows("SELECT id, cash FROM accounts WHERE name = 'demo-paper'")
    account_id = int(account["id"])
    costs = [Decimal(str(row["cost"])) for row in service.rows("SELECT cost FROM positions")]
    assert len(costs) == 4
    assert sum(cost < 0 for cost in costs) == 2
    terms = AccountTerms(True, Decimal("0.5"), Decimal(1), Decimal(0))
    reserves = (Decimal("123.456789"), Decimal("0.000001"))
    instrument = Instrument(
        "XAUUSD", "XAU/USD", Decimal("0.01"), Decimal("0.01"), None, Decimal(0), ALWAYS, None
    )

    async def scenario() -> tuple[Funds, bool]:
        database = Database(create_engine(service.database_url))
        try:
            for number, reserve in enumerate(reserves):  # two intents left pending
                async with database.transaction() as tx:
                    strategy = await strategies.ensure_strategy(
                        tx,
                        int(event["integration"]),
                        external_id=f"pending-{number}",
                        name="",
                        enabled=None,
                        now=datetime(2026, 12, 7, tzinfo=UTC),
                    )
                    strategy_id = strategy.id
                    await intents.reserve_open(
                        tx,
                        event_id=int(event["id"]),
                        strategy_id=strategy_id,
                        account_id=account_id,
                        client_order_id=f"pending-{number}",
                        provider_position_id=f"p-{number}",
                        direction="long",
                        terms=terms,
                        decide=lambda _funds, _open, reserve=reserve: OrderPlan(
                            instrument, "buy", Decimal(1), reserve
                        ),
                        now=datetime(2026, 12, 7, tzinfo=UTC),
                    )
            async with database.transaction() as tx:
                return await trading.funds(tx, account_id, strategy_id=strategy_id, terms=terms)
        finally:
            await database.dispose()

    funds, has_open = asyncio.run(scenario())
    cash = Decimal(str(account["cash"]))
    assert has_open  # the last pending intent's position is "opening"
    assert funds.cash == cash
    assert funds.reserved == sum(reserves)
    assert funds.equity == cash + sum(costs)
    assert funds.short_collateral == sum(-cost * Decimal("1.5") for cost in costs if cost < 0)
