"""``signalbridge bench``: start the service, drive it, measure it, check it.

1. The service starts in a subprocess (``python -m app serve``, one worker, the config the
   CLI was given, log level WARNING so that per-request INFO lines do not dominate) on a fresh
   database (:mod:`app.bench.database`); start-up time runs from the spawn to the first
   ``200`` from ``/readyz``.
2. The load generator (:mod:`app.bench.load`, a process of its own, on loopback) sends a
   warm-up, then one phase per concurrency: distinct ``SIGNAL_OPEN`` / ``SIGNAL_CLOSE`` pairs
   of BTCUSDT (it trades around the clock), one new strategy per pair. The server's peak
   memory is read before it stops; then it is started again on the same database and that
   restart is timed to ready as well.
3. The bare Starlette app (:mod:`app.bench.baseline`), served with the same uvicorn settings
   beside the service, takes the same requests at the same concurrencies, each of its phases
   run right after the service's: every throughput of the service is also given as a
   percentage of the baseline's, from two measurements seconds apart, since a shared machine's
   speed drifts within minutes.
4. Every delivery must have been answered ``200``, and the database must hold each exactly
   once with one filled order, no open position and a balanced ledger. Exit code 0 when
   verified, 1 when not, 2 when the bench could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from app.bench import BenchError, database, load, median, processes, report
from app.bench.baseline import PATH
from app.settings import IntegrationConfig, Settings, config_path

LOG_LEVEL = "WARNING"
TICKER = "BTCUSDT"
QUANTITY = Decimal("0.001")
WARMUP_COUNT = 200
WARMUP_SECONDS = 2.0
MAX_CONCURRENCY = 1024
MAX_RUNS = 9


@dataclass(frozen=True)
class Plan:
    config: Path
    token_header: str
    token: str
    count: int
    seconds: float
    concurrency: tuple[int, ...]
    database_url: str | None
    skip_baseline: bool
    runs: int = 1

    @classmethod
    def from_arguments(cls, arguments: argparse.Namespace, settings: Settings) -> Plan:
        config = config_path(arguments.config).resolve()
        if not config.exists():
            raise BenchError(f"no config file at {config}")
        if arguments.count < 2:
            raise BenchError("--count must be at least 2 (an open and its close)")
        if arguments.seconds <= 0:
            raise BenchError("--seconds must be positive")
        if not 1 <= arguments.runs <= MAX_RUNS:
            raise BenchError(f"--runs must be from 1 to {MAX_RUNS}")
        # Timestamps run from (count) ms before a phase starts: all must stay current.
        budget = settings.max_signal_age_seconds - load.GRACE_SECONDS
        if arguments.count / 1000 + arguments.seconds >= budget:
            raise BenchError(
                f"--count / 1000 + --seconds must stay under {budget:g} "
                "(max_signal_age_seconds less a margin): every signal's timestamp must be current"
            )
        integration = bench_integration(settings)
        return cls(
            config=config,
            token_header=integration.token_header,
            token=integration.tokens[0].get_secret_value(),
            count=arguments.count - arguments.count % 2,  # whole open/close pairs
            seconds=arguments.seconds,
            concurrency=_concurrency(arguments.concurrency),
            database_url=arguments.database_url,
            skip_baseline=arguments.skip_baseline,
            runs=arguments.runs,
        )


def bench_integration(settings: Settings) -> IntegrationConfig:
    """The integration the bench sends as: approved, with a plain token, trading on a
    paper account (never a live venue), where BTCUSDT trades around the clock."""
    integration = next(
        (i for i in settings.integrations if i.tokens and i.status == "approved"), None
    )
    if integration is None or settings.account(integration.account).broker != "paper":
        raise BenchError(
            "the config needs an approved integration with a plain token (tokens = [...]) "
            "trading on a paper account, as the demo config has"
        )
    if not any(i.ticker == TICKER and i.sessions == "always" for i in settings.instruments):
        raise BenchError(f"the config needs the instrument {TICKER}, trading always")
    return integration


def _concurrency(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise BenchError("--concurrency takes whole numbers separated by commas") from None
    if not all(1 <= level <= MAX_CONCURRENCY for level in levels):
        raise BenchError(f"--concurrency levels must be from 1 to {MAX_CONCURRENCY}")
    if len(set(levels)) != len(levels):
        raise BenchError("--concurrency levels must be distinct")
    return levels


def run(arguments: argparse.Namespace, settings: Settings) -> int:
    progress = report.Progress()
    try:
        plan = Plan.from_arguments(arguments, settings)
        runs = [bench(plan, progress) for _ in range(plan.runs)]
        results = runs[0] if plan.runs == 1 else median.combine(runs)
    except BenchError as exc:
        progress.clear()
        print(f"signalbridge bench: {exc}", file=sys.stderr)
        return 2
    finally:
        progress.clear()
    print(report.as_json(results) if arguments.json else report.as_text(results))
    return 0 if results["verified"] else 1


def bench(plan: Plan, progress: report.Progress) -> dict[str, Any]:
    """Run every measurement of ``plan``; the figures, checks and machine, as one dict."""
    run_id = uuid.uuid4().hex[:8]
    load_average = _load_average()
    began = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="signalbridge-bench-") as directory,
        database.fresh(plan.database_url, directory=Path(directory)) as database_url,
    ):
        serve = [sys.executable, "-m", "app", "--config", str(plan.config), "serve"]
        serve += ["--host", "127.0.0.1", "--port"]  # the port follows, one per start
        serve_env = {
            "SIGNALBRIDGE_DATABASE_URL": database_url,
            "SIGNALBRIDGE_LOG_LEVEL": LOG_LEVEL,
            "SIGNALBRIDGE_MIGRATE_ON_START": "true",
        }
        with contextlib.ExitStack() as running:
            ours = running.enter_context(
                processes.DrivenServer(
                    "signalbridge",
                    serve,
                    env=serve_env,
                    target=_target(plan, strategy_prefix=f"bench-{run_id}"),
                    log=Path(directory) / "service.log",
                    progress=progress,
                    began=began,
                )
            )
            theirs = None
            if not plan.skip_baseline:
                theirs = running.enter_context(
                    processes.DrivenServer(
                        "bare Starlette",
                        [sys.executable, "-m", "app.bench.baseline", "--port"],
                        env={},
                        target=_target(plan, strategy_prefix=f"baseline-{run_id}"),
                        log=Path(directory) / "baseline.log",
                        progress=progress,
                        began=began,
                    )
                )
            for phase in _phases(plan):  # each baseline phase right after the service's
                ours.run(phase, database_pids=database.server_pids(database_url))
                if theirs is not None:
                    theirs.run(phase)
            service = ours.stop()
            baseline = theirs.stop() if theirs is not None else None
        restart = _restart(serve, env=serve_env, log=Path(directory) / "restart.log")
        service["restart_seconds"] = round(restart, 3)
        sent = [service["warmup"], *service["phases"]]
        problems = _answers("signalbridge", sent) + database.check(database_url, sent)
        if baseline is not None:
            problems += _answers("bare Starlette", [baseline["warmup"], *baseline["phases"]])
            for ours_phase, theirs_phase in zip(service["phases"], baseline["phases"], strict=True):
                ours_phase["ratio_percent"] = _ratio(
                    ours_phase["per_second"], theirs_phase["per_second"]
                )
    return {
        "service": service,
        "baseline": baseline,
        "verified": not problems,
        "verification": {
            "deliveries": sum(2 * phase["pairs"] for phase in sent),
            "problems": problems,
        },
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": f"{platform.system()} {platform.machine()}",
            "database": database.kind(plan.database_url),
            "load_event_loop": load.event_loop_name(),
            "load_average_at_start": load_average,
        },
        "bench": {
            "count": plan.count,
            "seconds": plan.seconds,
            "concurrency": list(plan.concurrency),
            "warmup": {key: _warmup(plan)[key] for key in ("concurrency", "count", "seconds")},
            "ticker": TICKER,
            "quantity": str(QUANTITY),
            "log_level": LOG_LEVEL,
            "workers": 1,
        },
    }


def _target(plan: Plan, *, strategy_prefix: str) -> dict[str, Any]:
    """What the load generator sends, less the server's port and the phases."""
    return {
        "path": PATH,
        "token_header": plan.token_header,
        "token": plan.token,
        "ticker": TICKER,
        "quantity": str(QUANTITY),
        "strategy_prefix": strategy_prefix,
    }


def _phases(plan: Plan) -> list[dict[str, Any]]:
    return [_warmup(plan)] + [
        {"name": f"c{level}", "concurrency": level, "count": plan.count, "seconds": plan.seconds}
        for level in plan.concurrency
    ]


def _restart(command: list[str], *, env: Mapping[str, str], log: Path) -> float:
    """Seconds from spawn to ready when the service starts again on the database its phases
    wrote: what an operator's restart costs (migrated already, with a history), where the
    first start also created the schema. The check of what was stored comes after it."""
    server, seconds = processes.start_ready(command, log=log, env=env)
    server.stop()
    return seconds


def _warmup(plan: Plan) -> dict[str, Any]:
    return {
        "name": "warmup",
        "concurrency": max(plan.concurrency),
        "count": min(WARMUP_COUNT, plan.count),
        "seconds": min(WARMUP_SECONDS, plan.seconds),
    }


def _answers(name: str, phases: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the load generator saw go wrong: unanswered or non-200 deliveries."""
    problems = []
    for phase in phases:
        where = f"{name}, phase {phase['name']}"
        if phase["unanswered"]:
            reasons = "; ".join(s["body"] for s in phase["samples"] if s["status"] is None)
            problems.append(f"{where}: {phase['unanswered']} deliveries got no answer ({reasons})")
        wrong = {status: n for status, n in phase["statuses"].items() if status != "200"}
        if wrong:
            answered = [s for s in phase["samples"] if s["status"] is not None][:2]
            samples = "; ".join(f"{s['status']} to {s['type']}: {s['body']}" for s in answered)
            problems.append(f"{where}: answered other than 200: {wrong} (e.g. {samples})")
    return problems


def _load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages: a busy machine gives lower figures."""
    try:
        return [round(figure, 2) for figure in os.getloadavg()]
    except OSError:
        return None


def _ratio(ours: float, theirs: float) -> float | None:
    return round(100 * ours / theirs, 2) if theirs else None
