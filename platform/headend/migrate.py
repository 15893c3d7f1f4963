"""`headend db upgrade`: Alembic migrations, then FAB permissions and roles."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from flask import Flask

from headend.db import db

MIGRATIONS = Path(__file__).parent / "migrations"
# Indexes only a hand-written migration creates (PostgreSQL-only kinds the models cannot declare
# portably); autogenerate must not propose dropping them.
HAND_WRITTEN_INDEXES = {"ix_subscriber_search_trgm"}
# PostgreSQL bookkeeping tables of the ledger's balance triggers (migration 0003), no models.
HAND_WRITTEN_TABLES = {"ledger_pending_check", "ledger_check_sentinel"}


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    if type_ == "table" and name in HAND_WRITTEN_TABLES:
        return False
    return not (type_ == "index" and name in HAND_WRITTEN_INDEXES)


def alembic_config(connection=None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(app: Flask, revision: str = "head") -> None:
    with app.app_context():
        with db.engine.begin() as connection:
            command.upgrade(alembic_config(connection), revision)
        sync_permissions(app)


def sync_permissions(app: Flask) -> None:
    """Create every view's permissions and the roles (idempotent; one writer at deploy time)."""
    appbuilder = app.appbuilder
    appbuilder.sm.sync_roles()
    appbuilder.add_permissions(update_perms=True)
    db.session.commit()


def revision(app: Flask, message: str, rev_id: str | None = None) -> None:
    with app.app_context():
        with db.engine.begin() as connection:
            command.revision(
                alembic_config(connection), message=message, autogenerate=True, rev_id=rev_id
            )
