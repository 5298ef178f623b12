"""Order intents (app/intents.py): an open's refused by the database where the rules let
it through, and a close's claim and intent in one statement on PostgreSQL; on a real
database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from app import intents, schema, sql, strategies, trading
from app.database import Database, create_engine
from app.errors import PositionAlreadyExists
from app.instruments import Instrument
from app.rules import UNLIMITED, AccountTerms, Funds, OrderPlan
from app.sessions import ALWAYS
from tests.conftest import Service
from tests.test_trading import opened_strategy


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
                    await intents.reserve_open(
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
    results: list[intents.OrderIntent | None] = []

    async def scenario() -> None:
        database = Database(create_engine(service.database_url))

        async def close(ticker: str, client_order_id: str) -> None:
            async with database.autocommit() as tx:
                results.append(
                    await intents.claim_and_reserve_close(
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


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_open_waiting_for_the_accounts_lock_reads_the_funds_the_one_before_it_left(
    service: Service,
) -> None:
    """On PostgreSQL an open's lock, funds read and intent are one round trip (a function of
    the connection's own, ``intent_statements.OPENING_LOCKED``). An open that waits there
    for another open's lock must read the funds as that one committed them, its
    reservation included: a statement that locked and read at once would read them as they
    were before it began (no two opens spend the same cash)."""
    opened_strategy(service)
    (event,) = service.rows("SELECT max(id) AS id, max(integration_id) AS integration FROM events")
    (account,) = service.rows("SELECT id FROM accounts WHERE name = 'demo-paper'")
    account_id = int(account["id"])
    instrument = Instrument(
        "XAUUSD", "XAU/USD", Decimal("0.01"), Decimal("0.01"), None, Decimal(0), ALWAYS, None
    )
    terms = AccountTerms(False, Decimal(1), Decimal(1), Decimal(0))
    now = datetime(2026, 12, 7, tzinfo=UTC)
    seen: dict[str, list[Decimal]] = {"first": [], "second": []}

    async def scenario() -> None:
        database = Database(create_engine(service.database_url))
        try:
            ids = {}
            for name in seen:
                async with database.transaction() as tx:
                    found = await strategies.ensure_strategy(
                        tx,
                        int(event["integration"]),
                        external_id=name,
                        name="",
                        enabled=None,
                        now=now,
                    )
                    ids[name] = found.id

            async def open_as(tx: sql.Tx, name: str, reserve: Decimal) -> None:
                def decide(funds: Funds, _has_open: bool) -> OrderPlan:
                    if funds is not UNLIMITED:  # planned first with no limit, then checked
                        seen[name].append(funds.reserved)
                    return OrderPlan(instrument, "buy", Decimal(1), reserve)

                await intents.reserve_open(
                    tx,
                    event_id=int(event["id"]),
                    strategy_id=ids[name],
                    account_id=account_id,
                    client_order_id=f"{name}-open",
                    provider_position_id=name,
                    direction="long",
                    terms=terms,
                    decide=decide,
                    now=now,
                )

            async def second() -> None:
                async with database.transaction(locking_account=account_id) as tx:
                    await open_as(tx, "second", Decimal("7"))

            async with database.transaction(locking_account=account_id) as tx:
                await open_as(tx, "first", Decimal("1000"))
                waiting = asyncio.create_task(second())
                await asyncio.sleep(0.3)
                assert not waiting.done()  # it waits for the account's lock
            await waiting
        finally:
            await database.dispose()

    asyncio.run(scenario())
    assert seen["first"] == [Decimal(0)]
    assert seen["second"] == [Decimal(1000)]
