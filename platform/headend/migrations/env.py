"""Alembic environment: runs on the connection headend.migrate hands over."""

from alembic import context
from headend.migrate import include_object
from headend.schema import metadata

target_metadata = metadata()
connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_object=include_object,
)
with context.begin_transaction():
    context.run_migrations()
