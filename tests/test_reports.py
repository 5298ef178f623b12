"""Recording a broker's report (app/reports.py), on a real database of each kind.

On PostgreSQL a report of one new fill is written in one statement, anything else row by
row; on SQLite always row by row. The service's own tests (an open, a close: one fill
each) run the one-statement form on PostgreSQL and the rows on SQLite against the same
expected figures; these drive the reports a paper broker never sends: a close reported in
parts, a fill reported again, several fills in one report. Right after a broker's answer
the one statement runs without a transaction around it, with the position's book the
intent knew (``apply_new_fill``); the last tests find it writing nothing where the rows are
not as that intent left them."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text

from app import inbox, intents, reports, trading
from app.broker import Fill, OrderReport, OrderStatus
from app.database import Database, Pending, create_engine
from app.execution import Execution
from app.metrics import Metrics
from app.paper import PaperBroker
from app.sql import Statement
from app.workers import Worker
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

    async def record(database: Database, intent: intents.OrderIntent) -> None:
        for answer in answers:
            async with database.transaction() as tx:
                await reports.apply_report(tx, intent, answer, now=AT)

    with_close_intent(service, quantity, record)


def with_close_intent(
    service: Service,
    quantity: int,
    then: Callable[[Database, intents.OrderIntent], Awaitable[None]],
) -> None:
    """Open a long of ``quantity``, claim it for a close and make the close's intent, as
    a close leg does; then ``then`` (on a database of its own)."""
    strategy_id, account_id, event_id = open_position(service, quantity)

    async def scenario() -> None:
        database = Database(create_engine(service.database_url))
        try:
            async with database.transaction() as tx:
                position = await trading.claim_close(tx, strategy_id)
                assert position is not None
                intent = await intents.reserve_close(
                    tx,
                    position,
                    event_id=event_id,
                    strategy_id=strategy_id,
                    account_id=account_id,
                    client_order_id="close-in-parts",
                    symbol="XAU/USD",
                    now=AT,
                )
            await then(database, intent)
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
    # flag (1 still open) went with the position's close.
    assert position(service) == ("closed", 0, 0, None)
    assert [quantity for _, quantity in trades(service)] == [1, 1]
    book = check_invariants(service, settled=True)
    assert Decimal(book["balance"]) == Decimal(100000) - 4700 - Decimal("0.47") + 4700 - 2


def test_a_close_finished_by_a_report_of_one_fill_clears_the_partial_flag(
    service: Service,
) -> None:
    """The last report names only the fill that finishes the close: on PostgreSQL the
    one-statement form writes it, and clears the flag the first report left as well."""
    first, second = fill("f-1", "1", "2400.00"), fill("f-2", "1", "2300.00")
    partly: list[str | None] = []

    async def record(database: Database, intent: intents.OrderIntent) -> None:
        async with database.transaction() as tx:
            await reports.apply_report(tx, intent, report("pending", first), now=AT)
        partly.append((await asyncio.to_thread(position, service))[3])
        async with database.transaction() as tx:
            await reports.apply_report(tx, intent, report("filled", second), now=AT)

    with_close_intent(service, 2, record)

    assert partly == ["close partially filled: 1 still open"]
    assert position(service) == ("closed", 0, 0, None)
    check_invariants(service, settled=True)


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


def fills_and_trades(service: Service) -> tuple[int, int]:
    (row,) = service.rows(
        "SELECT (SELECT count(*) FROM fills) AS fills,"
        " (SELECT count(*) FROM ledger_transactions WHERE kind = 'trade') AS trades"
    )
    return int(row["fills"]), int(row["trades"])


async def alone(
    database: Database,
    intent: intents.OrderIntent,
    answer: OrderReport,
    *,
    carrying: inbox.AnswerWithFill | None = None,
) -> bool:
    """What a leg does with its broker's answer on PostgreSQL (``Execution.execute``)."""
    assert reports.applies_alone(database.dialect.name, intent, answer)
    values = None if carrying is None else carrying.values(AT)
    async with database.autocommit() as tx:
        return await reports.apply_new_fill(tx, intent, answer, now=AT, answer=values)


def test_only_one_fill_about_an_intent_just_made_is_recorded_alone(service: Service) -> None:
    made: list[intents.OrderIntent] = []

    async def keep(_database: Database, intent: intents.OrderIntent) -> None:
        made.append(intent)

    with_close_intent(service, 2, keep)
    (intent,) = made
    dialect = "postgresql" if service.database_url.startswith("postgresql") else "sqlite"
    one = report("filled", fill("f-1", "2", "2400.00"))
    two = report("filled", fill("f-1", "1", "2400.00"), fill("f-2", "1", "2400.00"))
    assert intent.held == (2, 4700)  # the claimed position's quantity and cost
    assert reports.applies_alone(dialect, intent, one) == (dialect == "postgresql")
    assert not reports.applies_alone(dialect, intent, two)

    (row,) = service.rows("SELECT event_id FROM orders WHERE purpose = 'close'")

    async def read_back() -> list[intents.OrderIntent]:
        database = Database(create_engine(service.database_url))
        try:
            async with database.snapshot() as tx:
                return await intents.pending_intents(tx, event_id=int(row["event_id"]))
        finally:
            await database.dispose()

    (again,) = asyncio.run(read_back())
    assert again.order_id == intent.order_id
    assert again.held is None  # an intent read back: its position's book is not known
    assert not reports.applies_alone(dialect, again, one)


POSTGRESQL = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@POSTGRESQL
def test_a_fill_recorded_alone_writes_what_the_rows_would(service: Service) -> None:
    recorded: list[bool] = []

    async def record(database: Database, intent: intents.OrderIntent) -> None:
        recorded.append(
            await alone(database, intent, report("filled", fill("f-1", "2", "2400.00")))
        )

    with_close_intent(service, 2, record)

    assert recorded == [True]
    assert close_order(service) == ("filled", Decimal(2), Decimal("1.00"))
    assert position(service) == ("closed", 0, 100, None)  # (2400 - 2350) * 2
    assert fills_and_trades(service) == (2, 2)
    book = check_invariants(service, settled=True)
    assert Decimal(book["balance"]) == Decimal(100000) - 4700 - Decimal("0.47") + 4800 - 1


def event_answer(service: Service, event_id: int) -> tuple[object, ...]:
    (row,) = service.rows(
        "SELECT state, answer_status, answer_body, error_type, note, timings FROM events"
        " WHERE id = ?",
        event_id,
    )
    return tuple(row[column] for column in row.keys())  # noqa: SIM118 (sqlite3.Row)


@POSTGRESQL
def test_a_fill_alone_stores_the_answer_it_carries_only_when_it_is_recorded(
    service: Service,
) -> None:
    """A delivery's last fill carries its answer (inbox.AnswerWithFill): written with the
    fill as inbox.finish writes it, or, when the fill statement writes nothing, not at all
    (the receiver then stores it). The event here is the open's, answered before."""
    answered: list[tuple[object, ...]] = []
    answer = report("filled", fill("f-1", "2", "2400.00"))
    query = "SELECT event_id FROM orders WHERE purpose = 'close'"

    async def record(database: Database, intent: intents.OrderIntent) -> None:
        (row,) = await asyncio.to_thread(service.rows, query)
        event_id = int(row["event_id"])
        refused = inbox.AnswerWithFill(event_id, ["refused"], {"broker_ms": 1.5})
        moved = dataclasses.replace(intent, held=(Decimal(3), Decimal(4700)))
        assert not await alone(database, moved, answer, carrying=refused)
        answered.append(await asyncio.to_thread(event_answer, service, event_id))
        carried = inbox.AnswerWithFill(event_id, ["closed", "here"], {"broker_ms": 2.25})
        assert await alone(database, intent, answer, carrying=carried)

    with_close_intent(service, 2, record)

    (row,) = service.rows(query)
    event_id = int(row["event_id"])
    assert answered == [("done", 200, "", None, None, answered[0][5])]  # the open's own
    assert event_answer(service, event_id) == (
        "done",
        200,
        "",
        None,
        "closed; here",
        '{"broker_ms": 2.25}',
    )
    assert position(service) == ("closed", 0, 100, None)


def test_an_answer_is_stored_with_its_fill_when_the_fill_goes_row_by_row(
    service: Service,
) -> None:
    """Execution.execute writes the answer it was given in its fill's own block when the
    report goes row by row (every report on SQLite; on PostgreSQL one whose statement wrote
    nothing, here an intent whose position moved), and says so: the receiver then does not
    store it again, and a crash cannot leave a filled event unanswered. The event here is
    the open's, answered before."""
    stored: list[bool] = []
    (account,) = service.settings.accounts
    query = "SELECT event_id FROM orders WHERE purpose = 'close'"

    async def record(database: Database, intent: intents.OrderIntent) -> None:
        (row,) = await asyncio.to_thread(service.rows, query)
        broker = PaperBroker.for_account(service.settings, account, clock=lambda: AT)
        execution = Execution(
            database=database,
            accounts={account.name: account},
            brokers={account.name: broker},
            clock=lambda: AT,
            timeout=5,
            metrics=Metrics(),
            worker=Worker(0),
        )
        moved = dataclasses.replace(intent, held=(Decimal(3), Decimal(4700)))
        carried = inbox.AnswerWithFill(int(row["event_id"]), ["by", "rows"], {"broker_ms": 2.5})
        pending = Pending()
        await execution.execute(account.name, moved, timings={}, pending=pending, answer=carried)
        await pending.durable()
        stored.append(carried.stored)

    with_close_intent(service, 2, record)

    assert stored == [True]
    assert close_order(service) == ("filled", Decimal(2), Decimal("0.47"))  # row by row
    (row,) = service.rows(query)
    answer = ("done", 200, "", None, "by; rows", '{"broker_ms": 2.5}')
    assert event_answer(service, int(row["event_id"])) == answer


@POSTGRESQL
def test_a_fill_alone_on_rows_not_as_its_intent_left_them_writes_nothing(
    service: Service,
) -> None:
    outcomes: list[bool] = []
    answer = report("filled", fill("f-1", "2", "2400.00"))

    async def record(database: Database, intent: intents.OrderIntent) -> None:
        # The position moved since the intent was made (a fill applied elsewhere).
        moved = dataclasses.replace(intent, held=(Decimal(3), Decimal(4700)))
        outcomes.append(await alone(database, moved, answer))
        # The order was settled meanwhile (a reconciler found it rejected): no longer
        # pending, its position as it was.
        async with database.transaction() as tx:
            await reports.apply_report(tx, intent, report("rejected"), now=AT)
        outcomes.append(await alone(database, intent, answer))

    with_close_intent(service, 2, record)

    assert outcomes == [False, False]
    assert fills_and_trades(service) == (1, 1)  # the open's only
    assert close_order(service) == ("rejected", 0, 0)
    assert position(service) == ("open", 2, 0, None)
    check_invariants(service, settled=True)


@POSTGRESQL
def test_a_fill_recorded_alone_twice_is_recorded_once(service: Service) -> None:
    outcomes: list[bool] = []
    first = report("pending", fill("f-1", "1", "2400.00"))

    async def record(database: Database, intent: intents.OrderIntent) -> None:
        outcomes.append(await alone(database, intent, first))
        # The order is still pending: only the fill's uniqueness stops a second posting.
        held_after = dataclasses.replace(intent, held=(Decimal(1), Decimal(2350)))
        outcomes.append(await alone(database, held_after, first))

    with_close_intent(service, 2, record)

    assert outcomes == [True, False]
    assert fills_and_trades(service) == (2, 2)
    assert close_order(service) == ("pending", Decimal(1), Decimal("1.00"))
    assert position(service) == ("open", 1, 50, "close partially filled: 1 still open")


@POSTGRESQL
def test_a_fill_alone_waits_for_a_report_under_way_and_then_writes_nothing(
    service: Service,
) -> None:
    outcomes: list[bool] = []

    async def record(database: Database, intent: intents.OrderIntent) -> None:
        waiting = asyncio.Event()

        async def report_under_way() -> None:
            async with database.transaction() as tx:  # holds the order and position rows
                await reports.apply_report(
                    tx, intent, report("pending", fill("f-1", "1", "2400.00")), now=AT
                )
                waiting.set()
                async with database.snapshot() as watch:  # until the other waits on a lock
                    for _ in range(200):
                        if await watch.scalar(_WAITING_ON_A_LOCK):
                            break
                        await asyncio.sleep(0.01)
                    else:
                        raise AssertionError("the statement did not wait for the rows")

        async def fill_alone() -> None:
            await waiting.wait()
            answer = report("filled", fill("f-2", "2", "2400.00"))
            outcomes.append(await alone(database, intent, answer))

        await asyncio.gather(report_under_way(), fill_alone())

    with_close_intent(service, 2, record)

    assert outcomes == [False]  # the book it was given moved while it waited
    assert fills_and_trades(service) == (2, 2)  # the open's and the first report's
    assert position(service) == ("open", 1, 50, "close partially filled: 1 still open")
    check_invariants(service)


_WAITING_ON_A_LOCK = Statement(
    select(func.count())
    .where(text("wait_event_type = 'Lock'"), text("datname = current_database()"))
    .select_from(text("pg_stat_activity"))
)
