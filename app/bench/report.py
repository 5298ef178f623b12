"""What ``signalbridge bench`` prints: a table for people, or one JSON object (``--json``);
and the progress bar it draws on stderr meanwhile (only when stderr is a terminal)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any, TextIO

BAR_WIDTH = 30
COLUMNS = (
    ("server", "<"),
    ("concurrency", ">"),
    ("deliveries", ">"),
    ("seconds", ">"),
    ("per second", ">"),
    ("% of baseline", ">"),
    ("p50 ms", ">"),
    ("p90 ms", ">"),
    ("p99 ms", ">"),
    ("max ms", ">"),
    ("CPU stolen", ">"),
    ("server CPU", ">"),
    ("us CPU/delivery", ">"),
)
# Shown when the database server runs on this machine (PostgreSQL): its processes' CPU.
DATABASE_COLUMNS = (("database CPU", ">"), ("db us CPU/delivery", ">"))


class Progress:
    """One line on ``stream``, redrawn in place: the phase, a bar (its count or its time,
    whichever runs out first), the deliveries answered of the phase's count."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self._stream = stream or sys.stderr
        self._enabled = self._stream.isatty() if enabled is None else enabled
        self._shown = False

    def update(self, label: str, answered: int, count: int, done: float) -> None:
        if not self._enabled:
            return
        filled = min(BAR_WIDTH, int(BAR_WIDTH * done))
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        self._stream.write(f"\r{label:<28} [{bar}] {answered}/{count}\x1b[K")
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False


def as_json(results: Mapping[str, Any]) -> str:
    return json.dumps(results, indent=2)


def as_text(results: Mapping[str, Any]) -> str:
    machine, bench = results["machine"], results["bench"]
    servers = [("signalbridge", results["service"])]
    if results["baseline"] is not None:
        servers.append(("bare Starlette", results["baseline"]))
    warmup = results["service"]["warmup"]
    load_average = " ".join(str(f) for f in machine["load_average_at_start"] or []) or "unknown"
    lines = [
        f"signalbridge bench: {machine['database']}, paper broker, {bench['workers']} worker, "
        f"service log level {bench['log_level']}",
        f"machine: {machine['cores']} cores, Python {machine['python']}, {machine['platform']}, "
        f"load average at start {load_average}",
        f"load: a separate process on {machine['load_event_loop']}, one keep-alive connection "
        "per concurrent slot; distinct SIGNAL_OPEN/SIGNAL_CLOSE pairs, one strategy each",
        f"each phase: at most {bench['count']} deliveries or {bench['seconds']:g} s; "
        f"warm-up first: {warmup['deliveries']} deliveries at concurrency "
        f"{warmup['concurrency']} (not in the figures)",
    ]
    if results.get("median_of"):
        lines += _runs(results)
    lines += [
        "",
        _table(servers),
        "CPU stolen: the share of the machine's CPU time that the hypervisor gave other "
        "virtual machines during the phase (/proc/stat); a phase with much stolen measures low",
        "server CPU: the server process's CPU time over the phase's (100% is one core: one "
        "worker's event loop uses at most that); us CPU/delivery: that time per answered "
        "delivery (a database server's own processes not included); both coarse for a phase "
        "under a second, as the kernel counts CPU time in ticks of 10 ms",
    ]
    if _has_database_cpu(results["service"]):
        lines.append(
            "database CPU, db us CPU/delivery: the same for the PostgreSQL server's processes on "
            "this machine (its backends and background workers, as pg_stat_activity lists them "
            "before each phase), which share the machine's cores with the service"
        )
    lines.append("")
    for label, key, unit in (
        ("start-up to ready", "startup_seconds", "s"),
        ("peak memory (RSS high-water mark)", "peak_memory_mib", "MiB"),
    ):
        figures = ", ".join(f"{name} {server[key]} {unit}" for name, server in servers)
        lines.append(f"{label}: {figures}")
    restart = results["service"]["restart_seconds"]
    lines.append(f"restart to ready (signalbridge, on the database it just wrote): {restart} s")
    verification = results["verification"]
    if results["verified"]:
        lines.append(
            f"verified: {verification['deliveries']} deliveries, each answered 200 and stored "
            "once; one filled order each, no position left open, the ledger balanced"
        )
    else:
        lines.append(f"FAILED verification of {verification['deliveries']} deliveries:")
        lines += [f"  - {problem}" for problem in verification["problems"]]
        if results["service"]["log_tail"]:
            lines += ["the service's last log lines:", results["service"]["log_tail"]]
    return "\n".join(lines)


def _runs(results: Mapping[str, Any]) -> list[str]:
    """What ``--runs`` adds: that the figures are medians, and each run's throughput."""
    lines = [
        f"runs: {results['median_of']}, one after another; every figure below is the median "
        "of its runs (deliveries and answers checked in all of them)"
    ]
    for phase in results["service"]["phases"]:
        per_run = phase["per_run"]
        figures = ", ".join(f"{figure:.0f}" for figure in per_run["per_second"])
        ratios = [ratio for ratio in per_run["ratio_percent"] if ratio is not None]
        if ratios:
            figures += " (" + ", ".join(f"{ratio:.1f}%" for ratio in ratios) + " of baseline)"
        lines.append(f"  concurrency {phase['concurrency']}, per second in each run: {figures}")
    return lines


def _has_database_cpu(server: Mapping[str, Any]) -> bool:
    return any(phase.get("database_cpu_percent") is not None for phase in server["phases"])


def _table(servers: list[tuple[str, Mapping[str, Any]]]) -> str:
    database = _has_database_cpu(servers[0][1])
    columns = COLUMNS + DATABASE_COLUMNS if database else COLUMNS
    rows = []
    for name, server in servers:
        for phase in server["phases"]:
            latency = phase["latency_ms"]
            ratio = phase.get("ratio_percent")
            rows.append(
                [
                    name,
                    str(phase["concurrency"]),
                    str(phase["deliveries"]),
                    f"{phase['seconds']:.2f}",
                    f"{phase['per_second']:.0f}",
                    "" if ratio is None else f"{ratio:.1f}%",
                    *(
                        "-" if latency[p] is None else f"{latency[p]:.2f}"
                        for p in ("p50", "p90", "p99", "max")
                    ),
                    _or_dash(phase["cpu_steal_percent"], "{}%"),
                    _or_dash(phase["server_cpu_percent"], "{:.0f}%"),
                    _or_dash(phase["server_cpu_us_per_delivery"], "{:.0f}"),
                ]
            )
            if database:
                rows[-1] += [
                    _or_dash(phase.get("database_cpu_percent"), "{:.0f}%"),
                    _or_dash(phase.get("database_cpu_us_per_delivery"), "{:.0f}"),
                ]
    headers = [title for title, _align in columns]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = (
            cell.ljust(width) if align == "<" else cell.rjust(width)
            for cell, width, (_title, align) in zip(row, widths, columns, strict=True)
        )
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _or_dash(value: float | None, form: str) -> str:
    return "-" if value is None else form.format(value)
