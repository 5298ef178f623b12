"""Storage: exact decimals, the append-only journal, migrations."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, DateTime, Insert, bindparam, func, inspect, select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncConnection

import app.batch
from app import migrate, schema, sql, sqlite
from app.columns import UTCDateTime
from app.database import (
    Database,
    Pending,
    create_engine,
    insert_id,
    update_row,
)
from tests.conftest import drop_postgres_database, new_postgres_database, postgres_database_url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(create_engine(f"sqlite+aiosqlite:///{tmp_path}/db.sqlite"))
    await migrate.upgrade(database.engine)
    yield database
    await database.dispose()


@pytest.mark.anyio
async def test_decimals_round_trip_exactly_past_fifteen_digits(database: Database) -> None:
    exact = Decimal("12345678901234567890.123456789012345678")
    async with database.write() as connection:
        await connection.execute(
            schema.users.insert().values(id=1, email="a@b.c", created_at=_now())
        )
        await connection.execute(_account(cash=exact))
    async with database.read() as connection:
        stored = await connection.scalar(select(schema.accounts.c.cash))
    assert stored == exact
    assert str(stored) == str(exact)


@pytest.mark.anyio
async def test_floats_are_refused(database: Database) -> None:
    async with database.write() as connection:
        await connection.execute(
            schema.users.insert().values(id=1, email="a@b.c", created_at=_now())
        )
        statement = _account(cash=0.1)
        with pytest.raises(StatementError, match="must be Decimal"):
            await connection.execute(statement)
        # The prebuilt statements the write path runs refuse them the same way.
        with pytest.raises(StatementError, match="must be Decimal"):
            await insert_id(connection, schema.accounts, **_account(cash=0.1).compile().params)
        with pytest.raises(StatementError, match="must be Decimal"):
            await update_row(connection, schema.accounts, 1, cash=0.1)


@pytest.mark.anyio
async def test_the_journal_is_append_only(database: Database, tmp_path: Path) -> None:
    async with database.write() as connection:
        await connection.execute(
            text("INSERT INTO users (id, email, created_at) VALUES (1, 'a@b.c', '2026-01-01')")
        )
        await connection.execute(
            text(
                "INSERT INTO accounts (id, name, user_id, broker, currency, is_sandbox,"
                " is_verified, cash, created_at)"
                " VALUES (1, 'a', 1, 'paper', 'USD', 1, 1, '0', '2026-01-01')"
            )
        )
        await connection.execute(
            text(
                "INSERT INTO ledger_transactions (id, account_id, reference, kind, at)"
                " VALUES (1, 1, 'r', 'deposit', '2026-01-01')"
            )
        )
        await connection.execute(
            text(
                "INSERT INTO postings (transaction_id, account_id, ledger_account, amount)"
                " VALUES (1, 1, 'cash', '5')"
            )
        )
    connection = sqlite3.connect(tmp_path / "db.sqlite")
    try:
        for statement in (
            "UPDATE postings SET amount = '6'",
            "DELETE FROM postings",
            "UPDATE ledger_transactions SET kind = 'x'",
            "DELETE FROM ledger_transactions",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                connection.execute(statement)
    finally:
        connection.close()


@pytest.mark.anyio
async def test_migrations_are_idempotent(database: Database) -> None:
    await migrate.upgrade(database.engine)
    async with database.read() as connection:
        version = await connection.scalar(text("SELECT version_num FROM alembic_version"))
    assert version == migrate.HEAD


def _alembic_to(revision: str) -> Callable[[Connection], None]:
    """Alembic's own upgrade to ``revision``, whatever the database holds (a new database is
    otherwise built from the declaration, not migrated)."""

    def upgrade(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", "app:migrations")
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    return upgrade


@pytest.mark.anyio
async def test_the_migrations_build_the_schema_the_code_declares(empty_database_url: str) -> None:
    """Every table, column and index of ``app.schema`` (the partial indexes of 0002 among
    them), as the migrations leave a fresh database: a migration forgotten, or one that
    differs from the declaration, is a difference here."""
    engine = create_engine(empty_database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_alembic_to("head"))
        async with engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), schema.metadata)
            )
    finally:
        await engine.dispose()
    assert differences == []


@pytest.mark.anyio
async def test_a_new_database_is_built_as_the_migrations_build_it(empty_database_url: str) -> None:
    """A new database is built from the declaration (``create_all``, the ledger's triggers,
    the revision stamped), not migrated. Both ways end at the same catalog: every table's
    definition, column, index, constraint, trigger and function, as the database itself
    reports them (on SQLite the stored CREATE statements, item by item); and Alembic
    finds the new database at HEAD."""
    built, migrated = empty_database_url, await _another_database(empty_database_url)
    try:
        engine = create_engine(built)
        try:
            await migrate.upgrade(engine)
            async with engine.connect() as connection:
                revision = await connection.run_sync(
                    lambda sync: MigrationContext.configure(sync).get_current_revision()
                )
                built_catalog = await _catalog(connection)
        finally:
            await engine.dispose()
        engine = create_engine(migrated)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(_alembic_to("head"))
            async with engine.connect() as connection:
                migrated_catalog = await _catalog(connection)
        finally:
            await engine.dispose()
    finally:
        await _drop_database(migrated)
    assert revision == migrate.HEAD
    for trigger in ("ledger_transactions_no_update", "postings_no_delete"):  # and the others
        assert any(trigger in row for row in built_catalog)
    assert built_catalog == migrated_catalog


async def _another_database(url: str) -> str:
    """A second empty database beside ``url``'s."""
    if url.startswith("sqlite"):
        return url.replace(".db", "-second.db")
    return postgres_database_url(await new_postgres_database())


async def _drop_database(url: str) -> None:
    if not url.startswith("sqlite"):
        await drop_postgres_database(url.rsplit("/", 1)[1])


_SQLITE_CATALOG = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
_POSTGRES_CATALOG = [
    "SELECT table_name, column_name, ordinal_position, data_type, character_maximum_length,"
    " numeric_precision, numeric_scale, is_nullable, column_default"
    " FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 3",
    "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
    " ORDER BY 1, 2",
    "SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid)"
    " FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
    "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1",
    "SELECT proname, prosrc FROM pg_proc WHERE pronamespace = 'public'::regnamespace ORDER BY 1",
    "SELECT sequencename, data_type, increment_by FROM pg_sequences"
    " WHERE schemaname = 'public' ORDER BY 1",
]


async def _catalog(connection: AsyncConnection) -> list[tuple[object, ...]]:
    if connection.dialect.name == "sqlite":
        rows = (await connection.execute(text(_SQLITE_CATALOG))).all()
        return [(kind, name, table, _definition(sql)) for kind, name, table, sql in rows]
    found: list[tuple[object, ...]] = []
    for query in _POSTGRES_CATALOG:
        found += [tuple(row) for row in (await connection.execute(text(query))).all()]
    return found


def _definition(sql: str | None) -> tuple[str, ...]:
    """A stored CREATE statement as its head, its tail and its list's items (columns,
    constraints), whitespace aside; the items sorted, as their order means nothing
    (``create_all`` puts a table's UNIQUE before its FOREIGN KEY, Alembic after)."""
    if sql is None:  # an index SQLite made for a constraint
        return ()
    head, _, rest = " ".join(sql.split()).partition("(")
    body, _, tail = rest.rpartition(")")
    items, depth, start = [], 0, 0
    for index, character in enumerate(body):
        depth += {"(": 1, ")": -1}.get(character, 0)
        if character == "," and depth == 0:
            items.append(body[start:index].strip())
            start = index + 1
    items.append(body[start:].strip())
    return (head.strip(), tail.strip(), *sorted(items))


@pytest.mark.anyio
async def test_a_database_of_the_first_schema_upgrades_to_head_and_keeps_its_rows(
    empty_database_url: str,
) -> None:
    """A database an earlier release migrated (0001), with rows in it, reaches HEAD with
    its rows and the schema the code declares."""

    engine = create_engine(empty_database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_alembic_to("0001"))
            await connection.execute(
                schema.users.insert().values(id=1, email="a@b.c", created_at=_now())
            )
            await connection.execute(_account(cash=Decimal("12.5")))
        async with engine.connect() as connection:
            assert await migrate.revisions(connection) == ["0001"]
        said = await migrate.upgrade(engine)
        async with engine.connect() as connection:
            assert await migrate.revisions(connection) == [migrate.HEAD]
            assert await connection.scalar(select(schema.accounts.c.cash)) == Decimal("12.5")
            differences = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), schema.metadata)
            )
    finally:
        await engine.dispose()
    assert differences == []
    assert said == f"migrated from revision 0001 to {migrate.HEAD}"


def test_head_names_the_newest_migration() -> None:
    """A database at HEAD is not handed to Alembic: a migration added without moving HEAD
    would never run."""
    config = Config()
    config.set_main_option("script_location", "app:migrations")
    assert ScriptDirectory.from_config(config).get_heads() == [migrate.HEAD]


def test_the_known_revisions_are_the_migrations_in_order() -> None:
    """A database at a revision outside REVISIONS is refused as a newer release's."""
    config = Config()
    config.set_main_option("script_location", "app:migrations")
    walked = [script.revision for script in ScriptDirectory.from_config(config).walk_revisions()]
    assert tuple(reversed(walked)) == migrate.REVISIONS


@pytest.mark.anyio
async def test_a_database_something_else_made_is_refused_untouched(
    empty_database_url: str,
) -> None:
    """Tables but no revision: neither built over nor handed to Alembic, whose first
    CREATE TABLE would fail (or add ours beside a stranger's tables)."""
    engine = create_engine(empty_database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE users (id INTEGER PRIMARY KEY)"))
            await connection.execute(text("CREATE TABLE notes (body TEXT)"))
            await connection.execute(text("INSERT INTO users (id) VALUES (7)"))
        with pytest.raises(migrate.SchemaMismatch) as refused:
            await migrate.upgrade(engine)
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
            kept = (await connection.execute(text("SELECT id FROM users"))).scalars().all()
    finally:
        await engine.dispose()
    assert "has tables (notes, users) but no Signalbridge schema revision" in str(refused.value)
    assert sorted(tables) == ["notes", "users"]
    assert kept == [7]


@pytest.mark.anyio
async def test_a_database_a_newer_release_migrated_is_refused_untouched(
    empty_database_url: str,
) -> None:
    engine = create_engine(empty_database_url)
    try:
        await migrate.upgrade(engine)
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = '0999'"))
        with pytest.raises(migrate.SchemaMismatch) as refused:
            await migrate.upgrade(engine)
        async with engine.connect() as connection:
            assert await migrate.revisions(connection) == ["0999"]
    finally:
        await engine.dispose()
    assert str(refused.value).startswith(
        f"the database is at revision 0999, which this build does not know (its newest is "
        f"{migrate.HEAD})"
    )


@pytest.mark.anyio
async def test_an_empty_revision_table_is_migrated_from_the_first_revision(
    empty_database_url: str,
) -> None:
    """Only Alembic's table, with no row (a stamp undone): Alembic builds from the base."""
    engine = create_engine(empty_database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
            )
        said = await migrate.upgrade(engine)
        async with engine.connect() as connection:
            assert await migrate.revisions(connection) == [migrate.HEAD]
    finally:
        await engine.dispose()
    assert said == f"migrated from revision none to {migrate.HEAD}"


@pytest.mark.anyio
async def test_a_current_database_is_left_alone_without_alembic(empty_database_url: str) -> None:
    """An empty database is built, and start-up on a built one goes on, without importing
    Alembic."""
    engine = create_engine(empty_database_url)
    try:
        async with engine.connect() as connection:
            assert await migrate.revisions(connection) == []
        await migrate.upgrade(engine)
        async with engine.connect() as connection:
            assert await migrate.revisions(connection) == [migrate.HEAD]
    finally:
        await engine.dispose()
    check = (
        "import asyncio, sys\n"
        "from app import migrate\n"
        "from app.database import create_engine\n"
        "async def main():\n"
        f"    engine = create_engine({empty_database_url!r})\n"
        "    await migrate.upgrade(engine)\n"
        "    await migrate.upgrade(engine)\n"
        "    await engine.dispose()\n"
        "asyncio.run(main())\n"
        "print('alembic' in sys.modules)\n"
    )
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", check], capture_output=True, text=True
    )
    assert (result.returncode, result.stdout.strip()) == (0, "False"), result.stderr


def _account(*, cash: object) -> Insert:
    return schema.accounts.insert().values(
        id=1,
        name="a",
        user_id=1,
        broker="paper",
        currency="USD",
        is_sandbox=True,
        is_verified=True,
        cash=cash,
        created_at=_now(),
    )


# Where SQLite writes a temporary file shows only in the process's open file descriptors:
# it unlinks the file as it opens it.
NEEDS_PROC = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(),
    reason="needs /proc (Linux, as in CI): SQLite unlinks its temporary files as it opens "
    "them, so only the process's open file descriptors show one",
)


def _open_files() -> list[str]:
    """What this process's file descriptors point at (one, the listing's own, may be gone)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
    return found


def _now() -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC)


_USER = sql.Statement(
    schema.users.insert().values(id=bindparam("id"), email=bindparam("email"), created_at=_now())
)


@pytest.mark.anyio
async def test_concurrent_writes_share_commits_and_each_is_durable_when_it_returns(
    database: Database, tmp_path: Path
) -> None:
    """Group commit: fifty writers at once, one of them failing, and a SQLAlchemy write
    among them. Each successful write is on disk (seen by another connection) the moment
    it returns; the failing one leaves nothing, and its batch-mates are unharmed; fewer
    commits than writes ran."""
    seen_on_return: list[bool] = []
    commits = 0
    original = database._sqlite._commit_batch

    async def counted() -> None:
        nonlocal commits
        commits += database._sqlite._committed is not None
        await original()

    database._sqlite._commit_batch = counted  # type: ignore[method-assign]

    async def write(n: int) -> None:
        if n == 25:
            async with database.write() as connection:
                await connection.execute(
                    schema.users.insert().values(id=n, email=f"u{n}@b.c", created_at=_now())
                )
        else:
            async with database.transaction() as tx:
                await tx.run(_USER, id=n, email=f"u{n}@b.c")
                if n == 13:
                    raise RuntimeError("this writer fails after its insert")
        other = sqlite3.connect(tmp_path / "db.sqlite")
        try:
            rows = other.execute("SELECT count(*) FROM users WHERE id = ?", (n,)).fetchone()
        finally:
            other.close()
        seen_on_return.append(rows == (1,))

    results = await asyncio.gather(*(write(n) for n in range(1, 51)), return_exceptions=True)
    assert [type(r) for r in results if r is not None] == [RuntimeError]
    assert seen_on_return == [True] * 49
    other = sqlite3.connect(tmp_path / "db.sqlite")
    try:
        ids = {row[0] for row in other.execute("SELECT id FROM users")}
    finally:
        other.close()
    assert ids == set(range(1, 51)) - {13}
    assert 1 <= commits < 10


@pytest.mark.anyio
async def test_pending_writes_wait_for_their_commit_only_when_asked(
    database: Database, tmp_path: Path
) -> None:
    """A delivery's writes with ``pending`` return before their commit; ``durable()``
    returns once they are on disk."""
    pending = Pending()

    def on_disk() -> int:
        other = sqlite3.connect(tmp_path / "db.sqlite")
        try:
            return int(other.execute("SELECT count(*) FROM users").fetchone()[0])
        finally:
            other.close()

    async with database.transaction(pending) as tx:
        await tx.run(_USER, id=1, email="a@b.c")
    assert on_disk() == 0
    await pending.durable()
    assert on_disk() == 1


async def _wal(connection: asyncpg.Connection) -> tuple[int, int]:
    """The log's insert and flush positions, in bytes."""
    row = await connection.fetchrow(
        "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn, pg_current_wal_flush_lsn() - '0/0'"
    )
    return int(row[0]), int(row[1])


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.anyio
async def test_postgres_writes_are_flushed_before_durable_returns(database_url: str) -> None:
    """On PostgreSQL the write path commits without waiting for the disk; ``durable()``
    returns once the log is flushed past every write noted in ``pending``, and a
    transaction without a ``pending`` is flushed before it returns.

    Each check compares the log's flushed position with one read after the write: the
    flush's own commit comes later in the log, so a working flush always passes. The log's
    writer flushes by itself every 200 ms or so (and other databases of the server flush it
    too), so a missing flush goes unseen only if one of those falls in the few milliseconds
    between a write and its check."""
    database = Database(create_engine(database_url))
    await migrate.upgrade(database.engine)
    observer = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        pending = Pending()
        async with database.transaction(pending) as tx:
            setting = await tx.scalar(sql.Statement(text("SHOW synchronous_commit")))
            await tx.run(_USER, id=1, email="a@b.c")
        async with database.autocommit(pending) as tx:
            await tx.run(_USER, id=2, email="d@e.f")
        written, _ = await _wal(observer)  # both commits are in the log before this
        await pending.durable()
        _, flushed = await _wal(observer)
        assert setting == "off"
        assert flushed >= written

        async with database.transaction() as tx:  # no pending: durable on return
            await tx.run(_USER, id=3, email="g@h.i")
            written, _ = await _wal(observer)  # the write is in the log, its commit not yet
        _, flushed = await _wal(observer)
        assert flushed >= written
        assert await observer.fetchval("SELECT count(*) FROM users") == 3
    finally:
        await observer.close()
        await database.dispose()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("in_flight", "fast_disk", "on_the_loop"),
    [(0, True, True), (1, True, True), (2, True, False), (1, False, False)],
)
async def test_a_commit_runs_on_the_loop_only_when_nothing_else_waits_and_the_disk_is_fast(
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    in_flight: int,
    fast_disk: bool,
    on_the_loop: bool,
) -> None:
    """A lone delivery's COMMIT runs on the loop's thread (a hop to the commit thread
    costs more than a fast disk's sync); with other deliveries in flight, or after slow
    COMMITs, it waits for the disk in the commit thread. Either way it is durable."""
    async with database.transaction() as tx:  # opens the writer
        await tx.run(_USER, id=1, email="a@b.c")
    # A fast disk: every COMMIT is under the threshold, however loaded the machine running
    # this test is; a slow one: none is.
    monkeypatch.setattr(app.batch, "INLINE_COMMIT_SECONDS", 60.0 if fast_disk else 0.0)
    database.deliveries_in_flight = in_flight
    committed_on: list[int] = []
    assert database._sqlite._raw is not None
    database._sqlite._raw.set_trace_callback(
        lambda statement: (
            committed_on.append(threading.get_ident()) if statement == "COMMIT" else None
        )
    )
    async with database.transaction() as tx:
        await tx.run(_USER, id=2, email="b@b.c")
    assert len(committed_on) == 1
    assert (committed_on[0] == threading.get_ident()) is on_the_loop
    other = sqlite3.connect(database.engine.url.database or "")
    try:
        assert other.execute("SELECT count(*) FROM users").fetchone() == (2,)
    finally:
        other.close()


@pytest.mark.anyio
@NEEDS_PROC
@pytest.mark.parametrize(("users", "spilled"), [(100, False), (400, True)])
async def test_a_savepoints_undo_log_stays_in_memory_up_to_its_limit(
    database: Database, users: int, spilled: bool
) -> None:
    """Each write transaction is a savepoint in the open batch, and SQLite keeps the pages
    a savepoint changes, as they were, in a sub-journal: past 64 KiB a temporary file at
    SQLite's default, past 128 KiB with app.sqlite's (sqlite.configure_library), more
    than a delivery's largest (under 80 KiB, README Performance). That file is written on
    the event loop's thread, under /var/tmp. 100 users changed (about 20 pages of the
    table and its index) stay in memory; 400 spill to the file, and are written right."""
    longer = sql.Statement(text("UPDATE users SET email = email || 'x'"))
    async with database.transaction() as tx:
        for n in range(users):
            await tx.run(_USER, id=n, email=f"{n}@{'b' * 300}.c")
    pending = Pending()
    async with database.transaction(pending) as tx:
        assert await tx.run(longer) == users  # each page changed in the savepoint
        temporary = [link for link in _open_files() if "etilqs_" in link]  # SQLite's
    await pending.durable()
    assert len(temporary) == spilled
    async with database.transaction() as tx:
        shortest = sql.Statement(text("SELECT min(length(email)) FROM users"))
        assert await tx.scalar(shortest) == len("0@" + "b" * 300 + ".c" + "x")


@pytest.mark.anyio
async def test_writes_runnable_a_pass_later_share_the_commit_and_a_stream_cannot_delay_it(
    database: Database,
) -> None:
    """The batch's COMMIT waits while passes of the event loop add writes to it: a write
    that becomes runnable a pass after the first shares its commit. A stream of
    writes, one every pass, cannot hold it back: the first write is durable after at most
    BATCH_PASSES passes, long before the stream ends."""
    async with database.transaction() as tx:  # opens the writer
        await tx.run(_USER, id=1, email="u1@b.c")
    commits = 0

    def count(statement: str) -> None:
        nonlocal commits
        commits += statement == "COMMIT"

    assert database._sqlite._raw is not None
    database._sqlite._raw.set_trace_callback(count)

    async def write(n: int, *, after_passes: int) -> None:
        for _ in range(after_passes):
            await asyncio.sleep(0)
        async with database.transaction() as tx:
            await tx.run(_USER, id=n, email=f"u{n}@b.c")

    await asyncio.gather(write(2, after_passes=0), write(3, after_passes=1))
    assert commits == 1

    commits = 0
    stream_length = 80
    assert app.batch.BATCH_PASSES <= 20  # the stream outlasts the bound
    first = asyncio.create_task(write(100, after_passes=0))
    stream = [asyncio.create_task(write(101 + n, after_passes=n)) for n in range(stream_length)]
    await first
    assert sum(task.done() for task in stream) < stream_length // 2
    await asyncio.gather(*stream)
    assert commits >= 2
    async with database.read() as connection:
        count_ = await connection.scalar(text("SELECT count(*) FROM users"))
    assert count_ == 3 + 1 + stream_length


@pytest.mark.anyio
async def test_a_write_waits_for_another_process_and_the_loop_keeps_running(
    database: Database, tmp_path: Path
) -> None:
    """Another process holds SQLite's write lock: our writer waits for it (in a thread:
    the inline BEGIN gives up at once and the busy timeout runs there), the event loop
    keeps running meanwhile, and the write completes once the lock is released."""
    other = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks += 1

    async def write() -> None:
        async with database.write() as connection:
            await connection.execute(
                schema.users.insert().values(id=1, email="a@b.c", created_at=_now())
            )

    writer = asyncio.create_task(write())
    await tick()
    assert not writer.done()  # still waiting for the lock
    assert ticks == 20  # and the loop was never blocked
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(writer, 10)
    async with database.read() as connection:
        assert await connection.scalar(select(schema.users.c.email)) == "a@b.c"


def test_datetimes_are_stored_on_sqlite_as_sqlalchemy_stores_them() -> None:
    """UTCDateTime writes SQLite's text itself; it must be the characters SQLAlchemy's
    DATETIME writes (and parses back), whatever the zone it is given in."""
    dialect = create_engine("sqlite+aiosqlite:///unused.db").dialect
    ours = UTCDateTime().bind_processor(dialect)
    stock = DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert ours is not None
    assert stock is not None
    paris = timezone(timedelta(hours=1))
    for moment in (
        datetime(2026, 11, 21, 23, 5, 7, 120034, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 3, 4, 0, 30, tzinfo=paris),
    ):
        assert ours(moment) == stock(moment.astimezone(UTC).replace(tzinfo=None))
    with pytest.raises(ValueError, match="timezone-aware"):
        ours(datetime(2026, 1, 1))


def test_none_still_binds_as_null_with_the_adapter_for_speed(tmp_path: Path) -> None:
    """app.sqlite registers an adapter for None (sqlite3's search for one is slow): NULL
    is what a None parameter stores, on a connection of ours and on any other."""
    ours = sqlite.open_connection(str(tmp_path / "ours.db"))
    other = sqlite3.connect(tmp_path / "other.db")
    try:
        for connection in (ours, other):
            connection.execute("CREATE TABLE t (v TEXT)")
            connection.execute("INSERT INTO t VALUES (?)", (None,))
            row = connection.execute("SELECT typeof(v), v IS NULL, typeof(?) FROM t", (None,))
            assert row.fetchone() == ("null", 1, "null")
    finally:
        ours.close()
        other.close()


_MEMORY_STATISTICS_PROBE = """
import _sqlite3, ctypes, sqlite3, sys
used = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
used.restype = ctypes.c_int64
early = sqlite3.connect(":memory:") if sys.argv[1] == "connection-first" else None
if sys.argv[1] == "without":
    connection = sqlite3.connect(sys.argv[2])
else:
    from app import sqlite
    connection = sqlite.open_connection(sys.argv[2])
connection.execute("CREATE TABLE t (v TEXT)")
connection.execute("INSERT INTO t VALUES ('kept')")
connection.commit()
if early is not None:
    early.execute("CREATE TABLE e (v)")  # still usable: the library was left alone
print(used(), connection.execute("SELECT v FROM t").fetchall())
"""


@pytest.mark.parametrize(
    ("how", "counted"),
    [("without", True), ("app-first", False), ("connection-first", True)],
)
def test_sqlite_memory_statistics_are_off_unless_sqlite_was_in_use(
    tmp_path: Path, how: str, counted: bool
) -> None:
    """Importing app.sqlite turns SQLite's memory statistics off (a mutex on every
    allocation, README Performance) in a fresh process: the library then counts no memory
    in use while a connection is open and writes. It leaves a library with a connection
    already open alone (configuring means shutting it down), and the connection usable."""
    probe = subprocess.run(
        [sys.executable, "-c", _MEMORY_STATISTICS_PROBE, how, str(tmp_path / "probe.db")],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    used, rows = probe.stdout.split(" ", 1)
    assert rows.strip() == "[('kept',)]"
    assert (int(used) > 0) is counted


_SUB_JOURNAL_PROBE = """
import os, sqlite3, sys
how, path, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
if how == "without":
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
else:
    from app import sqlite
    connection = sqlite.open_connection(path)
connection.execute("CREATE TABLE t (v TEXT)")
connection.executemany("INSERT INTO t VALUES (?)", [("x" * 3000,)] * rows)
connection.execute("BEGIN IMMEDIATE")
connection.execute("SAVEPOINT s")
connection.execute("UPDATE t SET v = 'y' || substr(v, 2)")  # a page's undo record each
links = []
for descriptor in os.listdir("/proc/self/fd"):
    try:
        links.append(os.readlink(f"/proc/self/fd/{descriptor}"))
    except FileNotFoundError:  # the listing's own
        pass
connection.execute("ROLLBACK TO s")
connection.execute("RELEASE s")
connection.execute("COMMIT")
undone = connection.execute("SELECT count(*) FROM t WHERE v LIKE 'x%'").fetchone()[0]
print(sum(link.startswith(os.environ["SQLITE_TMPDIR"]) for link in links), undone)
"""


@NEEDS_PROC
@pytest.mark.parametrize(
    ("how", "rows", "files"),
    [("without", 25, 1), ("app", 25, 0), ("app", 100, 1)],
)
def test_importing_app_sqlite_keeps_a_sub_journal_in_memory_to_128_kib(
    tmp_path: Path, how: str, rows: int, files: int
) -> None:
    """Importing app.sqlite keeps a sub-journal (a savepoint's undo log) in memory up to
    128 KiB, where SQLite's default writes a temporary file past 64 KiB (README
    Performance): a savepoint that rewrites 25 pages (about 100 KiB of undo log) opens no
    file in SQLITE_TMPDIR with it, and one without it does; past the limit, 100 pages, it
    spills to a file (which fails with a limit SQLite mishandles). Rolled back, every row
    is as it was."""
    temporary = tmp_path / "temporary"
    temporary.mkdir()
    probe = subprocess.run(
        [sys.executable, "-c", _SUB_JOURNAL_PROBE, how, str(tmp_path / "probe.db"), str(rows)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "SQLITE_TMPDIR": str(temporary)},
    )
    assert probe.stdout.split() == [str(files), str(rows)]


@pytest.mark.anyio
async def test_on_sqlite_deliveries_take_turns_between_their_stages(database_url: str) -> None:
    """With others in flight, each stage runs for every delivery before the next stage
    begins, on SQLite, where statements never wait; on PostgreSQL each statement's round
    trip already does. A delivery alone takes no turn."""
    database = Database(create_engine(database_url))
    order: list[str] = []

    async def delivery(name: str) -> None:
        order.append(f"{name} parsed")
        await database.take_turns()
        order.append(f"{name} claimed")

    try:
        database.deliveries_in_flight = 2  # as the receiver counts them
        await asyncio.gather(delivery("a"), delivery("b"))
        interleaved = list(order)
        order.clear()
        database.deliveries_in_flight = 1
        await asyncio.gather(delivery("a"), delivery("b"))
    finally:
        await database.dispose()
    one_by_one = ["a parsed", "a claimed", "b parsed", "b claimed"]
    if database.is_sqlite:
        assert interleaved == ["a parsed", "b parsed", "a claimed", "b claimed"]
    else:
        assert interleaved == one_by_one
    assert order == one_by_one


@pytest.mark.anyio
async def test_a_turn_keeps_the_open_batch_for_the_writes_after_it(database: Database) -> None:
    """Turns count as writes for the batch's COMMIT, which would otherwise come between a
    delivery's stages: writes on either side of a few turns share one COMMIT."""
    database.deliveries_in_flight = 2
    pending = Pending()
    async with database.autocommit(pending) as tx:
        await tx.run(_USER, id=1, email="a@b.c")
    for _ in range(app.batch.BATCH_PASSES - 1):
        await database.take_turns()
    async with database.autocommit(pending) as tx:
        await tx.run(_USER, id=2, email="d@e.f")
    assert len(pending._commits) == 1  # one batch's commit for both
    await pending.durable()
    async with database.snapshot() as tx:
        assert await tx.scalar(_USERS) == 2


_USERS = sql.Statement(select(func.count()).select_from(schema.users))
