"""The provider client against a respx router passed in as its transport."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import respx

from app.errors import ProviderRefused, ProviderUnavailable
from app.provider import ProviderClient, Registration, RegistrationResult

BASE_URL = "https://provider.test"
PATH = "/api/integrations/v1/integrations"
TOKEN = "integration-token-5f1c9e"
REGISTRATION = Registration(
    name="trader@example.com",
    description="Signalbridge",
    image_url="https://signalbridge.test/logo.png",
    user_email="trader@proquant.example",
    webhook_url="https://signalbridge.test/webhooks/proquant",
    webhook_headers={"x-signalbridge-token": TOKEN},
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(base_url=BASE_URL)


@pytest.fixture
def sleeps() -> list[float]:
    return []


def provider(router: respx.Router, sleeps: list[float]) -> ProviderClient:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    transport = httpx.MockTransport(router.async_handler)
    return ProviderClient(BASE_URL, transport=transport, sleep=sleep)


@pytest.mark.anyio
async def test_register_posts_the_protocol_body(router: respx.Router, sleeps: list[float]) -> None:
    route = router.post(PATH).respond(201, json={"id": "integration-1"})
    async with provider(router, sleeps) as client:
        await client.register(REGISTRATION)

    request = route.calls.last.request
    assert request.method == "POST"
    assert request.url == f"{BASE_URL}{PATH}"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "name": "trader@example.com",
        "description": "Signalbridge",
        "imageUrl": "https://signalbridge.test/logo.png",
        "userEmail": "trader@proquant.example",
        "webhook": {
            "url": "https://signalbridge.test/webhooks/proquant",
            "headers": {"x-signalbridge-token": TOKEN},
        },
    }


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "content", "answer"),
    [
        (
            201,
            b'{"id": "integration-1", "status": "pending"}',
            {"id": "integration-1", "status": "pending"},
        ),
        (200, b"", None),
        (200, b"accepted", None),
        (200, b'["not", "an", "object"]', None),
    ],
)
async def test_register_returns_the_answer(
    router: respx.Router,
    sleeps: list[float],
    status: int,
    content: bytes,
    answer: dict[str, str] | None,
) -> None:
    router.post(PATH).respond(status, content=content)
    async with provider(router, sleeps) as client:
        result = await client.register(REGISTRATION)

    assert result == RegistrationResult(status_code=status, answer=answer)
    assert sleeps == []


@pytest.mark.anyio
async def test_a_4xx_is_refused_without_retry(router: respx.Router, sleeps: list[float]) -> None:
    route = router.post(PATH).respond(400, json={"message": "userEmail is not a ProQuant user"})
    async with provider(router, sleeps) as client:
        with pytest.raises(ProviderRefused) as caught:
            await client.register(REGISTRATION)

    assert "400" in caught.value.message
    assert "userEmail is not a ProQuant user" in caught.value.message
    assert (caught.value.status_code, caught.value.code) == (502, "provider_refused")
    assert route.call_count == 1
    assert sleeps == []


@pytest.mark.anyio
async def test_the_provider_text_is_truncated(router: respx.Router, sleeps: list[float]) -> None:
    router.post(PATH).respond(422, text="x" * 5000)
    async with provider(router, sleeps) as client:
        with pytest.raises(ProviderRefused) as caught:
            await client.register(REGISTRATION)

    assert "x" * 300 in caught.value.message
    assert "x" * 301 not in caught.value.message


@pytest.mark.anyio
async def test_5xx_is_retried_with_backoff(router: respx.Router, sleeps: list[float]) -> None:
    route = router.post(PATH)
    route.side_effect = [httpx.Response(503), httpx.Response(503), httpx.Response(200, json={})]
    async with provider(router, sleeps) as client:
        result = await client.register(REGISTRATION)

    assert result == RegistrationResult(status_code=200, answer={})
    assert route.call_count == 3
    assert sleeps == [0.5, 1.0]


@pytest.mark.anyio
async def test_a_timeout_on_every_try_is_unavailable(
    router: respx.Router, sleeps: list[float]
) -> None:
    route = router.post(PATH).mock(side_effect=httpx.ReadTimeout)
    async with provider(router, sleeps) as client:
        with pytest.raises(ProviderUnavailable) as caught:
            await client.register(REGISTRATION)

    assert (caught.value.status_code, caught.value.code) == (503, "provider_unavailable")
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert route.call_count == 3
    assert sleeps == [0.5, 1.0]


@pytest.mark.anyio
async def test_5xx_on_every_try_is_unavailable(router: respx.Router, sleeps: list[float]) -> None:
    route = router.post(PATH).respond(502)
    async with provider(router, sleeps) as client:
        with pytest.raises(ProviderUnavailable, match="502"):
            await client.register(REGISTRATION)

    assert route.call_count == 3


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("retry_after", "delay"),
    [("2", 2.0), ("120", 30.0), ("Wed, 21 Oct 2026 07:28:00 GMT", 0.5), (None, 0.5)],
)
async def test_429_honours_a_numeric_retry_after(
    router: respx.Router, sleeps: list[float], retry_after: str | None, delay: float
) -> None:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    route = router.post(PATH)
    route.side_effect = [httpx.Response(429, headers=headers), httpx.Response(201)]
    async with provider(router, sleeps) as client:
        result = await client.register(REGISTRATION)

    assert result.status_code == 201
    assert sleeps == [delay]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        (
            httpx.Response(400, json={"message": f"bad headers: {{'x': '{TOKEN}'}}"}),
            ProviderRefused,
        ),
        (httpx.Response(409, text=f"duplicate webhook header {TOKEN}"), ProviderRefused),
        (httpx.Response(503, text=f"overloaded while storing {TOKEN}"), ProviderUnavailable),
        (httpx.ConnectError(f"connect failed for {TOKEN}"), ProviderUnavailable),
    ],
)
async def test_the_token_never_leaks(
    router: respx.Router,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
    outcome: httpx.Response | httpx.TransportError,
    error: type[Exception],
) -> None:
    router.post(PATH).mock(side_effect=[outcome] * 3)
    caplog.set_level(logging.DEBUG)
    async with provider(router, sleeps) as client:
        with pytest.raises(error) as caught:
            await client.register(REGISTRATION)

    assert TOKEN not in str(caught.value)
    assert TOKEN not in repr(caught.value)
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(REGISTRATION)
