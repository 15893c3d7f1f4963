"""Trigram index for subscriber search on PostgreSQL.

Search matches words anywhere in `subscriber.search_text` (LIKE '%word%'); a btree cannot serve
that, a pg_trgm GIN index can. SQLite has no equivalent and scans, which is fine at its scale.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INDEX = "ix_subscriber_search_trgm"


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute(f"CREATE INDEX {INDEX} ON subscriber USING gin (search_text gin_trgm_ops)")


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {INDEX}")
