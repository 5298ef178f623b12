"""Recording a broker's report (app/reports.py), on a real database of each kind.

On PostgreSQL a report of one new fill is written in one statement, anything else row by
row; on SQLite always row by row. The service's own tests (an open, a close: one fill
each) run the one-statement form on PostgreSQL and the rows on SQLite against the same
expected figures; these drive the reports a paper broker never sends: a close reported in
parts, a fill reported again, several fills in one report."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

from app import reports, trading
from app.broker import Fill, OrderReport, OrderStatus
from app.database import Database, create_engine
from tests.conftest import Service, check_invariants, signal

AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def open_position(service: Service, quantity: int) -> tuple[int, int, int]:
    """Open a long of ``quantity`` XAUUSD at 2350.00; the strategy, account and event ids."""
    assert service.send("SIGNAL_OPEN", signal(quantity=quantity)).status_code == 200
    (row,) = service.rows(
        "SELECT strategy_id, account_id, event_id FROM orders WHERE purpose = 'open'"
    )
    return int(row["strategy_id"]), int(row["account_id"]), int(row["event_id"])


def fill(fill_id: str, quantity: str, price: str) -> Fill:
    return Fill(fill_id, Decimal(quantity), Decimal(price), Decimal("1.00"), AT)


def close_in_reports(service: Service, quantity: int, *answers: OrderReport) -> None:
    """Claim the open position for a close, then record each report of its order in a
    transaction of its own, as a re-run settling with the broker would."""
    strategy_id, account_id, event_id = open_position(service, quantity)

    async def scenario() -> None:
        database = Database(create_engine(service.database_url))
        try:
            async with database.transaction() as tx:
                position = await trading.claim_close(tx, strategy_id)
                assert position is not None
                intent = await trading.reserve_close(
                    tx,
                    position,
                    event_id=event_id,
                    strategy_id=strategy_id,
                    account_id=account_id,
                    client_order_id="close-in-parts",
                    symbol="XAU/USD",
                    now=AT,
                )
            for answer in answers:
                async with database.transaction() as tx:
                    await reports.apply_report(tx, intent, answer, now=AT)
        finally:
            await database.dispose()

    asyncio.run(scenario())


def report(status: OrderStatus, *fills: Fill) -> OrderReport:
    return OrderReport("close-in-parts", "venue-7", status, fills)


def close_order(service: Service) -> tuple[str, Decimal, Decimal]:
    (row,) = service.rows("SELECT status, filled_quantity, fee FROM orders WHERE purpose = 'close'")
    return row["status"], Decimal(row["filled_quantity"]), Decimal(row["fee"])


def position(service: Service) -> tuple[str, Decimal, Decimal, str | None]:
    (row,) = service.rows("SELECT status, quantity, realized_pnl, attention FROM positions")
    return row["status"], Decimal(row["quantity"]), Decimal(row["realized_pnl"]), row["attention"]


def trades(service: Service) -> list[tuple[str, Decimal]]:
    """The close's ledger transactions: each one's reference and quantity."""
    return [
        (row["reference"], Decimal(row["quantity"]))
        for row in service.rows(
            "SELECT reference, quantity FROM ledger_transactions WHERE side = 'sell' ORDER BY id"
        )
    ]


def test_a_fill_reported_again_is_applied_once(service: Service) -> None:
    first = fill("f-1", "1", "2400.00")
    close_in_reports(service, 2, report("pending", first), report("filled", first))

    assert close_order(service) == ("filled", Decimal(1), Decimal("1.00"))
    assert position(service) == ("open", 1, Decimal(50), "close partially filled: 1 still open")
    [(reference, quantity)] = trades(service)
    assert quantity == 1
    (row,) = service.rows("SELECT count(*) AS fills FROM fills")
    assert row["fills"] == 2  # the open's and this one
    book = check_invariants(service)
    # Cash: 100,000, less the open's 4,700 and fee (2350 * 2 * 0.0001 = 0.47), plus one
    # sale's 2,400 less its fee, once.
    assert Decimal(book["balance"]) == Decimal(100000) - 4700 - Decimal("0.47") + 2400 - 1
    assert reference.startswith("fill:")


def test_a_close_reported_in_parts_applies_each_fill_once(service: Service) -> None:
    first, second = fill("f-1", "1", "2400.00"), fill("f-2", "1", "2300.00")
    close_in_reports(service, 2, report("pending", first), report("filled", first, second))

    assert close_order(service) == ("filled", Decimal(2), Decimal("2.00"))
    # Realized (fees are booked apart): (2400 - 2350) + (2300 - 2350). The first report's
    # flag stays on the closed position, as it did before the one-statement form.
    assert position(service) == ("closed", 0, 0, "close partially filled: 1 still open")
    assert [quantity for _, quantity in trades(service)] == [1, 1]
    book = check_invariants(service, settled=True)
    assert Decimal(book["balance"]) == Decimal(100000) - 4700 - Decimal("0.47") + 4700 - 2


def test_several_fills_in_one_report_are_each_posted(service: Service) -> None:
    close_in_reports(
        service,
        3,
        report("filled", fill("f-1", "1", "2360.00"), fill("f-2", "2", "2340.00")),
    )

    assert close_order(service) == ("filled", Decimal(3), Decimal("2.00"))
    # Realized (fees are booked apart): (2360 - 2350) * 1 + (2340 - 2350) * 2
    assert position(service) == ("closed", 0, -10, None)
    assert [quantity for _, quantity in trades(service)] == [1, 2]
    check_invariants(service, settled=True)
