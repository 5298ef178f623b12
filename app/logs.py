"""Structured logs: one JSON object a line, with the event's dedupe key and phase timings
on every line about an event (passed as ``extra``). Set up by ``signalbridge serve``,
never at import; ``log_format = "text"`` keeps plain lines."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

EXTRA_FIELDS = ("dedupe_key", "event_id", "timings", "account", "client_order_id")


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "at": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in EXTRA_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(*, level: str, json_lines: bool) -> None:
    handler = logging.StreamHandler()
    formatter: logging.Formatter = (
        JSONFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
