"""Alembic environment: migrations run on a connection the caller hands in.

Signalbridge applies them itself (:func:`app.migrate.upgrade`) on its own engine, for both
SQLite and PostgreSQL; there is no alembic.ini to keep in step.
"""

from alembic import context

from app.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
