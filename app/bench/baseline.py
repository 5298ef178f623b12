"""The bench's baseline: a bare Starlette app with one trivial POST endpoint.

It reads the body and answers a small JSON, at the service's webhook path, served by
:func:`app.server.serve` with the same uvicorn settings as ``signalbridge serve``. What it
answers per second is what the machine, Python, uvicorn and Starlette allow before any of
Signalbridge's own work. Run as ``python -m app.bench.baseline --port PORT``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app import server

PATH = "/webhooks/proquant"
LOG_LEVEL = "WARNING"


async def answer(request: Request) -> Response:
    await request.body()
    return JSONResponse({"ok": True})


async def ready(_request: Request) -> Response:
    return JSONResponse({"ready": True})


def create_app() -> Starlette:
    return Starlette(routes=[Route(PATH, answer, methods=["POST"]), Route("/readyz", ready)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.bench.baseline", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    arguments = parser.parse_args(argv)
    server.serve(
        create_app(),
        host=arguments.host,
        port=arguments.port,
        log_level=LOG_LEVEL,
        log_format="json",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
