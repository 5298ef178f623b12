"""Every operator endpoint, walked from the app's own routes: no key and a wrong key are
401, a read key on a write endpoint is 403, the right key gets past the check."""

from __future__ import annotations

import re

import pytest
from starlette.routing import Route

from app.application import create_app
from app.settings import load_settings
from tests.conftest import CONFIG, OPERATOR_KEY, Service, ServiceFactory, signal

READ_KEY = "read-only-key"
KEYS = [
    {"name": "demo", "key": OPERATOR_KEY, "scope": "write"},
    {"name": "reader", "key": READ_KEY},
]
OPEN = {"/healthz", "/readyz", "/api/openapi.json", "/webhooks/proquant"}


def operator_endpoints() -> list[tuple[str, str]]:
    app = create_app(load_settings(CONFIG))
    found = []
    for route in app.routes:
        assert isinstance(route, Route)
        if route.path in OPEN:
            continue
        path = re.sub(
            r"\{(\w+)\}", lambda m: "demo-paper" if m.group(1) == "name" else "1", route.path
        )
        found += [(method, path) for method in sorted(route.methods or ()) if method != "HEAD"]
    return found


ENDPOINTS = operator_endpoints()


@pytest.fixture
def keyed(start_service: ServiceFactory) -> Service:
    service = start_service(operator_keys=KEYS)
    service.send("SIGNAL_OPEN", signal())  # event 1, strategy 1, position 1 exist
    return service


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_each_operator_endpoint_checks_its_key(keyed: Service, method: str, path: str) -> None:
    def call(key: str | None) -> int:
        headers = {} if key is None else {"x-api-key": key}
        return keyed.client.request(method, path, headers=headers, content=b"{}").status_code

    assert call(None) == 401
    assert call("not-a-key") == 401
    if method == "GET":
        assert call(READ_KEY) not in (401, 403)
    else:
        assert call(READ_KEY) == 403
    assert call(OPERATOR_KEY) not in (401, 403)


def test_the_walk_covers_reads_and_writes() -> None:
    methods = {method for method, _ in ENDPOINTS}
    assert {"GET", "POST", "PATCH"} <= methods
    assert len(ENDPOINTS) >= 25
