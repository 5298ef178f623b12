"""The in-process driver (app/bench/inprocess.py): the service's app called directly, on a
real SQLite file (or PostgreSQL database), with the bench's requests."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from app.bench.inprocess import main
from tests.conftest import CONFIG, postgres_fetch


def test_it_drives_the_app_and_reports_each_answer_and_the_cpu_per_delivery(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        ["--config", str(CONFIG), "--pairs", "6", "--warmup", "2", "--concurrency", "3", "--json"]
    )
    figures = json.loads(capsys.readouterr().out)
    assert code == 0
    assert figures["deliveries"] == 12
    assert figures["statuses"] == {"200": 12}
    assert figures["concurrency"] == 3
    assert figures["per_second"] > 0
    assert figures["cpu_us_per_delivery"] == pytest.approx(
        figures["user_us_per_delivery"] + figures["system_us_per_delivery"], abs=0.2
    )
    assert figures["round_trips_per_delivery"] is None  # SQLite's statements make none


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_on_postgresql_it_counts_a_deliverys_round_trips(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """At c=1 each delivery flushes alone, so the count is exact: an open makes 8 round
    trips (the token check, the delivery stored, its strategy found or created, BEGIN with
    the account's lock, the funds read with the position and intent made, COMMIT, the fill
    with the answer stored, the flush), a close 5 (the token check, which also reads the
    strategy it names, the delivery stored, the claim and intent, the fill with the answer,
    the flush).
    A change that adds one to a delivery's path shows here (and belongs in the README's
    Performance section). The run makes its own database beside the one named."""
    arguments = ["--config", str(CONFIG), "--database-url", database_url, "--json"]
    code = main([*arguments, "--pairs", "5", "--warmup", "1", "--concurrency", "1"])
    figures = json.loads(capsys.readouterr().out)
    assert code == 0
    assert figures["statuses"] == {"200": 10}
    assert figures["round_trips_per_delivery"] == (8 + 5) / 2
    # The named database (built, with no rows) is left as it was: the run had its own.
    [[stored]] = asyncio.run(postgres_fetch(database_url, [("SELECT count(*) FROM events", [])]))
    assert stored[0] == 0


def test_answers_other_than_200_fail_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 10 USD cannot buy 0.001 BTC at 65,000: every open is refused, every close finds nothing.
    config = tmp_path / "poor.toml"
    config.write_text(
        CONFIG.read_text().replace('initial_deposit = "100000"', 'initial_deposit = "10"')
    )
    code = main(["--config", str(config), "--pairs", "2", "--warmup", "0", "--concurrency", "1"])
    out = capsys.readouterr().out
    assert code == 1
    assert "4 deliveries at c=1" in out
    assert "answers {'404': 2, '422': 2}" in out


def test_a_config_trading_on_a_live_venue_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "live.toml"
    config.write_text(
        CONFIG.read_text()
        .replace('broker = "paper"', 'broker = "ccxt"\nexchange = "binance"')
        .replace("allow_short = true", "allow_short = false")
    )
    assert main(["--config", str(config), "--pairs", "1", "--warmup", "0"]) == 2
    assert "trading on a paper account" in capsys.readouterr().err


def test_bounds_are_checked_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(CONFIG), "--pairs", "0"]) == 2
    assert "pairs at least 1" in capsys.readouterr().err
