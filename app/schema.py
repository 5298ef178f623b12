"""The tables (SQLAlchemy Core): what queries are written against, and the schema a new
database is built from (:mod:`app.migrate`: ``metadata.create_all`` with the triggers
below); the migrations in ``app/migrations`` bring an existing database to it.

The invariants the database itself enforces:

* ``events``: a dedupe key is claimed once (partial unique index over first deliveries), so
  an event executes at most once;
* ``positions``: at most one position per strategy that is not closed (partial unique index);
* ``orders.client_order_id`` and ``fills (order_id, broker_fill_id)`` are unique, so an order
  is sent once and a fill applied once;
* ``postings`` and ``ledger_transactions`` are append-only (triggers refuse UPDATE and DELETE).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    false,
    text,
)

from app.columns import ExactDecimal, UTCDateTime

metadata = MetaData()

OPEN_POSITION = text("status <> 'closed'")
FIRST_DELIVERY = text("duplicate_of IS NULL AND dedupe_key IS NOT NULL")
PENDING = text("state = 'pending'")
# Partial indexes' predicates, used as the same text in the queries they serve: a planner
# matches a partial index to a query's literal condition, not to a bound parameter.
PENDING_ORDER = text("status = 'pending'")

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("user_id", ForeignKey("users.id"), nullable=False),
    Column("broker", String(100), nullable=False),
    Column("currency", String(16), nullable=False),
    Column("is_sandbox", Boolean, nullable=False),
    Column("is_verified", Boolean, nullable=False),
    # The running sum of the account's cash postings, kept in the same transaction as the
    # postings; the row is what a funds check locks. Tests assert it equals the journal.
    Column("cash", ExactDecimal, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

integrations = Table(
    "integrations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("user_id", ForeignKey("users.id"), nullable=False),
    Column("account_id", ForeignKey("accounts.id"), nullable=False),
    Column("provider", String(50), nullable=False),
    Column("status", String(20), nullable=False),
    Column("token_header", String(100), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

integration_tokens = Table(
    "integration_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("integration_id", ForeignKey("integrations.id"), nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)

strategies = Table(
    "strategies",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("integration_id", ForeignKey("integrations.id"), nullable=False),
    Column("external_id", String(200), nullable=False),
    Column("name", String(500), nullable=False),
    Column("enabled", Boolean, nullable=False),  # the provider's switch
    Column("paused", Boolean, nullable=False, server_default=false()),  # the operator's
    # Sizing rules set by the operator; NULL: the config's.
    Column("quantity_multiplier", ExactDecimal),
    Column("max_order_quantity", ExactDecimal),
    Column("allocation_percent", ExactDecimal),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("integration_id", "external_id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("key_sha256", String(64), nullable=False, unique=True),
    Column("scope", String(8), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)

# The processes that have served: an id no process had before, held alive on PostgreSQL by an
# advisory lock (see app/workers.py). An event records the worker that claimed it.
workers = Table(
    "workers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("received_at", UTCDateTime, nullable=False),
    Column("raw_body", LargeBinary, nullable=False),
    Column("body_sha256", String(64), nullable=False),
    Column("content_type", String(200)),
    Column("dedupe_key", String(600)),
    Column("duplicate_of", ForeignKey("events.id")),
    Column("integration_id", ForeignKey("integrations.id")),
    Column("version", String(20)),
    Column("deprecation", String(64)),
    Column("event_type", String(64)),
    Column("strategy_external_id", String(200)),
    Column("provider_position_id", String(200)),
    Column("state", String(20), nullable=False),
    Column("error_type", String(64)),
    Column("answer_status", Integer),
    Column("answer_body", Text),
    Column("answered_at", UTCDateTime),
    Column("note", Text),
    Column("timings", Text),
    Column("worker_id", ForeignKey("workers.id")),  # who stored it, or last claimed it to run
    Index(
        "events_first_delivery",
        "dedupe_key",
        unique=True,
        sqlite_where=FIRST_DELIVERY,
        postgresql_where=FIRST_DELIVERY,
    ),
    Index("events_received_at", "received_at"),
    Index("events_pending", "worker_id", sqlite_where=PENDING, postgresql_where=PENDING),
)

positions = Table(
    "positions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("strategy_id", ForeignKey("strategies.id"), nullable=False),
    Column("account_id", ForeignKey("accounts.id"), nullable=False),
    Column("ticker", String(64), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("status", String(12), nullable=False),
    Column("quantity", ExactDecimal, nullable=False),
    Column("cost", ExactDecimal, nullable=False),
    Column("realized_pnl", ExactDecimal, nullable=False),
    Column("provider_position_id", String(200)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("opened_at", UTCDateTime),
    Column("closed_at", UTCDateTime),
    Column("attention", Text),
    Index(
        "positions_one_open_per_strategy",
        "strategy_id",
        unique=True,
        sqlite_where=OPEN_POSITION,
        postgresql_where=OPEN_POSITION,
    ),
    # An open's funds check sums the account's positions not closed.
    Index(
        "positions_open_by_account",
        "account_id",
        sqlite_where=OPEN_POSITION,
        postgresql_where=OPEN_POSITION,
    ),
)

orders = Table(
    "orders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("client_order_id", String(64), nullable=False, unique=True),
    Column("event_id", ForeignKey("events.id"), nullable=False),
    Column("account_id", ForeignKey("accounts.id"), nullable=False),
    Column("strategy_id", ForeignKey("strategies.id"), nullable=False),
    Column("position_id", ForeignKey("positions.id")),
    Column("purpose", String(8), nullable=False),
    Column("ticker", String(64), nullable=False),
    Column("symbol", String(64), nullable=False),
    Column("side", String(4), nullable=False),
    Column("quantity", ExactDecimal, nullable=False),
    Column("reserved", ExactDecimal, nullable=False),
    Column("status", String(20), nullable=False),
    Column("broker_order_id", String(128)),
    Column("filled_quantity", ExactDecimal, nullable=False),
    Column("average_price", ExactDecimal),
    Column("fee", ExactDecimal, nullable=False),
    Column("reason", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # An open's funds check sums the account's pending orders; reconciliation looks for
    # pending orders. Only pending ones: the index stays the size of what is in flight.
    Index(
        "orders_pending",
        "account_id",
        sqlite_where=PENDING_ORDER,
        postgresql_where=PENDING_ORDER,
    ),
    # A re-run of an event (a redelivery after a 503, a replay) looks up the orders its leg
    # sent already, on the writer: without this, a read of every order.
    Index("orders_event", "event_id"),
)

fills = Table(
    "fills",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("order_id", ForeignKey("orders.id"), nullable=False),
    Column("broker_fill_id", String(128), nullable=False),
    Column("quantity", ExactDecimal, nullable=False),
    Column("price", ExactDecimal, nullable=False),
    Column("fee", ExactDecimal, nullable=False),
    Column("filled_at", UTCDateTime, nullable=False),
    UniqueConstraint("order_id", "broker_fill_id"),
)

ledger_transactions = Table(
    "ledger_transactions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", ForeignKey("accounts.id"), nullable=False),
    Column("reference", String(200), nullable=False, unique=True),
    Column("kind", String(20), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("fill_id", ForeignKey("fills.id")),
    Column("ticker", String(64)),
    Column("side", String(4)),
    Column("quantity", ExactDecimal),
    Column("price", ExactDecimal),
    Column("fee", ExactDecimal),
)

postings = Table(
    "postings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("transaction_id", ForeignKey("ledger_transactions.id"), nullable=False),
    Column("account_id", ForeignKey("accounts.id"), nullable=False),
    Column("ledger_account", String(16), nullable=False),
    Column("amount", ExactDecimal, nullable=False),
    Column("ticker", String(64)),
    Column("quantity", ExactDecimal),
    Index("postings_account", "account_id", "transaction_id"),
)


# The ledger is append-only in both databases: the triggers migration 0001 made, declared
# here for a new database (0001 keeps its own text, as history; a test compares the two).
APPEND_ONLY_MESSAGE = "the ledger is append-only"


@event.listens_for(metadata, "after_create")
def _append_only(_metadata: MetaData, connection: Connection, **_options: Any) -> None:
    postgresql = connection.dialect.name == "postgresql"
    if postgresql:
        connection.exec_driver_sql(
            "CREATE FUNCTION signalbridge_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}'; END $$"
        )
    for table in (ledger_transactions, postings):
        for action in ("UPDATE", "DELETE"):
            trigger = (
                f"CREATE TRIGGER {table.name}_no_{action.lower()} BEFORE {action} ON {table.name}"
            )
            connection.exec_driver_sql(
                f"{trigger} FOR EACH ROW EXECUTE FUNCTION signalbridge_append_only()"
                if postgresql
                else f"{trigger} BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"
            )
