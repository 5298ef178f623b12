"""The operator's commands: each is one call to the operator API, printed as a table (or,
with ``--json``, the raw answer). ``api-keys`` works on the database itself, since the
first key has to come from somewhere."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from app.settings import Settings

if TYPE_CHECKING:
    import httpx

Run = Callable[[argparse.Namespace, Settings], int]


def add(commands: Any, client_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register the operator commands on the CLI's subparsers."""

    def group(name: str, help_text: str) -> Any:
        return commands.add_parser(name, help=help_text).add_subparsers(
            required=True, metavar="ACTION"
        )

    def action(parent: Any, name: str, run: Run, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, help=help_text)
        client_options(parser)
        parser.set_defaults(run=run)
        return parser

    events = group("events", "deliveries: list, show, replay")
    listing = action(events, "list", _events, "the latest deliveries and their answers")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--type")
    listing.add_argument("--state")
    listing.add_argument("--strategy")
    action(events, "show", _event, "one delivery, raw body included").add_argument("id")
    action(
        events, "replay", _post("/api/events/{id}/replay"), "run a stored event again"
    ).add_argument("id")

    users = group("users", "users: list, create")
    action(users, "list", _call("GET", "/api/users", rows="users"), "list users")
    action(users, "create", _create_user, "create a user").add_argument("email")

    accounts = group("accounts", "accounts: list, create, verify")
    action(accounts, "list", _call("GET", "/api/accounts", rows="accounts"), "list accounts")
    create_account = action(accounts, "create", _create_account, "a sandbox paper account")
    create_account.add_argument("name")
    create_account.add_argument("--user", required=True)
    create_account.add_argument("--currency", default="USD")
    verify = _post("/api/accounts/{name}/verify")
    action(accounts, "verify", verify, "let a production account trade").add_argument("name")
    for name, help_text in (("deposit", "money into"), ("withdraw", "money out of")):
        parser = action(commands, name, _money(name), f"{help_text} a paper account")
        parser.add_argument("account")
        parser.add_argument("amount")
        parser.add_argument("--idempotency-key")

    integrations = group("integrations", "integrations: list, create, rotate, revoke, register")
    action(integrations, "list", _call("GET", "/api/integrations", rows="integrations"), "list")
    create = action(integrations, "create", _create_integration, "a new integration and token")
    create.add_argument("name")
    create.add_argument("--user", required=True)
    create.add_argument("--account", required=True)
    create.add_argument("--token-header", default="x-signalbridge-token")
    for verb, help_text in (
        ("rotate", "add a second token (shown once)"),
        ("revoke", "revoke the older of two tokens"),
        ("register", "ask the provider to create the integration request"),
    ):
        action(
            integrations, verb, _post(f"/api/integrations/{{name}}/{verb}"), help_text
        ).add_argument("name")

    strategies = group("strategies", "strategies: list, pause, resume, edit, close, retire")
    action(strategies, "list", _call("GET", "/api/strategies", rows="strategies"), "list")
    for verb, help_text in (
        ("pause", "store its signals without executing them"),
        ("resume", "execute its signals again"),
        ("close", "close its position by hand"),
        ("retire", "pause it and close its position"),
    ):
        parser = action(strategies, verb, _post(f"/api/strategies/{{id}}/{verb}"), help_text)
        parser.add_argument("id")
        parser.add_argument("--idempotency-key")
    edit = action(strategies, "edit", _edit_strategy, "set its sizing rules")
    edit.add_argument("id")
    for rule in ("quantity-multiplier", "max-order-quantity", "allocation-percent"):
        edit.add_argument(f"--{rule}", help="a decimal, or 'config' for the config's")

    keys = group("api-keys", "operator API keys in the database: create, revoke, list")
    create_key = keys.add_parser("create", help="a new key (shown once)")
    create_key.add_argument("name")
    create_key.add_argument("--scope", choices=["read", "write"], default="read")
    create_key.set_defaults(run=_create_key)
    revoke_key = keys.add_parser("revoke", help="revoke a key")
    revoke_key.add_argument("name")
    revoke_key.set_defaults(run=_revoke_key)
    keys.add_parser("list", help="list keys (never the keys)").set_defaults(run=_list_keys)


def request(
    arguments: argparse.Namespace,
    settings: Settings,
    method: str,
    path: str,
    *,
    body: Any = None,
    params: dict[str, Any] | None = None,
) -> Any:
    """Call the operator API with the operator key; exit with its error on failure."""
    key = arguments.api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    if key is None:
        key = next((k.key.get_secret_value() for k in settings.operator_keys if k.key), "")
    headers = {"x-api-key": key, "content-type": "application/json"}
    if getattr(arguments, "idempotency_key", None):
        headers["idempotency-key"] = arguments.idempotency_key
    base = str(arguments.url or f"http://{settings.host}:{settings.port}").rstrip("/")
    response = http(
        method,
        f"{base}{path}",
        params={k: v for k, v in (params or {}).items() if v is not None},
        content=None if body is None else _dumps(body),
        headers=headers,
        timeout=30,
    )
    if response.status_code >= 400:
        raise SystemExit(f"signalbridge: {response.status_code} {response.text}")
    return response.json()


class Unreachable(Exception):
    """The service could not be reached (refused, timed out, cut off)."""


def http(method: str, url: str, **options: Any) -> httpx.Response:
    """One HTTP call from the CLI to the service; httpx's errors become :class:`Unreachable`.

    httpx is imported here, not at the top: ``serve`` never needs it, and importing it took
    about a tenth of a second of every start-up."""
    import httpx

    try:
        return httpx.request(method, url, **options)
    except httpx.HTTPError as exc:
        raise Unreachable(str(exc)) from exc


def _dumps(body: Any) -> str:
    """JSON with Decimal values as exact numbers."""
    marks: dict[str, str] = {}

    def mark(value: Any) -> str:
        if isinstance(value, Decimal):
            marks[f"~{len(marks)}~"] = str(value)
            return f"~{len(marks) - 1}~"
        raise TypeError(type(value).__name__)

    text = json.dumps(body, default=mark)
    for placeholder, number in marks.items():
        text = text.replace(f'"{placeholder}"', number)
    return text


def show(arguments: argparse.Namespace, answer: Any, rows: list[dict[str, Any]] | None) -> int:
    if arguments.json or rows is None:
        print(json.dumps(answer, indent=2))
    else:
        print(table(rows))
    return 0


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "(none)"
    columns = columns or [c for c in rows[0] if not isinstance(rows[0][c], dict | list)]
    cells = [["" if row.get(c) is None else str(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _call(method: str, path: str, *, rows: str) -> Run:
    def run(arguments: argparse.Namespace, settings: Settings) -> int:
        answer = request(arguments, settings, method, path)
        return show(arguments, answer, answer[rows])

    return run


def _events(arguments: argparse.Namespace, settings: Settings) -> int:
    params = {
        "limit": arguments.limit,
        "type": arguments.type,
        "state": arguments.state,
        "strategy": arguments.strategy,
    }
    answer = request(arguments, settings, "GET", "/api/events", params=params)
    columns = ["id", "received_at", "type", "strategy_id", "state", "answer_status",
               "error_type", "note"]  # fmt: skip
    if arguments.json:
        return show(arguments, answer, None)
    print(table(answer["events"], columns))
    return 0


def _event(arguments: argparse.Namespace, settings: Settings) -> int:
    return show(arguments, request(arguments, settings, "GET", f"/api/events/{arguments.id}"), None)


def _create_user(arguments: argparse.Namespace, settings: Settings) -> int:
    answer = request(arguments, settings, "POST", "/api/users", body={"email": arguments.email})
    return show(arguments, answer, answer["users"])


def _create_account(arguments: argparse.Namespace, settings: Settings) -> int:
    body = {"name": arguments.name, "user": arguments.user, "currency": arguments.currency}
    answer = request(arguments, settings, "POST", "/api/accounts", body=body)
    return show(arguments, answer, answer["accounts"])


def _money(verb: str) -> Run:
    path = "deposits" if verb == "deposit" else "withdrawals"

    def run(arguments: argparse.Namespace, settings: Settings) -> int:
        body = {"amount": Decimal(arguments.amount)}
        answer = request(arguments, settings, "POST", f"/api/accounts/{arguments.account}/{path}",
                         body=body)  # fmt: skip
        return show(arguments, answer, None)

    return run


def _create_integration(arguments: argparse.Namespace, settings: Settings) -> int:
    body = {
        "name": arguments.name,
        "user": arguments.user,
        "account": arguments.account,
        "token_header": arguments.token_header,
    }
    answer = request(arguments, settings, "POST", "/api/integrations", body=body)
    return show(arguments, answer, None)


def _post(template: str) -> Run:
    """A command that POSTs to ``template`` filled in with the command's arguments."""

    def run(arguments: argparse.Namespace, settings: Settings) -> int:
        path = template.format(**vars(arguments))
        return show(arguments, request(arguments, settings, "POST", path), None)

    return run


def _edit_strategy(arguments: argparse.Namespace, settings: Settings) -> int:
    body: dict[str, Any] = {}
    for rule in ("quantity_multiplier", "max_order_quantity", "allocation_percent"):
        value = getattr(arguments, rule)
        if value is not None:
            body[rule] = None if value == "config" else Decimal(value)
    answer = request(arguments, settings, "PATCH", f"/api/strategies/{arguments.id}", body=body)
    return show(arguments, answer, None)


def _create_key(arguments: argparse.Namespace, settings: Settings) -> int:
    from app import keys

    async def create(connection: Any, now: Any) -> str:
        return await keys.create(connection, arguments.name, scope=arguments.scope, now=now)

    secret = _on_database(settings, create)
    print(f"created {arguments.scope} key {arguments.name!r}; it is shown only this once:")
    print(secret)
    return 0


def _revoke_key(arguments: argparse.Namespace, settings: Settings) -> int:
    from app import keys

    async def revoke(connection: Any, now: Any) -> None:
        await keys.revoke(connection, arguments.name, now=now)

    _on_database(settings, revoke)
    print(f"revoked {arguments.name!r}")
    return 0


def _list_keys(_arguments: argparse.Namespace, settings: Settings) -> int:
    from app import keys

    async def listing(connection: Any, _now: Any) -> list[dict[str, Any]]:
        return await keys.listing(connection)

    print(table(_on_database(settings, listing)))
    return 0


def _on_database(settings: Settings, work: Callable[[Any, Any], Any]) -> Any:
    """Run ``work`` in one write transaction on the configured database (migrated first)."""
    from datetime import UTC, datetime

    from app import migrate
    from app.database import Database, create_engine
    from app.errors import SignalbridgeError

    async def run() -> Any:
        database = Database(
            create_engine(settings.database_url, pool_size=settings.database_pool_size)
        )
        try:
            await migrate.upgrade(database.engine)
            async with database.write() as connection:
                return await work(connection, datetime.now(UTC))
        finally:
            await database.dispose()

    try:
        return asyncio.run(run())
    except SignalbridgeError as exc:
        raise SystemExit(f"signalbridge: {exc.message}") from None
    except migrate.SchemaMismatch as exc:
        raise SystemExit(f"signalbridge: {exc}") from None
