"""Apply the schema migrations to the service's database (``signalbridge migrate`` or
start-up with ``migrate_on_start``).

A database already at :data:`HEAD` is left alone without loading Alembic: importing and
running it took about a tenth of a second of every start-up."""

from __future__ import annotations

from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import workers

HEAD = "0003"  # the newest revision in app/migrations/versions (a test keeps them in step)


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "app:migrations")
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the schema to the newest version. Processes starting together on PostgreSQL
    take turns (an advisory lock to the end of the migration's transaction): the first
    migrates, the others then find the schema current."""
    async with engine.begin() as connection:
        await workers.lock_setup(connection)
        if await revisions(connection) != [HEAD]:
            await connection.run_sync(_upgrade)


async def revisions(connection: AsyncConnection) -> list[str]:
    """The revisions the database is at: none for a database never migrated."""
    if not await connection.run_sync(lambda sync: inspect(sync).has_table("alembic_version")):
        return []
    rows = await connection.execute(text("SELECT version_num FROM alembic_version"))
    return [str(revision) for revision in rows.scalars()]
