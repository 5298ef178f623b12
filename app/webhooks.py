"""``POST /webhooks/proquant``: the provider's endpoint. It hands the raw body to the
receiver and sends back exactly the stored answer.

A plain ASGI app (Starlette routes to it without a ``Request``, a ``Response`` and their
exception wrapper): it is the one endpoint under load, and those layers cost about a
twentieth of a delivery's CPU. Errors raised while the body is read (413, 408) still reach
the app's exception handlers; the receiver answers everything else itself.
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from app.receiver import Receiver

PROQUANT_ERROR_HEADER = b"x-proquant-error"
_JSON = (b"content-type", b"application/json")


class Proquant:
    """The endpoint, as a class: Starlette serves a class instance as ASGI, a function as
    ``func(request) -> response``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        receiver: Receiver = scope["state"]["services"].receiver
        # ASGI header names are lower case; the first of a repeated header counts, as in
        # Starlette's Headers.get.
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in reversed(scope["headers"])
        }
        raw_body = await _body(receive)
        answer = await receiver.receive(
            raw_body, content_type=headers.get("content-type"), headers=headers
        )
        response_headers = [(b"content-length", str(len(answer.body)).encode())]
        if answer.body:
            response_headers.append(_JSON)
        if answer.typed:
            response_headers.append((PROQUANT_ERROR_HEADER, b"1"))
        await send(
            {"type": "http.response.start", "status": answer.status, "headers": response_headers}
        )
        await send({"type": "http.response.body", "body": answer.body})


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # gone before its body arrived: as Starlette
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
