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
# FKs of the hot billing tables that PostgreSQL checks with statement-level triggers instead
# (migration 0004), by PostgreSQL's name for them. The models keep the ForeignKeys (ORM
# relationships, SQLite DDL). On SQLite the FKs exist on both sides, so the filter never sees
# them there.
TRIGGER_CHECKED_FKS = {
    *(f"{table}_tenant_id_fkey" for table in (
        "invoice", "invoice_line", "invoice_line_tax", "billed_period", "journal_entry",
        "ledger_leg")),
    "ledger_leg_account_id_fkey", "ledger_leg_tax_rate_id_fkey", "ledger_leg_entry_id_fkey",
    "invoice_line_income_account_id_fkey", "invoice_line_item_id_fkey",
    "invoice_line_tax_tax_rate_id_fkey",
}


def _fk_name(fk) -> str:
    """A model FK is unnamed: the name PostgreSQL gives it (table_column_fkey)."""
    return f"{fk.table.name}_{'_'.join(fk.column_keys)}_fkey"


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    if type_ == "table" and name in HAND_WRITTEN_TABLES:
        return False
    if type_ == "foreign_key_constraint" and (name or _fk_name(obj)) in TRIGGER_CHECKED_FKS:
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
