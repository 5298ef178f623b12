"""``POST /webhooks/proquant``: the provider's endpoint. It hands the raw body to the
receiver and sends back exactly the stored answer."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from app.receiver import Receiver

PROQUANT_ERROR_HEADER = "x-proquant-error"


async def proquant(request: Request) -> Response:
    receiver: Receiver = request.state.services.receiver
    raw_body = await request.body()
    answer = await receiver.receive(
        raw_body, content_type=request.headers.get("content-type"), headers=request.headers
    )
    headers = {PROQUANT_ERROR_HEADER: "1"} if answer.typed else None
    media_type = "application/json" if answer.body else None
    return Response(answer.body, status_code=answer.status, headers=headers, media_type=media_type)
