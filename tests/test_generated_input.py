"""Generated bad input against the real server: nothing bad executes, nothing sent is lost.

Hypothesis builds webhook bodies from the example envelope (a ``SIGNAL_OPEN`` the account could
fill: were a mutation to leave it valid, it would trade, and the test would fail) by breaking
it: a required field missing, a field of the wrong JSON type or out of its range, raw
``NaN``/``Infinity``/``1e400``/``10**1000`` tokens, negative and zero quantities, deep nesting,
a duplicated key, invalid UTF-8; and tickers, strategy and position ids in any Unicode. Each is
posted to the real service on loopback. Every one must be answered below 500, stored in the
inbox with that very answer (its raw body, the token redacted), and change no order, position
or ledger posting; the malformed ones answer ``400`` and the Unicode tickers the typed
``UnsupportedInstrument``.

The edges of the transport: a body of exactly ``max_body_bytes`` is read and stored, one byte
more is ``413`` and not stored, whether declared or streamed in chunks; a body trickled in
small pieces with pauses is answered exactly as the same bytes sent at once (and executes
once); a body that never completes is ``408`` after ``body_timeout_seconds`` and leaves no
trace, while the server goes on serving others.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import TOKEN, Service, ServiceFactory, envelope, signal

REDACTED = b"[redacted]"
TRADED = {"XAUUSD", "EURUSD", "AAPL", "BTCUSDT"}  # the demo config's tickers
SIGNALS = ("SIGNAL_OPEN", "SIGNAL_REOPEN")
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@dataclass(frozen=True)
class Raw:
    """A JSON text written as is: ``NaN``, ``1e400``, a 1001-digit integer, deep nesting."""

    text: str


@dataclass(frozen=True)
class Pairs:
    """A JSON object written from its pairs, so a key may appear twice."""

    items: tuple[tuple[str, Any], ...]


def render(value: Any, *, ascii_only: bool = True) -> str:
    """JSON text of ``value``, with :class:`Raw` tokens and :class:`Pairs` objects."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Pairs | dict):
        items = value.items if isinstance(value, Pairs) else tuple(value.items())
        inner = ",".join(
            f"{json.dumps(key, ensure_ascii=ascii_only)}:{render(item, ascii_only=ascii_only)}"
            for key, item in items
        )
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(item, ascii_only=ascii_only) for item in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=ascii_only)


def encode(text: str) -> bytes:
    """UTF-8; a lone surrogate written raw becomes bytes that are not UTF-8 at all."""
    return text.encode("utf-8", "surrogatepass")


# -- the fields of a v1 signal envelope, by path, with what the protocol says they hold --------

REQUIRED = {
    ("v1",): "object",
    ("v1", "event"): "object",
    ("v1", "event", "timestamp"): "integer",
    ("v1", "event", "type"): "string",
    ("v1", "event", "data"): "object",
    ("v1", "event", "data", "direction"): "direction",
    ("v1", "event", "data", "ticker"): "string",
    ("v1", "event", "data", "quantity"): "number",
    ("v1", "event", "data", "strategy"): "object",
    ("v1", "event", "data", "strategy", "id"): "string",
    ("v1", "event", "data", "proquantPositionId"): "string",
}
OPTIONAL = {
    ("v1", "deprecation"): "string or null",
    ("v1", "event", "integration"): "object or null",
    ("v1", "event", "data", "strategy", "name"): "string",
}
FIELDS = {**REQUIRED, **OPTIONAL}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.decimals(allow_nan=False, allow_infinity=False, places=4),
    st.text(max_size=10),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


def of_kind(kind: str, value: Any) -> bool:
    """Whether ``value`` is of the JSON type the protocol gives the field."""
    number = isinstance(value, int | Decimal) and not isinstance(value, bool)
    return {
        "object": isinstance(value, dict),
        "object or null": value is None or isinstance(value, dict),
        "string": isinstance(value, str),
        "string or null": value is None or isinstance(value, str),
        "direction": isinstance(value, str),
        "integer": number,
        "number": number,
    }[kind]


def near_misses(kind: str) -> st.SearchStrategy[Any]:
    """Wrong JSON types that a lenient reader might still take for the right one."""
    if kind in ("integer", "number"):
        return st.one_of(
            st.integers(0, 2**53).map(str),
            st.decimals(allow_nan=False, allow_infinity=False).map(str),
            st.booleans(),
            st.none(),
            st.integers(1, 10).map(lambda n: [n]),
        )
    if kind in ("string", "direction"):
        return st.one_of(
            st.integers(), st.booleans(), st.none(), st.sampled_from([["BUY"], {"id": "x"}])
        )
    return st.one_of(st.text(max_size=5), st.integers(), st.booleans(), st.just([]))


NOT_A_NUMBER = ["NaN", "-NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 1000]


def out_of_range(kind: str, path: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """Values of the right JSON type that the protocol still refuses."""
    if kind == "integer":  # the timestamp: Unix milliseconds, exact as a double
        return st.one_of(
            st.integers(max_value=-1),
            st.integers(min_value=2**53 + 1),
            st.decimals(places=3, allow_nan=False, allow_infinity=False).filter(
                lambda d: d != d.to_integral_value()
            ),
            st.sampled_from(NOT_A_NUMBER).map(Raw),
        )
    if kind == "number":  # the quantity
        return st.one_of(
            st.integers(max_value=0),
            st.decimals(max_value=0, allow_nan=False, allow_infinity=False),
            st.sampled_from([*NOT_A_NUMBER, "1e-30", "0.0000000000000000001", "-0"]).map(Raw),
            st.integers(10**30, 10**40),
        )
    if kind == "direction":
        return st.text(max_size=8).filter(lambda text: text not in ("BUY", "SELL"))
    if kind == "string":
        limit = 64 if path[-1] in ("ticker", "type") else 500 if path[-1] == "name" else 200
        empty_refused = path[-1] != "name"
        return st.one_of(
            *([st.just("")] if empty_refused else []),
            st.integers(limit + 1, limit + 40).map(lambda n: "x" * n),
        )
    return st.nothing()


def deep(depth: int, *, array: bool) -> Raw:
    return Raw("[" * depth + "]" * depth if array else '{"a":' * depth + "1" + "}" * depth)


@dataclass(frozen=True)
class Case:
    """A body and what must come of it: its status, and its error code or typed error type."""

    label: str
    body: bytes
    status: int
    error: str


def base(timestamp: int) -> dict[str, Any]:
    """The example envelope as a dict: a SIGNAL_OPEN for 0.01 BTCUSDT that would trade (a
    strategy of its own, so that no earlier example's position stands in its way)."""
    strategy = {"id": f"generated-{timestamp}", "name": "Generated"}
    data = signal(ticker="BTCUSDT", quantity=Decimal("0.01"), strategy=strategy)
    return envelope("SIGNAL_OPEN", data, timestamp=timestamp)


def replace(document: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of ``document`` with the field at ``path`` set to ``value`` (``...``: removed)."""
    copy = json.loads(render(document), parse_float=Decimal)
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    if value is ...:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return copy  # type: ignore[no-any-return]


def with_duplicate(value: Any, draw: st.DrawFn) -> Any:
    """Some object inside ``value`` written with one of its keys twice."""
    objects: list[tuple[str, ...]] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict) and node:
            objects.append(path)
            for key, item in node.items():
                walk(item, (*path, key))

    walk(value, ())
    path = draw(st.sampled_from(objects))
    node = value
    for key in path:
        node = node[key]
    key = draw(st.sampled_from(sorted(node)))
    pairs = Pairs((*node.items(), (key, draw(scalars))))
    return pairs if not path else replace(value, path, pairs)


@st.composite
def malformed(draw: st.DrawFn, timestamp: int) -> Case:
    document = base(timestamp)
    how = draw(
        st.sampled_from(
            ["missing", "wrong type", "out of range", "deep", "duplicate key", "not UTF-8"]
        )
    )
    if how == "missing":
        path = draw(st.sampled_from(sorted(REQUIRED)))
        body = render(replace(document, path, ...))
        error = "unsupported_version" if path == ("v1",) else "malformed_body"
        return Case(f"missing {'.'.join(path)}", encode(body), 400, error)
    if how == "wrong type":
        path, kind = draw(st.sampled_from(sorted(FIELDS.items())))
        value = draw((near_misses(kind) | json_values).filter(lambda v: not of_kind(kind, v)))
        return Case(
            f"{'.'.join(path)} = {value!r}",
            encode(render(replace(document, path, value))),
            400,
            "malformed_body",
        )
    if how == "out of range":
        candidates = sorted(
            p for p, k in FIELDS.items() if k in ("integer", "number", "direction", "string")
        )
        path = draw(st.sampled_from(candidates))
        value = draw(out_of_range(FIELDS[path], path))
        return Case(
            f"{'.'.join(path)} = {value!r}",
            encode(render(replace(document, path, value))),
            400,
            "malformed_body",
        )
    if how == "deep":
        # Required fields only: a nested object where an optional object may stand (the
        # integration) is valid, unknown keys being allowed.
        path = draw(st.sampled_from(sorted(REQUIRED)))
        array = draw(st.booleans())
        value = deep(draw(st.integers(50, 20_000 if array else 9_000)), array=array)
        return Case(
            f"{'.'.join(path)} nested",
            encode(render(replace(document, path, value))),
            400,
            "malformed_body",
        )
    if how == "duplicate key":
        return Case(
            "duplicate key", encode(render(with_duplicate(document, draw))), 400, "malformed_body"
        )
    # Invalid UTF-8 somewhere inside a string: a stray continuation byte, an overlong form,
    # a lone surrogate written raw.
    text = render(document, ascii_only=False).encode()
    junk = draw(st.sampled_from([b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xff", b"\xf8\x88"]))
    cut = text.index(b'"BTCUSDT"') + 2
    return Case(f"not UTF-8: {junk!r}", text[:cut] + junk + text[cut:], 400, "malformed_body")


unicode_text = st.text(
    st.characters(codec=None, exclude_categories=["Cs"]), min_size=1, max_size=64
)


@st.composite
def unicode_names(draw: st.DrawFn, timestamp: int) -> Case:
    """Any Unicode in the ticker (escaped or raw), the strategy and the position ids: a
    ticker no account trades, answered typed and stored exactly."""
    ticker = draw(unicode_text.filter(lambda text: text not in TRADED))
    data = signal(
        ticker=ticker,
        quantity=Decimal("0.01"),
        strategy={"id": draw(unicode_text), "name": draw(st.text(max_size=20))},
        position_id=draw(unicode_text),
    )
    document = envelope(draw(st.sampled_from(SIGNALS)), data, timestamp=timestamp)
    body = encode(render(document, ascii_only=draw(st.booleans())))
    texts = [ticker, data["strategy"]["id"], data["strategy"]["name"], data["proquantPositionId"]]
    if any("\x00" in text for text in texts):
        return Case(f"NUL in {texts!r}", body, 400, "malformed_body")
    return Case(f"ticker {ticker!r}", body, 422, "UnsupportedInstrument")


@st.composite
def lone_surrogates(draw: st.DrawFn, timestamp: int) -> Case:
    """A lone UTF-16 surrogate escaped (``\\ud800``): valid JSON, but no text a database
    column can hold."""
    field = draw(st.sampled_from(["ticker", "strategy", "position"]))
    surrogate = chr(draw(st.integers(0xD800, 0xDFFF)))
    name = draw(st.text(max_size=5)) + surrogate
    data = signal(
        ticker=name if field == "ticker" else "DOGEUSD",
        quantity=Decimal("0.01"),
        strategy={"id": name if field == "strategy" else "s", "name": "x"},
        position_id=name if field == "position" else "p",
    )
    body = render(envelope("SIGNAL_OPEN", data, timestamp=timestamp)).encode()
    return Case(f"lone surrogate in the {field}", body, 400, "malformed_body")


def traces(service: Service) -> tuple[int, int, int, int]:
    """How many orders, positions, ledger postings and events there are."""
    [[row]] = service.rows_many(
        (
            "SELECT (SELECT count(*) FROM orders) AS orders,"
            " (SELECT count(*) FROM positions) AS positions,"
            " (SELECT count(*) FROM postings) AS postings,"
            " (SELECT count(*) FROM events) AS events",
            (),
        )
    )
    return (row["orders"], row["positions"], row["postings"], row["events"])


def assert_stored_and_answered(service: Service, case: Case) -> None:
    before = traces(service)
    response = service.post(case.body)
    assert response.status_code < 500, (case.label, response.text)
    assert response.status_code == case.status, (case.label, response.text)
    answer = response.json()
    typed = response.headers.get("x-proquant-error") == "1"
    assert answer["type" if typed else "error"] == case.error, (case.label, answer)
    after = traces(service)
    assert after[:3] == before[:3], case.label  # no order, position or posting
    assert after[3] == before[3] + 1, case.label
    [stored] = service.rows(
        "SELECT raw_body, answer_status, answer_body FROM events ORDER BY id DESC LIMIT 1"
    )
    assert bytes(stored["raw_body"]) == case.body.replace(TOKEN.encode(), REDACTED)
    assert stored["answer_status"] == response.status_code
    assert stored["answer_body"] == response.text


def timestamps(service: Service) -> Iterator[int]:
    """Fresh timestamps, a millisecond apart: each body is a new event."""
    return itertools.count(service.clock.milliseconds())


def test_generated_malformed_envelopes_are_400_stored_and_execute_nothing(
    service: Service,
) -> None:
    fresh = timestamps(service)

    @settings(max_examples=150)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        assert_stored_and_answered(service, data.draw(malformed(next(fresh)), label="case"))

    check()


def test_unicode_names_are_stored_exactly_and_trade_nothing(service: Service) -> None:
    fresh = timestamps(service)

    @settings(max_examples=60)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        case = data.draw(
            st.one_of(unicode_names(next(fresh)), lone_surrogates(next(fresh))), label="case"
        )
        assert_stored_and_answered(service, case)

    check()


# -- the transport: size, slowness, bodies that never end ----------------------------------


def raw_post(
    service: Service,
    chunks: Iterable[bytes],
    *,
    length: int | None,
    pause: float = 0,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """POST over a plain socket: the head, then each chunk after ``pause`` seconds. With
    ``length=None`` the body goes chunked (each piece one HTTP chunk, then the last one)."""
    url = urlsplit(service.url)
    head = {
        "host": url.netloc,
        "content-type": "application/json",
        "x-signalbridge-token": TOKEN,
        "connection": "close",
        **(
            {"content-length": str(length)}
            if length is not None
            else {"transfer-encoding": "chunked"}
        ),
        **(headers or {}),
    }
    with socket.create_connection((url.hostname, url.port), timeout=30) as connection:
        lines = "".join(f"{name}: {value}\r\n" for name, value in head.items())
        connection.sendall(f"POST /webhooks/proquant HTTP/1.1\r\n{lines}\r\n".encode())
        for chunk in chunks:
            time.sleep(pause)
            if length is None:
                chunk = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
            try:
                connection.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered early (413) and closed
        if length is None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                connection.sendall(b"0\r\n\r\n")
        return read_answer(connection)


def read_answer(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the answer (by its Content-Length: a server that answered
    before the body was all read may reset the connection right after)."""
    received = b""
    while True:
        head, separator, body = received.partition(b"\r\n\r\n")
        if separator:
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines)
            }
            if len(body) >= int(headers.get("content-length", 0)):
                return int(status_line.split()[1]), headers, body
        chunk = connection.recv(65536)
        assert chunk, f"the connection closed before a whole answer: {received!r}"
        received += chunk


def pieces(body: bytes, sizes: list[int]) -> list[bytes]:
    """``body`` cut at the given sizes (cycled), every byte sent once."""
    result: list[bytes] = []
    start = 0
    for size in itertools.cycle(sizes):
        if start >= len(body):
            return result
        result.append(body[start : start + size])
        start += size
    return result


def padded(timestamp: int, size: int) -> bytes:
    """The example envelope padded with whitespace (still valid JSON) to exactly ``size``."""
    body = render(base(timestamp)).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


def test_bodies_of_the_limit_are_read_and_one_byte_more_is_413_and_not_stored(
    service: Service,
) -> None:
    limit = service.settings.max_body_bytes
    assert limit == 64 * 1024
    fresh = timestamps(service)

    # Chunks of 1 KiB and more: 64 KiB in one-byte chunks is 65,536 writes and as many
    # parser callbacks, about 2.5 s a body on an idle machine; under a full run's parallel
    # load that neared the 10 s body timeout, and the test failed once (58 s). Tiny pieces
    # are the slow-body test's, on small bodies.
    @settings(max_examples=12)
    @given(
        size=st.sampled_from([limit, limit + 1]),
        chunked=st.booleans(),
        cut=st.integers(1024, 9000),
    )
    def check(size: int, chunked: bool, cut: int) -> None:
        body = padded(next(fresh), size)
        before = traces(service)
        if chunked:
            status, _, answer = raw_post(service, pieces(body, [cut]), length=None)
        else:
            response = service.post(body)
            status, answer = response.status_code, response.content
        after = traces(service)
        if size > limit:
            assert (status, json.loads(answer)["error"]) == (413, "body_too_large")
            assert after == before
        else:
            assert status == 200, answer  # the padded example: it trades
            assert after[3] == before[3] + 1

    check()


@sqlite_only
def test_a_slow_body_is_answered_as_if_sent_at_once_and_executes_once(
    service: Service,
) -> None:
    fresh = timestamps(service)

    @settings(max_examples=8)
    @given(
        data=st.data(),
        sizes=st.lists(st.integers(1, 200), min_size=1, max_size=4),
        chunked=st.booleans(),
    )
    def check(data: st.DataObject, sizes: list[int], chunked: bool) -> None:
        body = data.draw(
            st.sampled_from([render(base(next(fresh))).encode()])
            | malformed(next(fresh)).map(lambda case: case.body),
            label="body",
        )
        orders = traces(service)[0]
        cut = pieces(body, sizes)
        pause = min(0.01, 0.4 / len(cut))  # at most about 0.4 s a body
        status, headers, answer = raw_post(
            service, cut, length=None if chunked else len(body), pause=pause
        )
        at_once = service.post(body)  # the same event again: the stored answer, nothing run
        assert (status, answer) == (at_once.status_code, at_once.content)
        assert headers.get("x-proquant-error") == at_once.headers.get("x-proquant-error")
        assert traces(service)[0] == orders + (status == 200)

    check()


@sqlite_only
def test_a_body_that_never_completes_is_408_and_stores_nothing(
    start_service: ServiceFactory,
) -> None:
    service = start_service(body_timeout_seconds=0.5)
    body = render(base(service.clock.milliseconds())).encode()
    before = traces(service)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", int(urlsplit(service.url).port or 0))) as stalled:
        head = (
            "POST /webhooks/proquant HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"x-signalbridge-token: {TOKEN}\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        stalled.sendall(head.encode() + body[:40])
        # Meanwhile the server serves others.
        assert service.client.get("/healthz").status_code == 200
        stalled.settimeout(5)
        status, _, answer = read_answer(stalled)
    assert (status, json.loads(answer)["error"]) == (408, "body_timeout")
    assert 0.4 < time.monotonic() - started < 3
    assert traces(service) == before


@sqlite_only
def test_a_sender_gone_before_its_body_arrived_leaves_nothing_stored(
    start_service: ServiceFactory,
) -> None:
    """Half a body, then the connection closes: nothing is stored or executed, and the
    server serves the next delivery as usual."""
    service = start_service()
    body = render(base(service.clock.milliseconds())).encode()
    before = traces(service)
    with socket.create_connection(("127.0.0.1", int(urlsplit(service.url).port or 0))) as gone:
        head = (
            "POST /webhooks/proquant HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"x-signalbridge-token: {TOKEN}\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        gone.sendall(head.encode() + body[: len(body) // 2])
    assert service.client.get("/healthz").status_code == 200
    assert traces(service) == before
    assert service.post(body).status_code == 200
    [event] = service.rows("SELECT raw_body, answer_status FROM events")
    assert event["answer_status"] == 200  # the only event: the whole body, sent again


@sqlite_only
def test_a_body_dripping_forever_is_cut_off_too(start_service: ServiceFactory) -> None:
    """The limit is on the whole body, not on each pause: a byte every 0.1 s never ends."""
    service = start_service(body_timeout_seconds=0.5)
    body = render(base(service.clock.milliseconds())).encode()
    before = traces(service)
    for chunked in (False, True):
        status, _, answer = raw_post(
            service, pieces(body, [1])[:12], length=None if chunked else len(body), pause=0.1
        )
        assert (status, json.loads(answer)["error"]) == (408, "body_timeout")
    assert traces(service) == before
