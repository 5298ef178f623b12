"""The OpenAPI document against the app: the same operations, a valid OpenAPI 3.0 document,
request schemas in step with the pydantic models, and the live service fuzzed from the
served document (schemathesis) without one server error."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from pydantic import BaseModel
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err, Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from app import admin, protocol
from app.application import create_app
from app.openapi import document
from app.settings import load_settings
from tests.conftest import CONFIG, OPERATOR_KEY, README, Service, signal

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
EXAMPLES_PER_MODE = 10
REQUEST_TIMEOUT_SECONDS = 5
BUDGET_SECONDS = 40  # the whole fuzzing run; a slower run fails, it is not cut short
# No Accept: text/event-stream, so a list endpoint answers JSON and no stream stays open.
HEADERS = {"X-API-Key": OPERATOR_KEY, "Accept": "application/json"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return document(load_settings(CONFIG))


def _normalized(path: str) -> str:
    return re.sub(r"{(\w+)(:\w+)?}", r"{\1}", path)  # {id:int} -> {id}


def _served() -> set[tuple[str, str]]:
    app = create_app(load_settings(CONFIG))  # routes only: no lifespan runs
    assert all(isinstance(route, Route) for route in app.routes)
    return {
        (method.lower(), _normalized(route.path))
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }


def test_every_route_is_documented_and_nothing_else(spec: dict[str, Any]) -> None:
    served = _served()
    documented = {
        (method, path)
        for path, item in spec["paths"].items()
        for method in item
        if method in METHODS - {"head", "options"}
    }
    assert documented == served


def test_the_readme_names_every_route_and_only_those() -> None:
    """The README's endpoints (the operator API's table, the webhook's heading), a table
    cell's "`POST /a/{id}/pause`, `/resume`" naming two."""
    named = set()
    for method, path, siblings in re.findall(
        r"`(GET|POST|PUT|PATCH|DELETE) (/[^`?]*)[^`]*`((?:, `/\w+`)*)", README.read_text()
    ):
        named.add((method.lower(), path))
        for sibling in re.findall(r"`/(\w+)`", siblings):
            named.add((method.lower(), path.rsplit("/", 1)[0] + "/" + sibling))
    assert named == _served()


def test_the_document_is_valid_openapi_3(spec: dict[str, Any]) -> None:
    schemathesis.openapi.from_dict(spec).validate()  # the OpenAPI 3.0 meta-schema
    operations = [item[m] for item in spec["paths"].values() for m in item if m in METHODS]
    ids = [operation["operationId"] for operation in operations]
    assert len(ids) == len(set(ids))
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), (method, path)
    text = str(spec)
    for name in re.findall(r"#/components/schemas/(\w+)", text):
        assert name in spec["components"]["schemas"], name


def test_the_key_guards_the_api_and_metrics_and_lists_stream(spec: dict[str, Any]) -> None:
    streams = {"/api/positions", "/api/orders", "/api/events", "/api/accounts/{name}/ledger"}
    for path, item in spec["paths"].items():
        guarded = path == "/metrics" or (path.startswith("/api/") and path != "/api/openapi.json")
        for method, operation in item.items():
            keyed = operation["security"] == [{"operatorKey": []}]
            assert keyed == guarded, (method, path)
            assert ("401" in operation["responses"]) == guarded or path == "/webhooks/proquant"
            answers = operation["responses"].get("200", {}).get("content", {})
            assert ("text/event-stream" in answers) == (path in streams), (method, path)


@pytest.mark.parametrize(
    "model",
    [admin.SizingRules, admin.Money, admin.NewUser, admin.NewIntegration, admin.NewRegistration],
)
def test_request_bodies_match_the_models(spec: dict[str, Any], model: type[BaseModel]) -> None:
    documented = spec["components"]["schemas"][model.__name__]
    _assert_matches(documented, model)


def test_the_signal_matches_the_protocol(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    _assert_matches(schemas["SignalData"], protocol.SignalData)
    _assert_matches(schemas["SignalData"]["properties"]["strategy"], protocol.StrategyRef)
    [_signal, strategy_event, _other] = schemas["EventV1"]["oneOf"]
    _assert_matches(strategy_event["properties"]["data"], protocol.StrategyData)
    assert set(strategy_event["properties"]) - {"data"} <= set(protocol.EventV1.model_fields)


def _assert_matches(documented: dict[str, Any], model: type[BaseModel]) -> None:
    fields = model.model_fields
    assert set(documented["properties"]) == set(fields)
    required = {name for name, field in fields.items() if field.is_required()}
    assert set(documented.get("required", [])) == required
    closed = model.model_config.get("extra") == "forbid"
    assert documented.get("additionalProperties", True) is not closed


def test_the_document_is_served_without_a_key(service: Service, spec: dict[str, Any]) -> None:
    response = service.client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == spec


def test_generated_requests_get_no_server_error_and_documented_answers(service: Service) -> None:
    """Every operation, with data that fits the document and data that does not: never a
    5xx, and every answer's status, content type, headers and body as documented."""
    assert service.send("SIGNAL_OPEN", signal()).status_code == 200  # lists with an item
    schema = schemathesis.openapi.from_url(f"{service.url}/api/openapi.json")
    results = list(schema.get_all_operations())
    assert [result.err() for result in results if isinstance(result, Err)] == []
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    documented = {
        f"{method.upper()} {path}"
        for path, item in schema.raw_schema["paths"].items()
        for method in item
        if method in METHODS
    }
    # schemathesis leaves out the operation that serves the document it loaded (tested above).
    assert {operation.label for operation in operations} == documented - {"GET /api/openapi.json"}
    deadline = time.monotonic() + BUDGET_SECONDS
    failures: list[str] = []
    for operation in operations:
        for mode in _modes(operation):
            if time.monotonic() > deadline:
                failures.append(f"{operation.label} ({mode}): not run, over {BUDGET_SECONDS} s")
                continue
            try:
                _fuzz(operation, mode, deadline=deadline)
            except (AssertionError, schemathesis.errors.FailureGroup) as exc:
                failures.append(f"{operation.label} ({mode}): {exc}")
    assert not failures, "\n\n".join(failures)


def _modes(
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
) -> list[schemathesis.GenerationMode]:
    """Positive always; negative where there is an input to break (for an operation without
    parameters, body or key hypothesis finds no negative case: Unsatisfiable)."""
    inputs = {"parameters", "requestBody", "security"} & {
        key for key, value in operation.definition.raw.items() if value
    }
    negative = [schemathesis.GenerationMode.NEGATIVE] if inputs else []
    return [schemathesis.GenerationMode.POSITIVE, *negative]


def _fuzz(
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
    mode: schemathesis.GenerationMode,
    *,
    deadline: float,
) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_MODE,
        phases=[Phase.explicit, Phase.generate],  # no shrinking
        deadline=None,
        database=None,  # no .hypothesis/ folder
        derandomize=True,  # the same cases on every run
        suppress_health_check=[HealthCheck.too_slow],  # slow generation is no failure here
    )
    def call(case: schemathesis.Case[Any]) -> None:
        assert time.monotonic() < deadline, f"over the {BUDGET_SECONDS} s budget"
        response = case.call(headers=HEADERS, timeout=REQUEST_TIMEOUT_SECONDS)
        case.validate_response(response, checks=CHECKS)

    call()
