"""How an ASGI app is served: the uvicorn settings of ``signalbridge serve``, in one place.

``signalbridge bench`` serves its bare baseline app through :func:`serve` too, so that the
baseline and the service always run under the same server settings.
"""

from __future__ import annotations

from typing import Any

from app import logs

# What every server of this app runs with (tests/server.py too).
OPTIONS: dict[str, Any] = {
    "ws": "none",
    "timeout_graceful_shutdown": 5,  # open event streams must not hold a shutdown forever
}


def serve(
    app: Any, *, host: str, port: int, log_level: str, log_format: str, **options: Any
) -> None:
    """Configure logging and run ``app`` under uvicorn until it is told to stop.

    ``options`` are further ``uvicorn.run`` arguments (``workers``, ``factory``...).
    """
    import uvicorn

    logs.configure(level=log_level, json_lines=log_format == "json")
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        log_config=None,  # uvicorn's records go through the same handler
        **OPTIONS,
        **options,
    )
