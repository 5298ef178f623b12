"""Bring the service's database to the schema of this build (``signalbridge migrate`` or
start-up with ``migrate_on_start``).

A database already at :data:`HEAD` is left alone without loading Alembic: importing and
running it took about a tenth of a second of every start-up. A new database (no tables at
all) is built from the declared schema (:mod:`app.schema`: ``create_all``, its triggers
included) and stamped at :data:`HEAD`, as Alembic's cookbook suggests ("building an up to
date database from scratch"): one statement a table and index, without Alembic's import and
its steps through each revision (a new database's schema took 0.32 to 0.48 s on PostgreSQL
against 0.21 to 0.29 s, most of it the server's own work on each statement; 0.12 to 0.15 s
on SQLite against 0.02 s). Tests keep the two ways to the same schema. A database at an
earlier revision goes through the migrations.

Any other database is refused with :class:`SchemaMismatch`, before anything is written to it:
one with tables but no revision (not made by Signalbridge: Alembic would fail on its first
``CREATE TABLE``, or worse, add ours beside them), and one at a revision this build does not
know (migrated by a newer release: there is no way down from here).
"""

from __future__ import annotations

from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import schema, workers

# The revisions in app/migrations/versions, oldest first (a test keeps them in step).
REVISIONS = ("0001", "0002", "0003")
HEAD = REVISIONS[-1]


class SchemaMismatch(Exception):
    """The database is not one this build can bring to :data:`HEAD`; nothing was written."""


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "app:migrations")
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _create(connection: Connection) -> None:
    """The declared schema on an empty database, stamped at HEAD in the table Alembic keeps
    (as Alembic itself makes it), so later migrations start from there."""
    schema.metadata.create_all(connection, checkfirst=False)  # empty: nothing to look for
    connection.execute(
        text(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
    )
    connection.execute(
        text("INSERT INTO alembic_version (version_num) VALUES (:head)"), {"head": HEAD}
    )


def _table_names(connection: Connection) -> list[str]:
    return sorted(inspect(connection).get_table_names())


async def upgrade(engine: AsyncEngine) -> str:
    """Bring the schema to the newest version; what was done, in words (``signalbridge
    migrate`` prints it). Processes starting together on PostgreSQL take turns (an advisory
    lock to the end of the migration's transaction): the first migrates, the others then
    find the schema current."""
    async with engine.begin() as connection:
        await workers.lock_setup(connection)
        found = await revisions(connection)
        if found == [HEAD]:
            return f"the schema is current (revision {HEAD})"
        unknown = [revision for revision in found if revision not in REVISIONS]
        if unknown:
            raise SchemaMismatch(
                f"the database is at revision {', '.join(unknown)}, which this build does not "
                f"know (its newest is {HEAD}): a newer release of Signalbridge migrated it. "
                "Run that release, or point database_url at another database."
            )
        if not found:
            tables = await connection.run_sync(_table_names)
            if not tables:
                await connection.run_sync(_create)
                return f"a new database: the schema built at revision {HEAD}"
            others = [table for table in tables if table != "alembic_version"]
            if others:
                shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
                raise SchemaMismatch(
                    f"the database has tables ({shown}) but no Signalbridge schema revision "
                    "(no alembic_version row): something else made it. Point database_url at "
                    "an empty database or at one Signalbridge made."
                )
        await connection.run_sync(_upgrade)
        return f"migrated from revision {', '.join(found) or 'none'} to {HEAD}"


async def revisions(connection: AsyncConnection) -> list[str]:
    """The revisions the database is at: none for a database never migrated."""
    if not await connection.run_sync(lambda sync: inspect(sync).has_table("alembic_version")):
        return []
    rows = await connection.execute(text("SELECT version_num FROM alembic_version"))
    return [str(revision) for revision in rows.scalars()]
