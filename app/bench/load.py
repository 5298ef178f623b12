"""The bench's load generator: a process of its own, so that it never competes with the
server for the server's event loop.

Run as ``python -m app.bench.load``: it reads a JSON spec on stdin (the server's address,
the token, the phases) and writes lines on stdout: ``progress PHASE ANSWERED COUNT DONE`` a
few times a second (DONE: the share of the phase's count or time used, whichever is more),
then ``phase {...}`` with each phase's figures: the server's CPU time among them, read from
``/proc/<server_pid>/stat`` when the spec names the server's pid, and the database server's,
summed over ``database_pids`` when it names them (a PostgreSQL server on this machine).

Every phase sends distinct ``SIGNAL_OPEN`` / ``SIGNAL_CLOSE`` pairs, one new strategy per
pair (``<prefix>-<phase>-<n>``), from ``concurrency`` slots. A slot sends a pair's close only
once its open is answered, so no strategy's funds or position are left behind. A phase stops
at ``count`` deliveries or after ``seconds`` (a pair begun is finished), and is cut off
``GRACE_SECONDS`` later whatever happens.

The client is lean on purpose, because a baseline answers tens of thousands of requests a
second: one keep-alive connection (:mod:`app.bench.client`) per slot, requests encoded
before the clock starts, uvloop when installed.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from app.bench.client import Connection, ProtocolError

GRACE_SECONDS = 30.0
PROGRESS_SECONDS = 0.1
SAMPLES = 5
STRATEGY_NAME = "Bench"


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str
    token_header: str
    token: str
    ticker: str
    quantity: Decimal
    strategy_prefix: str

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Target:
        return cls(
            host=spec["host"],
            port=spec["port"],
            path=spec["path"],
            token_header=spec["token_header"],
            token=spec["token"],
            ticker=spec["ticker"],
            quantity=Decimal(spec["quantity"]),
            strategy_prefix=spec["strategy_prefix"],
        )

    def pairs(self, phase: str, count: int) -> list[tuple[bytes, bytes]]:
        """``count`` open/close request pairs, each for a new strategy; timestamps are now
        or just before, one millisecond apart, so every event's dedupe key is its own."""
        first = int(time.time() * 1000) - 2 * count
        template = self._template()
        requests = []
        for n in range(count):
            strategy = f"{self.strategy_prefix}-{phase}-{n}"
            requests.append(
                (
                    self._request(template, "SIGNAL_OPEN", strategy, first + 2 * n),
                    self._request(template, "SIGNAL_CLOSE", strategy, first + 2 * n + 1),
                )
            )
        return requests

    def _template(self) -> str:
        envelope = {
            "v1": {
                "deprecation": None,
                "event": {
                    "timestamp": "@timestamp@",
                    "type": "@type@",
                    "integration": {
                        "name": "bench@example.com",
                        "description": "signalbridge bench",
                        "imageUrl": "https://example.com/logo.png",
                        "webhook": {
                            "url": f"http://{self.host}:{self.port}{self.path}",
                            "headers": {self.token_header: self.token},
                        },
                    },
                    "data": {
                        "direction": "BUY",
                        "ticker": self.ticker,
                        "quantity": "@quantity@",
                        "strategy": {"id": "@strategy@", "name": STRATEGY_NAME},
                        "proquantPositionId": "@strategy@",
                    },
                },
            }
        }
        # Numbers go in as exact text, never through a float.
        return (
            json.dumps(envelope, separators=(",", ":"))
            .replace('"@quantity@"', str(self.quantity))
            .replace('"@timestamp@"', "@timestamp@")
        )

    def _request(self, template: str, event_type: str, strategy: str, timestamp: int) -> bytes:
        body = (
            template.replace("@type@", event_type)
            .replace("@strategy@", strategy)
            .replace("@timestamp@", str(timestamp))
            .encode()
        )
        head = (
            f"POST {self.path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            f"content-type: application/json\r\n{self.token_header}: {self.token}\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body


@dataclass
class Phase:
    """One phase's bounds, and what its slots recorded."""

    name: str
    concurrency: int
    count: int
    seconds: float
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)
    next_pair: int = 0
    issued: int = 0
    latencies: list[int] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return len(self.latencies)

    def record(self, status: int, body: bytes, nanoseconds: int, *, kind: str, pair: int) -> None:
        self.latencies.append(nanoseconds)
        self.statuses[status] += 1
        if status != 200:
            self.sample(status, body[:300].decode(errors="replace"), kind=kind, pair=pair)

    def sample(self, status: int | None, text: str, *, kind: str, pair: int) -> None:
        """Keep the first few failures (status None: no answer) to show what went wrong."""
        if len(self.samples) < SAMPLES:
            self.samples.append({"status": status, "type": kind, "pair": pair, "body": text})

    def figures(
        self,
        elapsed: float,
        *,
        strategy_prefix: str,
        steal_percent: float | None,
        server_cpu: float | None,
        database_cpu: float | None = None,
    ) -> dict[str, Any]:
        """``server_cpu``, ``database_cpu``: the seconds of CPU the server, and the database
        server's processes, used during the phase, if known."""
        ordered = sorted(self.latencies)
        return {
            "name": self.name,
            "concurrency": self.concurrency,
            "deliveries": self.answered,
            "unanswered": self.issued - self.answered,
            "pairs": min(self.next_pair, len(self.requests)),
            "strategy_prefix": f"{strategy_prefix}-{self.name}-",
            "seconds": round(elapsed, 6),
            "per_second": round(self.answered / elapsed, 2) if elapsed > 0 else 0.0,
            "latency_ms": {
                "p50": _percentile(ordered, 50),
                "p90": _percentile(ordered, 90),
                "p99": _percentile(ordered, 99),
                "max": round(ordered[-1] / 1e6, 3) if ordered else None,
            },
            "statuses": {str(status): n for status, n in sorted(self.statuses.items())},
            "samples": self.samples,
            "cpu_steal_percent": steal_percent,
            "server_cpu_percent": _percent(server_cpu, elapsed),
            "server_cpu_us_per_delivery": _per_delivery(server_cpu, self.answered),
            "database_cpu_percent": _percent(database_cpu, elapsed),
            "database_cpu_us_per_delivery": _per_delivery(database_cpu, self.answered),
        }


def _percent(cpu: float | None, elapsed: float) -> float | None:
    return round(100 * cpu / elapsed, 1) if cpu is not None and elapsed > 0 else None


def _per_delivery(cpu: float | None, answered: int) -> float | None:
    return round(1e6 * cpu / answered, 1) if cpu is not None and answered else None


def cpu_times() -> tuple[int, int] | None:
    """(stolen, total) CPU ticks of the whole machine since boot, from ``/proc/stat``;
    None where there is none (not Linux). Stolen time is what the hypervisor gave other
    virtual machines while this one had work: the same code then measures slower."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    ticks = [int(field) for field in fields[1:9]]  # user .. steal (guest is within user)
    return ticks[7], sum(ticks)


def process_cpu_seconds(pid: int | None) -> float | None:
    """CPU time (user and system) the process has used, from ``/proc/<pid>/stat``; None
    without it. Counted in the kernel's clock ticks (usually 10 ms): a phase shorter than a
    few ticks gives a coarse figure."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            text = stat.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (command) "
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_used(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def processes_cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    """:func:`process_cpu_seconds` of each process that can be read."""
    found = {pid: process_cpu_seconds(pid) for pid in pids}
    return {pid: seconds for pid, seconds in found.items() if seconds is not None}


def processes_cpu_used(before: Mapping[int, float], after: Mapping[int, float]) -> float | None:
    """The CPU the processes read both times used between; None when none was."""
    both = before.keys() & after.keys()
    return sum(after[pid] - before[pid] for pid in both) if both else None


def steal_percent(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of the machine's CPU time stolen between two :func:`cpu_times`; None when
    either is missing, or when the clock did not tick between them (a phase of a few ms)."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round(100 * (after[0] - before[0]) / (after[1] - before[1]), 1)


def _percentile(ordered: list[int], percent: int) -> float | None:
    """Nearest rank, in milliseconds."""
    if not ordered:
        return None
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return round(ordered[rank - 1] / 1e6, 3)


async def run_phase(target: Target, phase: Phase, report: Callable[[int, float], None]) -> float:
    """Drive one phase; the seconds from its start to its last answer."""
    connections = await asyncio.gather(
        *(Connection.open(target.host, target.port) for _ in range(phase.concurrency))
    )
    started = time.perf_counter()
    deadline = started + phase.seconds

    async def slot(connection: Connection) -> None:
        while phase.next_pair < len(phase.requests) and time.perf_counter() < deadline:
            pair = phase.next_pair
            phase.next_pair += 1
            for kind, data in zip(
                ("SIGNAL_OPEN", "SIGNAL_CLOSE"), phase.requests[pair], strict=True
            ):
                phase.issued += 1
                sent = time.perf_counter_ns()
                try:
                    if not connection.is_open:
                        connection = await Connection.open(target.host, target.port)
                        sent = time.perf_counter_ns()
                    status, body = await connection.request(data)
                except (OSError, ProtocolError) as exc:
                    connection.close()
                    phase.sample(None, str(exc), kind=kind, pair=pair)
                    continue  # counted as unanswered
                phase.record(status, body, time.perf_counter_ns() - sent, kind=kind, pair=pair)
        connection.close()

    async def progress() -> None:
        while True:
            report(phase.answered, (time.perf_counter() - started) / phase.seconds)
            await asyncio.sleep(PROGRESS_SECONDS)

    reporter = asyncio.create_task(progress())
    try:
        async with asyncio.timeout(phase.seconds + GRACE_SECONDS):
            await asyncio.gather(*(slot(connection) for connection in connections))
    except TimeoutError:
        pass  # what is still in flight stays unanswered, and the bench says so
    finally:
        reporter.cancel()
        for connection in connections:
            connection.close()
    report(phase.answered, 1.0)
    return time.perf_counter() - started


async def drive(spec: dict[str, Any]) -> None:
    target = Target.from_spec(spec)
    for index, bounds in enumerate(spec["phases"]):
        phase = Phase(
            name=bounds["name"],
            concurrency=bounds["concurrency"],
            count=bounds["count"],
            seconds=bounds["seconds"],
        )
        phase.requests = target.pairs(phase.name, phase.count // 2)

        def report(
            answered: int, time_used: float, index: int = index, goal: int = phase.count
        ) -> None:
            done = max(answered / goal, min(time_used, 1.0))
            _emit(f"progress {index} {answered} {goal} {done:.3f}")

        server, database = spec.get("server_pid"), spec.get("database_pids") or []
        before, server_before = cpu_times(), process_cpu_seconds(server)
        database_before = processes_cpu_seconds(database)
        elapsed = await run_phase(target, phase, report)
        figures = phase.figures(
            elapsed,
            strategy_prefix=target.strategy_prefix,
            steal_percent=steal_percent(before, cpu_times()),
            server_cpu=cpu_used(server_before, process_cpu_seconds(server)),
            database_cpu=processes_cpu_used(database_before, processes_cpu_seconds(database)),
        )
        _emit(f"phase {json.dumps(figures)}")


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _runner(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def event_loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def main() -> int:
    _runner(drive(json.load(sys.stdin)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
