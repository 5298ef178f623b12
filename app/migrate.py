"""Apply the schema migrations to the service's database (``signalbridge migrate`` or
start-up with ``migrate_on_start``)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app import workers


def _upgrade(connection: Connection) -> None:
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
        await connection.run_sync(_upgrade)
