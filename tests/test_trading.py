"""Reserving an open and claiming a position for a close (app/trading.py), on a real
database of each kind."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from app import migrate, schema, sql, trading
from app.database import Database, create_engine
from app.errors import PositionAlreadyExists
from app.instruments import Instrument
from app.rules import AccountTerms, OrderPlan
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


def test_the_database_refuses_a_second_position_the_rules_let_through(service: Service) -> None:
    """Invariant 1 is the partial unique index's, not the rules': an open whose rules did
    not see the strategy's position (``decide`` ignores it here) is refused by the
    position's insert, and leaves neither a position nor an order behind."""
    strategy_id = opened_strategy(service)
    (row,) = service.rows("SELECT account_id, event_id FROM orders")
    instrument = Instrument(
        "XAUUSD", "XAU/USD", Decimal("0.01"), Decimal("0.01"), None, Decimal(0), ALWAYS, None
    )
    plan = OrderPlan(instrument, "buy", Decimal(1), Decimal("2350.24"))
    terms = AccountTerms(False, Decimal(1), Decimal(1), Decimal(0))
    seen: list[bool] = []

    def decide(_funds: object, has_open: bool) -> OrderPlan:
        seen.append(has_open)
        return plan

    async def scenario() -> None:
        database = Database(create_engine(service.database_url))
        try:
            with pytest.raises(PositionAlreadyExists):
                async with database.transaction() as tx:
                    await trading.reserve_open(
                        tx,
                        event_id=int(row["event_id"]),
                        strategy_id=strategy_id,
                        account_id=int(row["account_id"]),
                        client_order_id="second-open",
                        provider_position_id="p-2",
                        direction="long",
                        terms=terms,
                        decide=decide,
                        now=datetime(2026, 12, 7, tzinfo=UTC),
                    )
        finally:
            await database.dispose()

    asyncio.run(scenario())
    assert seen == [True]  # the rules were told, and let it through all the same
    (counts,) = service.rows(
        "SELECT (SELECT count(*) FROM positions) AS positions,"
        " (SELECT count(*) FROM orders) AS orders"
    )
    assert (counts["positions"], counts["orders"]) == (1, 1)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_close_in_one_statement_claims_only_an_open_position_in_its_ticker(
    service: Service,
) -> None:
    strategy_id = opened_strategy(service)  # 1 XAUUSD at 2350.00
    (row,) = service.rows(
        "SELECT positions.id AS id, orders.account_id, orders.event_id FROM positions, orders"
    )
    results: list[trading.OrderIntent | None] = []

    async def scenario() -> None:
        database = Database(create_engine(service.database_url))

        async def close(ticker: str, client_order_id: str) -> None:
            async with database.autocommit() as tx:
                results.append(
                    await trading.claim_and_reserve_close(
                        tx,
                        strategy_id=strategy_id,
                        ticker=ticker,
                        event_id=int(row["event_id"]),
                        account_id=int(row["account_id"]),
                        client_order_id=client_order_id,
                        symbol="XAU/USD",
                        now=datetime(2026, 12, 7, tzinfo=UTC),
                    )
                )

        try:
            await close("BTCUSDT", "c-1")  # not the position's ticker
            async with database.transaction() as tx:  # an earlier event's close claims it
                assert await trading.claim_close(tx, strategy_id) is not None
            await close("XAUUSD", "c-2")  # closing, not open
            async with database.transaction() as tx:  # that close gave it back
                await sql.update_row(tx, schema.positions, int(row["id"]), status="open")
            await close("XAUUSD", "c-3")
        finally:
            await database.dispose()

    asyncio.run(scenario())
    first, second, third = results
    assert first is None
    assert second is None
    assert third is not None
    assert (third.purpose, third.side, third.ticker, third.symbol) == (
        "close",
        "sell",
        "XAUUSD",
        "XAU/USD",
    )
    assert third.quantity == 1
    assert third.held == (1, Decimal("2350.00"))
    orders = service.rows("SELECT client_order_id, position_id, status FROM orders ORDER BY id")
    assert [(o["client_order_id"], o["status"]) for o in orders][1:] == [("c-3", "pending")]
    assert orders[1]["position_id"] == row["id"]
    (position,) = service.rows("SELECT status FROM positions")
    assert position["status"] == "closing"


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
    assert "SEARCH orders USING INDEX orders_event (event_id=?)" in plan(trading._LEG_ORDERS)
