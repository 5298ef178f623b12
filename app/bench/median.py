"""Several runs of the bench as one result (``--runs N``): each figure the median of its
runs, what was checked summed over them, and every run kept beside it.

A shared machine's speed moves within minutes, so one run is a sample, not a measure:
the figures worth comparing are medians of a few runs made one after another.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

# The figures of a phase that are medians of the runs' (each may be None in a run: a phase
# too short for the kernel's CPU clock, or a figure not read on this platform).
PHASE_FIGURES = (
    "deliveries",
    "seconds",
    "per_second",
    "ratio_percent",
    "cpu_steal_percent",
    "server_cpu_percent",
    "server_cpu_us_per_delivery",
    "database_cpu_percent",
    "database_cpu_us_per_delivery",
)
LATENCIES = ("p50", "p90", "p99", "max")
SERVER_FIGURES = ("startup_seconds", "peak_memory_mib", "restart_seconds")


def combine(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One result shaped as a single run's, of ``runs`` (at least one), with ``median_of``
    (how many) and ``runs`` (each run's own result)."""
    if not runs:
        raise ValueError("no runs to combine")
    first = runs[0]
    problems = [
        f"run {number}: {problem}"
        for number, run in enumerate(runs, start=1)
        for problem in run["verification"]["problems"]
    ]
    baselines = [run["baseline"] for run in runs]
    return {
        "service": _server([run["service"] for run in runs]),
        "baseline": None if any(b is None for b in baselines) else _server(baselines),
        "verified": all(run["verified"] for run in runs),
        "verification": {
            "deliveries": sum(run["verification"]["deliveries"] for run in runs),
            "problems": problems,
        },
        "machine": first["machine"],
        "bench": first["bench"],
        "median_of": len(runs),
        "runs": list(runs),
    }


def _server(servers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    combined: dict[str, Any] = {
        key: _median([server[key] for server in servers])
        for key in SERVER_FIGURES
        if key in servers[0]
    }
    combined["peak_memory_source"] = servers[0].get("peak_memory_source")
    combined["warmup"] = _phase([server["warmup"] for server in servers])
    combined["phases"] = [
        _phase(list(same)) for same in zip(*(server["phases"] for server in servers), strict=True)
    ]
    combined["log_tail"] = next((s["log_tail"] for s in servers if s.get("log_tail")), "")
    return combined


def _phase(phases: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    for phase in phases:
        statuses.update(phase["statuses"])
    combined: dict[str, Any] = {
        "name": phases[0]["name"],
        "concurrency": phases[0]["concurrency"],
        **{key: _median([phase.get(key) for phase in phases]) for key in PHASE_FIGURES},
        "latency_ms": {
            key: _median([phase["latency_ms"][key] for phase in phases]) for key in LATENCIES
        },
        "unanswered": sum(phase["unanswered"] for phase in phases),
        "pairs": sum(phase["pairs"] for phase in phases),
        "statuses": dict(sorted(statuses.items())),
        "samples": [sample for phase in phases for sample in phase["samples"]][:5],
        "per_run": {
            "per_second": [phase["per_second"] for phase in phases],
            "ratio_percent": [phase.get("ratio_percent") for phase in phases],
        },
    }
    return combined


def _median(values: Sequence[float | None]) -> float | None:
    """The median of the values known (a count stays whole where it can); None when none
    is."""
    known = [value for value in values if value is not None]
    if not known:
        return None
    middle = statistics.median(known)
    if all(isinstance(value, int) for value in known) and float(middle).is_integer():
        return int(middle)
    return round(middle, 3)
