"""The bench's subprocesses: the server under test and the load generator that drives it,
one phase at a time (:class:`DrivenServer`).

A server is spawned with ``sys.executable``, so its pid is the server's own and
``/proc/<pid>/status`` reads its memory. Its output goes to a log file, shown in part when
it fails.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from app.bench import BenchError, report

READY_TIMEOUT_SECONDS = 60.0
READY_POLL_SECONDS = 0.005
# A port free when chosen can be taken before the server binds it; it starts again on
# another this many times in all.
START_ATTEMPTS = 3
STOP_TIMEOUT_SECONDS = 15.0
ADDRESS_IN_USE = "address already in use"  # the OS's words, in the server's log
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b")


def free_port() -> int:
    """A loopback port nobody listens on now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PortTaken(BenchError):
    """The server could not bind its port: another process took it after it was chosen."""


def start_ready(
    command: Sequence[str], *, log: Path, env: Mapping[str, str]
) -> tuple[ServerProcess, float]:
    """A server of ``command`` + a free port, ready, and the seconds it took to be. When
    another process takes the port between its choice and the server's bind, the server
    starts again on another (``START_ATTEMPTS`` in all); the time is the last start's."""
    attempt = 1
    while True:
        port = free_port()
        server = ServerProcess([*command, str(port)], port=port, log=log, env=env)
        try:
            return server, server.wait_ready()
        except PortTaken:
            if attempt == START_ATTEMPTS:
                raise
            attempt += 1
        finally:
            if not server.ready:
                server.stop()


class ServerProcess:
    """A server in a subprocess, listening on 127.0.0.1:``port``, until :meth:`stop`."""

    def __init__(
        self, command: Sequence[str], *, port: int, log: Path, env: Mapping[str, str]
    ) -> None:
        self.port = port
        self.log = log
        self.ready = False
        with log.open("wb") as output:
            self.started = time.perf_counter()
            self._process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **env}
            )

    def wait_ready(self) -> float:
        """Seconds from the spawn to the first ``200`` from ``GET /readyz``."""
        deadline = self.started + READY_TIMEOUT_SECONDS
        while time.perf_counter() < deadline:
            if self._process.poll() is not None:
                if ADDRESS_IN_USE in self.log.read_text(errors="replace").lower():
                    raise PortTaken(f"port {self.port} was taken before the server bound it")
                raise BenchError(f"the server exited with {self._process.returncode}{self.tail()}")
            if _status("127.0.0.1", self.port, "/readyz") == 200:
                self.ready = True
                return time.perf_counter() - self.started
            time.sleep(READY_POLL_SECONDS)
        raise BenchError(f"the server was not ready in {READY_TIMEOUT_SECONDS:.0f} s{self.tail()}")

    @property
    def pid(self) -> int:
        return self._process.pid

    def peak_memory_mib(self) -> float | None:
        """The server's resident-memory high-water mark, read while it still runs; None
        without ``/proc`` (then see :func:`children_peak_memory_mib`)."""
        try:
            status = Path(f"/proc/{self._process.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return None

    def stop(self) -> None:
        """Stop the server gracefully (SIGTERM), or kill it if it hangs."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def output(self, lines: int = 8) -> str:
        """The server's last log lines (at the bench's level: warnings and errors), a JSON
        line shortened to its level and the last line of its message or traceback."""
        shown = []
        for line in self.log.read_text(errors="replace").splitlines()[-lines:]:
            try:
                record = json.loads(line)
                text = _gist(str(record.get("error") or record["message"]))
                line = f"{record['level']} {record.get('logger', '')}: {text}"
            except (ValueError, KeyError, IndexError, AttributeError):
                pass
            shown.append(line[:500])
        return "\n".join(shown)

    def tail(self) -> str:
        text = self.output()
        return f"; its last output:\n{text}" if text else ""


class DrivenServer:
    """A server under test, started and ready once made, driven one phase at a time by the
    load generator (:meth:`run`); its figures once stopped (:meth:`stop`; leaving a ``with``
    block stops it too, on an error). ``target``: what the load generator sends
    (:mod:`app.bench.load`), less the address and the phases. Each phase's figures say when
    it began: ``started_seconds`` after ``began`` (a ``time.perf_counter()`` reading)."""

    def __init__(
        self,
        name: str,
        command: list[str],
        *,
        env: Mapping[str, str],
        target: Mapping[str, Any],
        log: Path,
        progress: report.Progress,
        began: float,
    ) -> None:
        self._name = name
        self._progress = progress
        self._began = began
        self._server, self._startup = start_ready(command, log=log, env=env)
        self._spec = {**target, "host": "127.0.0.1", "port": self._server.port}
        self._figures: list[Any] = []

    def __enter__(self) -> DrivenServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.stop()
        self._progress.clear()

    def run(self, phase: Mapping[str, Any], *, database_pids: list[int] | None = None) -> None:
        """Drive one phase; ``database_pids``: the database server's processes, whose CPU
        time the phase's figures then include."""

        def show(_index: int, answered: int, count: int, done: float) -> None:
            self._progress.update(f"{self._name} {phase['name']}", answered, count, done)

        spec = {
            **self._spec,
            "phases": [phase],
            "server_pid": self._server.pid,
            "database_pids": database_pids,
        }
        started = round(time.perf_counter() - self._began, 3)
        self._figures += [{**figures, "started_seconds": started} for figures in drive(spec, show)]

    def stop(self) -> dict[str, Any]:
        """Read the peak memory, stop the server; its figures."""
        peak = self._server.peak_memory_mib()
        self.__exit__()
        source = "VmHWM"
        if peak is None:
            peak = children_peak_memory_mib()
            source = "ru_maxrss of children (upper bound)"
        return {
            "startup_seconds": round(self._startup, 3),
            "peak_memory_mib": round(peak, 1),
            "peak_memory_source": source,
            "warmup": self._figures[0],
            "phases": self._figures[1:],
            "log_tail": self._server.output(),
        }


def _gist(message: str) -> str:
    """A traceback's exception line (the last one that names an error), else the last line."""
    lines = message.strip().splitlines() or [""]
    errors = [line for line in lines if EXCEPTION_LINE.match(line)]
    return (errors or lines)[-1]


def children_peak_memory_mib() -> float:
    """The largest resident-memory high-water mark of every child process waited for so far:
    an upper bound of a stopped server's peak where ``/proc`` is missing."""
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes / KiB


def _status(host: str, port: int, path: str) -> int | None:
    connection = http.client.HTTPConnection(host, port, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


Progress = Callable[[int, int, int, float], None]


def drive(spec: Mapping[str, Any], progress: Progress) -> list[Any]:
    """Run the load generator on ``spec``; each phase's figures, in order.

    ``progress(phase index, answered, count, share done)`` is called as the generator reports.
    """
    phases = []
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen(
            [sys.executable, "-m", "app.bench.load"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        ) as process,
    ):
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(json.dumps(spec))
        process.stdin.close()
        for line in process.stdout:
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "progress":
                index, answered, count, done = rest.split()
                progress(int(index), int(answered), int(count), float(done))
            elif kind == "phase":
                phases.append(json.loads(rest))
        process.wait()
        errors.seek(0)
        message = errors.read()[-2000:].decode(errors="replace")
    if process.returncode != 0 or len(phases) != len(spec["phases"]):
        raise BenchError(f"the load generator failed ({process.returncode}): {message}")
    return phases
