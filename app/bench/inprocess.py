"""The service driven in this process, without HTTP: the figures that must not move with
the machine (callgrind's instructions per delivery) and profiles of a delivery's path.

``python -m app.bench.inprocess`` builds the app of the config (:func:`create_app`) on a
fresh SQLite file, or with ``--database-url`` on a new PostgreSQL database made beside the
one named and dropped afterwards (as ``signalbridge bench`` does: each run starts empty, and
each pair's strategy is new to it), runs its lifespan, and calls its ASGI callable
directly with the bench's requests (:meth:`app.bench.load.Target.pairs`): ``--warmup``
open/close pairs, then ``--pairs`` pairs from ``--concurrency`` slots, each slot sending a
pair's close once its open is answered. It prints the deliveries per second and this
process's CPU time per delivery, user and system (``--json``: one object). Every answer must
be ``200``; exit code 1 otherwise.

Under callgrind a delivery's instructions are the difference between two runs that differ
only in ``--pairs``, over the deliveries between them (the README's figures)::

    valgrind --tool=callgrind --callgrind-out-file=small.out \\
        python -m app.bench.inprocess --pairs 100 --warmup 400
    valgrind --tool=callgrind --callgrind-out-file=large.out \\
        python -m app.bench.inprocess --pairs 500 --warmup 400
    # (summary of large.out - summary of small.out) / 800
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message

from app.application import create_app
from app.bench import BenchError
from app.bench.baseline import PATH
from app.bench.command import QUANTITY, TICKER, bench_integration
from app.bench.database import fresh
from app.bench.load import Target
from app.settings import Settings, load_settings

Request = tuple[list[tuple[bytes, bytes]], bytes]  # the headers and the body of one POST


async def drive(
    app: ASGIApp, target: Target, *, concurrency: int, pairs: int, warmup: int
) -> dict[str, Any]:
    """Run the app's lifespan, send the warm-up and then the measured pairs; the figures of
    the measured part."""
    state: dict[str, Any] = {}
    round_trips: list[int] | None = None
    async with _lifespan(app, state):
        await _send_pairs(app, state, target.pairs("warmup", warmup), concurrency=concurrency)
        measured = target.pairs("measured", pairs)
        database = state["services"].database
        if not database.is_sqlite:  # counted from here: every connection is idle now
            round_trips = []
            database.add_query_logger(lambda _query: round_trips.append(1))
        began, clock = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        statuses = await _send_pairs(app, state, measured, concurrency=concurrency)
        seconds = time.perf_counter() - clock
        ended = resource.getrusage(resource.RUSAGE_SELF)
        counted = None if round_trips is None else len(round_trips)
    deliveries = 2 * pairs
    user = ended.ru_utime - began.ru_utime
    system = ended.ru_stime - began.ru_stime
    return {
        "concurrency": concurrency,
        "deliveries": deliveries,
        "seconds": round(seconds, 6),
        "per_second": round(deliveries / seconds, 2),
        "cpu_us_per_delivery": round((user + system) / deliveries * 1e6, 1),
        "user_us_per_delivery": round(user / deliveries * 1e6, 1),
        "system_us_per_delivery": round(system / deliveries * 1e6, 1),
        "statuses": {str(status): count for status, count in sorted(statuses.items())},
        # PostgreSQL: the statements the write path sent, each a round trip (None: SQLite).
        "round_trips_per_delivery": None if counted is None else round(counted / deliveries, 2),
    }


@contextlib.asynccontextmanager
async def _lifespan(app: ASGIApp, state: dict[str, Any]) -> AsyncIterator[None]:
    """The ASGI lifespan protocol, as a server runs it: startup before, shutdown after."""
    to_app: asyncio.Queue[Message] = asyncio.Queue()
    from_app: asyncio.Queue[Message] = asyncio.Queue()

    async def expect(kind: str) -> None:
        message = await from_app.get()
        if message["type"] != kind:
            raise BenchError(f"the app answered {message['type']}: {message.get('message')}")

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    running: asyncio.Future[None] = asyncio.ensure_future(app(scope, to_app.get, from_app.put))
    await to_app.put({"type": "lifespan.startup"})
    await expect("lifespan.startup.complete")
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        await expect("lifespan.shutdown.complete")
        await running


async def _send_pairs(
    app: ASGIApp,
    state: dict[str, Any],
    pairs: Sequence[tuple[bytes, bytes]],
    *,
    concurrency: int,
) -> Counter[int]:
    requests = iter([(_split(opening), _split(closing)) for opening, closing in pairs])
    statuses: Counter[int] = Counter()

    async def slot() -> None:
        for opening, closing in requests:
            statuses[await _post(app, state, opening)] += 1
            statuses[await _post(app, state, closing)] += 1

    await asyncio.gather(*(slot() for _ in range(concurrency)))
    return statuses


def _split(raw: bytes) -> Request:
    """The headers and body of a request the load generator encoded for the wire."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")[1:]  # after the request line
    headers = [(name.lower(), value) for name, value in (line.split(b": ", 1) for line in lines)]
    return headers, body


async def _post(app: ASGIApp, state: dict[str, Any], request: Request) -> int:
    headers, body = request
    scope: MutableMapping[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": dict(state),  # as a server hands each request a copy of the lifespan's
    }
    received = False
    status = 0
    answered = asyncio.Event()

    async def receive() -> Message:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await answered.wait()  # as a server does: the client is gone once answered
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            answered.set()

    await app(scope, receive, send)
    return status


def target_of(settings: Settings) -> Target:
    """What the bench sends, as the integration the bench itself would use (a paper
    account's: this driver must never reach a live venue either)."""
    integration = bench_integration(settings)
    return Target(
        host="127.0.0.1",
        port=8000,
        path=PATH,
        token_header=integration.token_header,
        token=integration.tokens[0].get_secret_value(),
        ticker=TICKER,
        quantity=QUANTITY,
        strategy_prefix="inprocess",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.bench.inprocess", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", help="the config file (the CLI's default otherwise)")
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server's database, beside which a new one is made and dropped "
        "(default: a fresh SQLite file)",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="slots (32)")
    parser.add_argument("--pairs", type=int, default=500, help="measured open/close pairs (500)")
    parser.add_argument("--warmup", type=int, default=200, help="pairs sent first (200)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    arguments = parser.parse_args(argv)
    if not 1 <= arguments.concurrency <= 1024 or arguments.pairs < 1 or arguments.warmup < 0:
        print("concurrency from 1 to 1024, pairs at least 1, warmup at least 0", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="signalbridge-inprocess-") as directory:
        try:
            with fresh(arguments.database_url, directory=Path(directory)) as url:
                settings = load_settings(arguments.config, database_url=url, log_level="WARNING")
                figures = asyncio.run(_measure(settings, arguments))
        except BenchError as exc:
            print(f"inprocess: {exc}", file=sys.stderr)
            return 2
    if arguments.json:
        print(json.dumps(figures))
    else:
        print(
            f"{figures['deliveries']} deliveries at c={figures['concurrency']}: "
            f"{figures['per_second']:,.0f}/s, {figures['cpu_us_per_delivery']:,.0f} us of CPU "
            f"per delivery ({figures['user_us_per_delivery']:,.0f} user, "
            f"{figures['system_us_per_delivery']:,.0f} system); answers {figures['statuses']}"
            + (
                ""
                if figures["round_trips_per_delivery"] is None
                else f"; {figures['round_trips_per_delivery']} round trips per delivery"
            )
        )
    return 0 if figures["statuses"] == {"200": figures["deliveries"]} else 1


async def _measure(settings: Settings, arguments: argparse.Namespace) -> dict[str, Any]:
    target = target_of(settings)  # checked before anything is built
    return await drive(
        create_app(settings),
        target,
        concurrency=arguments.concurrency,
        pairs=arguments.pairs,
        warmup=arguments.warmup,
    )


if __name__ == "__main__":
    sys.exit(main())
