"""Prometheus metrics, in a registry of the app's own (nothing global, nothing at import).

``deliveries_total{type, outcome}``, ``answer_seconds`` (a histogram of the time from
receipt to answer), ``broker_errors_total{account, kind}`` and, read at scrape time,
``open_positions``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "signalbridge_deliveries",
            "Webhook deliveries by event type and outcome",
            ["type", "outcome"],
            registry=self.registry,
        )
        # The children of the bounded label sets (the caller bounds them), looked up once.
        self._delivery_counters: dict[tuple[str, str], Counter] = {}
        self.answer_seconds = Histogram(
            "signalbridge_answer_seconds",
            "Time from receipt to answer of a webhook delivery",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.broker_errors = Counter(
            "signalbridge_broker_errors",
            "Broker calls that failed, by account and kind (unavailable or refused)",
            ["account", "kind"],
            registry=self.registry,
        )
        self.open_positions = Gauge(
            "signalbridge_open_positions",
            "Positions not yet closed",
            registry=self.registry,
        )

    def delivered(self, event_type: str | None, outcome: str, *, seconds: float) -> None:
        key = (event_type or "unparsed", outcome)
        counter = self._delivery_counters.get(key)
        if counter is None:  # labels() looks the child up under a lock on every call
            counter = self._delivery_counters[key] = self.deliveries.labels(*key)
        counter.inc()
        self.answer_seconds.observe(seconds)

    async def render(self, open_positions: Callable[[], Awaitable[int]]) -> bytes:
        self.open_positions.set(await open_positions())
        return generate_latest(self.registry)
