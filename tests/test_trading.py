"""Claiming a position for a close (app/trading.py), on a real database of each kind."""

from __future__ import annotations

import asyncio

import pytest

from app import trading
from app.database import Database, create_engine
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
