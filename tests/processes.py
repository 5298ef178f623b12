"""Real server processes for the scale-out and crash tests: ``python -m app serve`` on a
loopback port, its output in a log file, stopped gracefully or found dead by SIGKILL.

Each process reads the demo config with the database, the port and any other setting given
as ``SIGNALBRIDGE_*`` variables, as an operator would run it. A :class:`Served` view of it
is a ``tests.conftest.Service``, so the same ``post``, ``api``, ``rows`` and
``check_invariants`` apply.
"""

from __future__ import annotations

import http.client
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from app.settings import load_settings
from tests.conftest import CONFIG, Clock, Service

READY_SECONDS = 30.0
STOP_SECONDS = 15.0
POLL_SECONDS = 0.02


def _port_block() -> range:
    """The ports this pytest process hands its servers: a block of its own below the
    ephemeral range, one block per xdist worker.

    Not the kernel's free port (binding port 0): the server binds its port only after
    start-up, seconds later under load, and meanwhile the kernel can hand the same port
    to a parallel worker. Whichever server bound it first then answers the other test's
    readiness poll, and that test reads its database before its own server has
    reconciled it. Below the ephemeral range, no outgoing connection takes one either.
    """
    lowest = 10_000
    highest = max(_ephemeral_start(), lowest + 4_000)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    size = (highest - lowest) // max(workers, 1)
    start = lowest + worker * size
    return range(start, start + size)


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


_PORTS = itertools.cycle(_port_block())


def free_port() -> int:
    """A loopback port of this worker's block that nobody listens on now (the server
    binds it a moment later; no other worker of this run is handed it)."""
    for _ in range(1_000):
        port = next(_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken: by another program, or a server of ours still stopping
        return port
    raise AssertionError("no free loopback port in this worker's block")


def poll(what: str, condition: Callable[[], bool], *, seconds: float = 10.0) -> None:
    """Wait, bounded, until ``condition()`` is true."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(POLL_SECONDS)


class ServerProcess:
    """``signalbridge serve`` in a subprocess, until :meth:`stop` (or its own death)."""

    def __init__(
        self,
        database_url: str,
        log: Path,
        *,
        settings: Mapping[str, str] | None = None,
        arguments: tuple[str, ...] = (),
    ) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALBRIDGE_")}
        environment = {
            **inherited,
            "SIGNALBRIDGE_DATABASE_URL": database_url,
            "SIGNALBRIDGE_PORT": str(self.port),
            "SIGNALBRIDGE_LOG_LEVEL": "WARNING",
            **(settings or {}),
        }
        command = [sys.executable, "-m", "app", "--config", str(CONFIG), "serve", *arguments]
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env=environment
            )

    def wait_ready(self, seconds: float = READY_SECONDS) -> None:
        """Until ``GET /readyz`` answers 200: start-up reconciliation is done."""
        deadline = time.monotonic() + seconds
        while True:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the server exited with {self.process.returncode}{self.tail()}"
                )
            if self._readyz() == 200:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the server was not ready in {seconds} s{self.tail()}")
            time.sleep(POLL_SECONDS)

    def _readyz(self) -> int | None:
        # http.client: a poll costs no client set-up (httpx builds an SSL context per client).
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("GET", "/readyz")
            return connection.getresponse().status
        except OSError:
            return None
        finally:
            connection.close()

    def wait_killed(self, seconds: float = 10.0) -> None:
        """Until the process is dead; it must have died by SIGKILL (a crash point)."""
        try:
            code = self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the server did not die in {seconds} s{self.tail()}") from None
        assert code == -signal.SIGKILL, f"exit code {code}{self.tail()}"

    def stop(self) -> int | None:
        """Stop it gracefully (SIGTERM), or kill it if it hangs; its exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return ("; its last output:\n" + "\n".join(text)) if text else ""

    def service(self) -> Service:
        """A ``tests.conftest.Service`` view: posts, the operator API, the database."""
        settings = load_settings(CONFIG, database_url=self.database_url)
        return Service(self.url, settings, Clock(datetime.now(UTC)), {}, self.database_url)


class Processes:
    """Every server process a test starts, all stopped at its end."""

    def __init__(self, database_url: str, folder: Path) -> None:
        self.database_url = database_url
        self._folder = folder
        self._started: list[ServerProcess] = []
        self._services: list[Service] = []

    def start(
        self,
        *,
        database_url: str | None = None,
        wait: bool = True,
        arguments: tuple[str, ...] = (),
        **settings: object,
    ) -> ServerProcess:
        """Start one; ``settings`` become ``SIGNALBRIDGE_<NAME>`` variables."""
        log = self._folder / f"server-{len(self._started) + 1}.log"
        server = ServerProcess(
            database_url or self.database_url,
            log,
            settings={f"SIGNALBRIDGE_{k.upper()}": str(v) for k, v in settings.items()},
            arguments=arguments,
        )
        self._started.append(server)
        if wait:
            server.wait_ready()
        return server

    def service(self, server: ServerProcess) -> Service:
        service = server.service()
        self._services.append(service)
        return service

    def stop_all(self) -> None:
        for service in self._services:
            service.client.close()
        for server in self._started:
            server.stop()
