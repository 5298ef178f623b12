"""The command line against a real server."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from app import migrate
from app.cli import _parser, main
from tests.conftest import CONFIG, README, Service


def run(service: Service, *arguments: str) -> int:
    return main(["--config", str(CONFIG), *arguments, "--url", service.url])


def test_send_posts_a_fresh_event_and_prints_the_answer(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    service.clock.now = service.clock.now.now(service.clock.now.tzinfo)
    code = run(service, "send", "--ticker", "BTCUSDT", "--quantity", "0.0105")
    assert code == 0
    assert capsys.readouterr().out.strip() == "200"
    [position] = service.api("/api/positions")["positions"]
    assert position["quantity"] == "0.0105"


def test_send_prints_a_typed_error(service: Service, capsys: pytest.CaptureFixture[str]) -> None:
    service.clock.now = service.clock.now.now(service.clock.now.tzinfo)
    code = run(service, "send", "--type", "SIGNAL_CLOSE", "--ticker", "BTCUSDT")
    assert code == 1
    out = capsys.readouterr().out
    assert out.startswith("404 (typed: x-proquant-error)")
    assert "PositionNotFound" in out


def test_tables_and_json(service: Service, capsys: pytest.CaptureFixture[str]) -> None:
    service.send(
        "SIGNAL_OPEN",
        {
            "direction": "SELL",
            "ticker": "XAUUSD",
            "quantity": 2,
            "strategy": {"id": "s", "name": "S"},
            "proquantPositionId": "p",
        },
    )
    assert run(service, "positions") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:5] == ["id", "strategy_id", "ticker", "direction", "status"]
    assert table[1].split()[1:5] == ["s", "XAUUSD", "short", "open"]
    assert run(service, "positions", "--json") == 0
    assert json.loads(capsys.readouterr().out)["positions"][0]["direction"] == "short"
    assert run(service, "book", "demo-paper") == 0
    assert "holding: XAUUSD -2" in capsys.readouterr().out
    assert run(service, "events", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out)["events"][0]["state"] == "done"


def test_python_dash_m_app_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "serve" in result.stdout
    assert "send" in result.stdout


def test_a_bad_quantity_is_refused_before_sending(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["--config", str(CONFIG), "send", "--quantity", "ten", "--url", "http://127.0.0.1:9"]
    )
    assert code == 2
    assert "decimal" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["send"], ["positions"]])
def test_a_service_not_listening_is_reported_not_raised(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as bound:  # bound, never listening: a connection is refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        code = main(["--config", str(CONFIG), *command, "--url", url])
    assert code == 1
    assert capsys.readouterr().err.startswith("signalbridge: cannot reach the service:")


def test_serving_does_not_import_the_http_client() -> None:
    """httpx is for the CLI's own calls and the provider client; importing it took about a
    tenth of a second of every start-up."""
    check = "import sys, app.cli, app.application; print('httpx' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_migrate_says_what_it_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SIGNALBRIDGE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/new.db")
    said = []
    for _ in range(2):
        assert main(["--config", str(CONFIG), "migrate"]) == 0
        said.append(capsys.readouterr().out.strip())

    assert (tmp_path / "new.db").exists()
    assert said == [
        f"a new database: the schema built at revision {migrate.HEAD}",
        f"the schema is current (revision {migrate.HEAD})",
    ]


def test_migrate_refuses_a_database_it_did_not_make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stranger = tmp_path / "stranger.db"
    with contextlib.closing(sqlite3.connect(stranger)) as connection:
        connection.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
        connection.commit()
    monkeypatch.setenv("SIGNALBRIDGE_DATABASE_URL", f"sqlite+aiosqlite:///{stranger}")

    assert main(["--config", str(CONFIG), "migrate"]) == 2
    said = capsys.readouterr()
    assert said.out == ""
    assert said.err.startswith(
        "signalbridge: the database has tables (users) but no Signalbridge schema revision"
    )
    # The commands that work on the database directly migrate it first: refused alike.
    with pytest.raises(SystemExit) as refused:
        main(["--config", str(CONFIG), "api-keys", "list"])
    assert str(refused.value).startswith(
        "signalbridge: the database has tables (users) but no Signalbridge schema revision"
    )
    with contextlib.closing(sqlite3.connect(stranger)) as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master")]
    assert tables == ["users"]


def _readme_commands() -> list[list[str]]:
    """Every signalbridge command in the README's shell blocks, as its arguments."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.DOTALL):
        for line in block.splitlines():
            if line.startswith(("$S ", ".venv/bin/signalbridge ")):
                commands.append(shlex.split(line, comments=True)[1:])
    return commands


def test_every_command_the_readme_shows_is_one_the_cli_takes() -> None:
    """The README's sessions are copied and pasted: each command must parse as written."""
    commands = _readme_commands()
    assert len(commands) > 30  # the Try it and operator sessions, the bench's examples
    refused = []
    for arguments in commands:
        try:
            _parser().parse_args(arguments)
        except SystemExit:
            refused.append(" ".join(arguments))
    assert refused == []
