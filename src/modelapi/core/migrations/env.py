"""Alembic environment: migrations run on the connection :func:`modelapi.core.db.migrate` passes
(inside its start-up lock), never from an alembic.ini."""

from alembic import context

from modelapi.core.db import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
