"""``signalbridge bench`` end to end: the real command, real servers in subprocesses, the real
load generator, with small bounds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app.bench import median, processes, report
from app.bench.load import (
    process_cpu_seconds,
    processes_cpu_seconds,
    processes_cpu_used,
    steal_percent,
)
from app.cli import main
from tests.conftest import CONFIG, postgres_url

SMALL = ["--count", "40", "--seconds", "10", "--concurrency", "1,4"]


def bench(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, Any]:
    code = main(["--config", str(CONFIG), "bench", *arguments, "--json"])
    return code, json.loads(capsys.readouterr().out)


# /proc/stat counts CPU time in ticks of 10 ms a core: a bare-endpoint phase of 40
# deliveries can end before one passes, and then there is no share to report.
SECONDS_OF_TICKS = 0.05


def assert_measured(server: Any) -> None:
    assert server["startup_seconds"] > 0
    for phase in [server["warmup"], *server["phases"]]:
        if sys.platform.startswith("linux"):  # /proc/<pid>/stat
            assert phase["server_cpu_percent"] >= 0
            assert phase["server_cpu_us_per_delivery"] >= 0
        else:
            assert phase["server_cpu_percent"] is None
            assert phase["server_cpu_us_per_delivery"] is None
    assert server["peak_memory_mib"] > 0
    assert server["warmup"]["deliveries"] == 40
    assert [phase["concurrency"] for phase in server["phases"]] == [1, 4]
    for phase in server["phases"]:
        assert phase["deliveries"] == 40
        assert phase["statuses"] == {"200": 40}
        assert phase["per_second"] == pytest.approx(40 / phase["seconds"], rel=0.01)
        latency = phase["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
        steal = phase["cpu_steal_percent"]
        if sys.platform.startswith("linux") and phase["seconds"] >= SECONDS_OF_TICKS:
            assert 0 <= steal <= 100
        else:  # off Linux, or a phase the kernel's CPU clock did not tick through
            assert steal is None or 0 <= steal <= 100


def test_bench_measures_the_service_against_the_baseline_and_verifies(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, results = bench(capsys, *SMALL)
    assert code == 0
    assert results["verified"] is True
    assert results["verification"] == {"deliveries": 120, "problems": []}
    assert_measured(results["service"])
    assert_measured(results["baseline"])
    if sys.platform.startswith("linux"):
        # The kernel counts CPU time in 10 ms ticks: the bare endpoint's small phases may
        # not see one, but 120 stored deliveries take well over a tick of the service's.
        cpu = [results["service"]["warmup"], *results["service"]["phases"]]
        assert sum(phase["server_cpu_us_per_delivery"] for phase in cpu) > 0
    assert results["service"]["restart_seconds"] > 0
    assert "restart_seconds" not in results["baseline"]
    for ours, theirs in zip(
        results["service"]["phases"], results["baseline"]["phases"], strict=True
    ):
        expected = 100 * ours["per_second"] / theirs["per_second"]
        assert ours["ratio_percent"] == pytest.approx(expected, abs=0.01)
    # Each of the baseline's phases runs right after the same phase of the service.
    service, baseline = results["service"], results["baseline"]
    starts = [
        phase["started_seconds"]
        for ours, theirs in zip(
            [service["warmup"], *service["phases"]],
            [baseline["warmup"], *baseline["phases"]],
            strict=True,
        )
        for phase in (ours, theirs)
    ]
    assert starts == sorted(starts)
    assert len(set(starts)) == len(starts)
    for server in (service, baseline):  # no database server's processes to read
        assert all(phase["database_cpu_percent"] is None for phase in server["phases"])
    assert results["machine"]["database"] == "sqlite"
    assert results["machine"]["cores"] >= 1
    assert results["machine"]["python"]
    assert results["bench"]["log_level"] == "WARNING"
    assert results["bench"]["workers"] == 1


def test_a_delivery_answered_other_than_200_fails_the_bench(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 10 USD cannot buy 0.001 BTC at 65,000: every open is refused, so every close finds nothing.
    config = tmp_path / "poor.toml"
    config.write_text(
        CONFIG.read_text().replace('initial_deposit = "100000"', 'initial_deposit = "10"')
    )
    code = main(
        ["--config", str(config), "bench", "--count", "4", "--seconds", "5", "--concurrency", "1",
         "--skip-baseline"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1
    assert "FAILED verification of 8 deliveries" in out
    assert "answered other than 200: {'404': 2, '422': 2}" in out
    assert "InsufficientFunds" in out
    assert "events not done with 200: 8" in out
    assert "verified:" not in out
    assert "restart to ready (signalbridge, on the database it just wrote): " in out


def test_runs_are_reported_as_the_median_of_each_figure_with_every_run_kept(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two real runs (the median of three is the pure test's below): each figure of the
    result is the median, the mean of the two, of the runs' own."""
    code, results = bench(
        capsys, "--runs", "2", "--count", "4", "--seconds", "5", "--concurrency", "1",
        "--skip-baseline",
    )  # fmt: skip
    assert code == 0, results["verification"]
    assert results["median_of"] == 2
    runs = results["runs"]
    assert [run["verified"] for run in runs] == [True, True]
    assert results["verified"] is True
    assert results["verification"] == {"deliveries": 2 * 8, "problems": []}
    phase = results["service"]["phases"][0]
    each = [run["service"]["phases"][0] for run in runs]
    assert phase["per_run"]["per_second"] == [p["per_second"] for p in each]
    assert phase["per_second"] == pytest.approx(sum(p["per_second"] for p in each) / 2, abs=1e-3)
    assert phase["latency_ms"]["p99"] == pytest.approx(
        sum(p["latency_ms"]["p99"] for p in each) / 2, abs=1e-3
    )
    assert phase["deliveries"] == 4
    assert phase["statuses"] == {"200": 8}
    startups = [run["service"]["startup_seconds"] for run in runs]
    assert results["service"]["startup_seconds"] == pytest.approx(sum(startups) / 2, abs=1e-3)
    # Each run drove a server of its own on a fresh database, under its own prefix.
    prefixes = {run["service"]["phases"][0]["strategy_prefix"] for run in runs}
    assert len(prefixes) == 2


def test_the_median_of_runs_keeps_what_was_wrong_in_any_of_them() -> None:
    def run(per_second: float, steal: float | None, problems: list[str]) -> dict[str, Any]:
        phase = {
            "name": "c1", "concurrency": 1, "deliveries": 10, "seconds": 1.0,
            "per_second": per_second, "cpu_steal_percent": steal, "server_cpu_percent": None,
            "server_cpu_us_per_delivery": None, "database_cpu_percent": None,
            "database_cpu_us_per_delivery": None, "unanswered": 0, "pairs": 5,
            "statuses": {"200": 10}, "samples": [],
            "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0},
        }  # fmt: skip
        service = {"startup_seconds": 0.5, "peak_memory_mib": 80.0, "restart_seconds": 0.4,
                   "warmup": phase, "phases": [phase], "log_tail": ""}  # fmt: skip
        return {
            "service": service, "baseline": None, "verified": not problems,
            "verification": {"deliveries": 20, "problems": problems},
            "machine": {"cores": 2, "python": "3.11", "platform": "Linux", "database": "sqlite",
                        "load_event_loop": "uvloop", "load_average_at_start": None},
            "bench": {"count": 10, "seconds": 1.0, "workers": 1, "log_level": "WARNING"},
        }  # fmt: skip

    combined = median.combine([run(100.0, 0.5, []), run(300.0, None, ["lost one"]),
                               run(200.0, None, [])])  # fmt: skip
    assert combined["verified"] is False
    assert combined["verification"] == {"deliveries": 60, "problems": ["run 2: lost one"]}
    phase = combined["service"]["phases"][0]
    assert phase["per_second"] == 200.0
    assert phase["cpu_steal_percent"] == 0.5  # the median of what was read
    assert phase["server_cpu_percent"] is None  # read in no run
    assert phase["deliveries"] == 10
    assert isinstance(phase["deliveries"], int)
    assert combined["baseline"] is None
    text = report.as_text(combined)
    assert "runs: 3, one after another" in text
    assert "concurrency 1, per second in each run: 100, 300, 200" in text
    assert "FAILED verification of 60 deliveries" in text
    assert "run 2: lost one" in text
    with pytest.raises(ValueError, match="no runs"):
        median.combine([])


@pytest.mark.parametrize("arguments", [["--concurrency", "0"], ["--concurrency", "1,x"],
                                       ["--count", "1"], ["--count", "400000"],
                                       ["--runs", "0"], ["--runs", "10"]])  # fmt: skip
def test_bounds_are_checked_before_anything_starts(
    arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(CONFIG), "bench", *arguments]) == 2
    assert capsys.readouterr().err.startswith("signalbridge bench: ")


def test_bench_on_postgresql_uses_a_fresh_database_and_drops_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = postgres_url()
    before = asyncio.run(bench_databases(server))
    code, results = bench(capsys, *SMALL, "--skip-baseline", "--database-url", server)
    assert code == 0, results["verification"]
    assert results["verified"] is True
    assert results["machine"]["database"] == "postgresql"
    assert results["baseline"] is None
    assert_measured(results["service"])
    assert results["service"]["restart_seconds"] > 0
    assert asyncio.run(bench_databases(server)) == before
    # The server runs on this machine: its processes' CPU is read too, and 120 stored
    # deliveries take it well over a tick.
    phases = [results["service"]["warmup"], *results["service"]["phases"]]
    if sys.platform.startswith("linux"):
        assert all(phase["database_cpu_us_per_delivery"] >= 0 for phase in phases)
        assert sum(phase["database_cpu_us_per_delivery"] for phase in phases) > 0
    else:
        assert all(phase["database_cpu_us_per_delivery"] is None for phase in phases)


async def bench_databases(url: str) -> set[str]:
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        rows = await connection.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE 'signalbridge_bench_%'"
        )
        return {row["datname"] for row in rows}
    finally:
        await connection.close()


def test_stolen_cpu_is_the_share_of_all_ticks_between_two_readings() -> None:
    assert steal_percent((10, 1_000), (60, 2_000)) == 5.0
    assert steal_percent((10, 1_000), (10, 1_500)) == 0.0
    assert steal_percent(None, (60, 2_000)) is None  # no /proc/stat
    assert steal_percent((10, 1_000), (10, 1_000)) is None  # no time passed


def test_the_database_cpu_counts_the_processes_read_at_both_ends() -> None:
    before = {10: 1.0, 11: 2.0, 12: 5.0}  # 12 exits during the phase, 13 starts in it
    after = {10: 1.5, 11: 2.25, 13: 0.5}
    assert processes_cpu_used(before, after) == 0.75
    assert processes_cpu_used({}, after) is None
    if sys.platform.startswith("linux"):
        assert processes_cpu_seconds([os.getpid(), 2**22 + 1]).keys() == {os.getpid()}


def test_a_process_cpu_time_is_read_from_its_stat() -> None:
    """The user and system fields of /proc/<pid>/stat, in seconds: our own agrees with
    time.process_time() to within a few of the kernel's ticks. Without /proc: None."""
    deadline = time.process_time() + 0.1
    while time.process_time() < deadline:  # some CPU time to read
        pass
    read, own = process_cpu_seconds(os.getpid()), time.process_time()
    if sys.platform.startswith("linux"):
        assert read == pytest.approx(own, abs=0.05)
    else:
        assert read is None
    assert process_cpu_seconds(None) is None


BASELINE = [sys.executable, "-m", "app.bench.baseline", "--port"]


def test_a_server_whose_port_was_taken_starts_again_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process binds the chosen port before the server does: the race free_port has.
    with socket.create_server(("127.0.0.1", 0)) as taken:
        chosen = [taken.getsockname()[1]]
        free_port = processes.free_port
        monkeypatch.setattr(processes, "free_port", lambda: chosen.pop() if chosen else free_port())
        server, seconds = processes.start_ready(BASELINE, log=tmp_path / "log", env={})
        try:
            assert server.port != taken.getsockname()[1]
            assert 0 < seconds < processes.READY_TIMEOUT_SECONDS
            assert processes._status("127.0.0.1", server.port, "/readyz") == 200
        finally:
            server.stop()


def test_a_port_taken_at_every_start_stops_the_bench(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with contextlib.ExitStack() as stack:
        taken = [
            stack.enter_context(socket.create_server(("127.0.0.1", 0))).getsockname()[1]
            for _ in range(processes.START_ATTEMPTS)
        ]
        chosen = list(taken)
        monkeypatch.setattr(processes, "free_port", lambda: chosen.pop(0))
        with pytest.raises(processes.PortTaken, match=f"port {taken[-1]} was taken"):
            processes.start_ready(BASELINE, log=tmp_path / "log", env={})
        assert chosen == []  # every attempt made, each on its own port
