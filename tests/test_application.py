"""The app factory: what is built, and what is not."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import CONFIG

PAPER_ONLY = f"""
import sys
from app.application import build_brokers, create_app, system_clock
from app.settings import load_settings
settings = load_settings({str(CONFIG)!r})
create_app(settings)
brokers, _ = build_brokers(settings, clock=system_clock)
assert set(brokers) == {{"demo-paper"}}, brokers
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "ccxt")
print(loaded)
"""


def test_a_paper_only_service_never_imports_ccxt() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PAPER_ONLY], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_start_on_a_database_something_else_made_stops_with_the_reason(
    tmp_path: Path,
) -> None:
    """The migration refuses it (app.migrate.SchemaMismatch); the log says so in a line of
    its own, and the server exits without serving."""
    stranger = tmp_path / "stranger.db"
    connection = sqlite3.connect(stranger)
    connection.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    connection.commit()
    connection.close()
    environment = {
        **os.environ,
        "SIGNALBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{stranger}",
        "SIGNALBRIDGE_LOG_FORMAT": "json",
    }
    result = subprocess.run(
        [sys.executable, "-m", "app", "--config", str(CONFIG), "serve", "--port", "0"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    said = [line["message"] for line in lines if line["level"] == "ERROR"]
    assert result.returncode != 0
    assert said[0].startswith("cannot start: the database has tables (users) but no ")
