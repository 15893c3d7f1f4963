"""The hot billing tables check their catalog and tenant references once per statement.

A billing run writes ~14 rows per invoice into invoice, invoice_line, invoice_line_tax,
billed_period, journal_entry and ledger_leg; their row-level foreign-key triggers were ~70 % of
the time of even a bare INSERT .. SELECT, and almost all of those checks go to a handful of
parent rows (tenant, account, tax_rate, item). On PostgreSQL this migration replaces those FKs
with what they do, per statement instead of per row:
- child side: statement-level AFTER INSERT and AFTER UPDATE triggers (transition tables; PG
  allows them on one event per trigger) run check_references(column, parent, ...): the distinct
  non-null values of each column, their parent rows locked FOR KEY SHARE (as the FK's row trigger
  locks them, once per distinct parent instead of once per row), and a foreign_key_violation if
  any is missing. An UPDATE checks only values no old row of the statement had, as the FK skips
  unchanged keys (so paying an invoice does not lock its tenant row);
- parent side: BEFORE DELETE row triggers on tenant, account, tax_rate and item run
  refuse_referenced_delete(child, column, ...). They fire after the deleted row is locked, so
  a concurrent insert holding KEY SHARE on it is waited for and, in READ COMMITTED (the app's
  level), seen by the trigger's next query. Under REPEATABLE READ or SERIALIZABLE a trigger
  cannot see rows committed after its snapshot (the FK uses a cross-check snapshot there), so
  such deletes are refused outright. The TenantView lets an operator delete a tenant, so tenant
  gets the trigger too (six index probes per delete);
- ledger_leg.entry_id: journal entries are never deleted (0003), so the only check needed is
  that a new leg's entry exists; 0003's commit-time ledger_check_pending(), which already
  visits every entry a transaction gave legs to, now also refuses one that does not exist.
  (TRUNCATE journal_entry alone would no longer be refused; test wipes truncate every table.)
Low-cardinality references of other tables and the references to invoice, invoice_line,
subscriber, subscription and journal_entry (but entry_id) stay ordinary FKs. The models keep
every ForeignKey (ORM relationships, SQLite DDL); headend.migrate.TRIGGER_CHECKED_FKS keeps
autogenerate from proposing the dropped ones back.

Both databases: single-column indexes a composite index of the same table already leads with
are dropped (each is a cost per inserted row): the tenant_id index of invoice, journal_entry,
ledger_leg and billed_period (their models set `tenant_id_index = False`), and
ix_invoice_status (ix_invoice_status_due leads with tenant_id, status; every query of invoice
status is tenant-scoped).

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# child table -> (column, parent table) pairs checked by check_references() instead of an FK.
CHECKED = {
    "invoice": [("tenant_id", "tenant")],
    "invoice_line": [("tenant_id", "tenant"), ("income_account_id", "account"),
                     ("item_id", "item")],
    "invoice_line_tax": [("tenant_id", "tenant"), ("tax_rate_id", "tax_rate")],
    "billed_period": [("tenant_id", "tenant")],
    "journal_entry": [("tenant_id", "tenant")],
    "ledger_leg": [("tenant_id", "tenant"), ("account_id", "account"),
                   ("tax_rate_id", "tax_rate")],
}
# Dropped as well; ledger_check_pending() checks it at commit.
ENTRY_FK = ("ledger_leg", "entry_id", "journal_entry")
PARENTS = ("tenant", "account", "tax_rate", "item")
# (index, table, columns) of the covered indexes dropped on both databases.
COVERED_INDEXES = [
    ("ix_invoice_tenant_id", "invoice", ["tenant_id"]),
    ("ix_invoice_status", "invoice", ["status"]),
    ("ix_journal_entry_tenant_id", "journal_entry", ["tenant_id"]),
    ("ix_ledger_leg_tenant_id", "ledger_leg", ["tenant_id"]),
    ("ix_billed_period_tenant_id", "billed_period", ["tenant_id"]),
]

FUNCTIONS = """
CREATE FUNCTION check_references() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    col text;
    parent text;
    wanted_sql text;
    wanted bigint;
    found bigint;
    missing text;
BEGIN
    FOR i IN 0 .. TG_NARGS - 1 BY 2 LOOP
        col := TG_ARGV[i];
        parent := TG_ARGV[i + 1];
        IF TG_OP = 'UPDATE' THEN
            wanted_sql := format('SELECT %1$I FROM new_rows WHERE %1$I IS NOT NULL '
                                 'EXCEPT SELECT %1$I FROM old_rows', col);
        ELSE
            wanted_sql := format('SELECT DISTINCT %1$I FROM new_rows WHERE %1$I IS NOT NULL', col);
        END IF;
        EXECUTE format('WITH wanted (id) AS (%s), '
                       'found AS (SELECT p.id FROM %I p JOIN wanted USING (id) FOR KEY SHARE OF p) '
                       'SELECT (SELECT count(*) FROM wanted), (SELECT count(*) FROM found)',
                       wanted_sql, parent)
            INTO wanted, found;
        IF found < wanted THEN
            EXECUTE format('WITH wanted (id) AS (%s) SELECT min(w.id)::text FROM wanted w '
                           'WHERE NOT EXISTS (SELECT FROM %I p WHERE p.id = w.id)',
                           wanted_sql, parent)
                INTO missing;
            RAISE EXCEPTION '% on table "%" refused: %.% = % is not present in table "%"',
                    TG_OP, TG_TABLE_NAME, TG_TABLE_NAME, col, missing, parent
                USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME, COLUMN = col;
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

CREATE FUNCTION refuse_referenced_delete() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    used boolean;
BEGIN
    IF current_setting('transaction_isolation') NOT IN ('read committed', 'read uncommitted') THEN
        RAISE EXCEPTION 'delete from "%" needs READ COMMITTED: its reference check must see '
                        'rows committed after the transaction began', TG_TABLE_NAME
            USING ERRCODE = 'feature_not_supported';
    END IF;
    FOR i IN 0 .. TG_NARGS - 1 BY 2 LOOP
        EXECUTE format('SELECT EXISTS (SELECT FROM %I WHERE %I = $1)', TG_ARGV[i], TG_ARGV[i + 1])
            INTO used USING OLD.id;
        IF used THEN
            RAISE EXCEPTION 'delete from "%" refused: % % is still referenced from %.%',
                    TG_TABLE_NAME, TG_TABLE_NAME, OLD.id, TG_ARGV[i], TG_ARGV[i + 1]
                USING ERRCODE = 'foreign_key_violation', TABLE = TG_ARGV[i],
                      COLUMN = TG_ARGV[i + 1];
        END IF;
    END LOOP;
    RETURN OLD;
END $$;
"""

# 0003's ledger_check_pending(), plus: every noted entry must exist.
CHECK_PENDING = """
CREATE OR REPLACE FUNCTION ledger_check_pending() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT p.entry_id, count(e.id) AS entries, count(l.id) AS legs,
           COALESCE(SUM(l.debit), 0) - COALESCE(SUM(l.credit), 0) AS difference
      INTO bad
      FROM (SELECT DISTINCT entry_id FROM ledger_pending_check WHERE xact = NEW.xact) p
      LEFT JOIN journal_entry e ON e.id = p.entry_id
      LEFT JOIN ledger_leg l ON l.entry_id = p.entry_id
     GROUP BY p.entry_id
    HAVING count(e.id) = 0 OR count(l.id) = 0
        OR COALESCE(SUM(l.debit), 0) <> COALESCE(SUM(l.credit), 0)
     ORDER BY p.entry_id
     LIMIT 1;
    IF bad.entry_id IS NOT NULL AND bad.entries = 0 THEN
        RAISE EXCEPTION 'journal entry % does not exist (ledger_leg.entry_id)', bad.entry_id
            USING ERRCODE = 'foreign_key_violation';
    ELSIF bad.entry_id IS NOT NULL AND bad.legs = 0 THEN
        RAISE EXCEPTION 'journal entry % has no legs', bad.entry_id
            USING ERRCODE = 'check_violation';
    ELSIF bad.entry_id IS NOT NULL THEN
        RAISE EXCEPTION 'journal entry % is unbalanced (debits - credits = %)',
            bad.entry_id, bad.difference USING ERRCODE = 'check_violation';
    END IF;
    DELETE FROM ledger_pending_check WHERE xact = NEW.xact;
    DELETE FROM ledger_check_sentinel WHERE xact = NEW.xact;
    RETURN NULL;
END $$;
"""

# 0003's version, restored by the downgrade.
CHECK_PENDING_0003 = """
CREATE OR REPLACE FUNCTION ledger_check_pending() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT p.entry_id, count(l.id) AS legs,
           COALESCE(SUM(l.debit), 0) - COALESCE(SUM(l.credit), 0) AS difference
      INTO bad
      FROM (SELECT DISTINCT entry_id FROM ledger_pending_check WHERE xact = NEW.xact) p
      LEFT JOIN ledger_leg l ON l.entry_id = p.entry_id
     GROUP BY p.entry_id
    HAVING count(l.id) = 0 OR COALESCE(SUM(l.debit), 0) <> COALESCE(SUM(l.credit), 0)
     ORDER BY p.entry_id
     LIMIT 1;
    IF bad.entry_id IS NOT NULL AND bad.legs = 0 THEN
        RAISE EXCEPTION 'journal entry % has no legs', bad.entry_id
            USING ERRCODE = 'check_violation';
    ELSIF bad.entry_id IS NOT NULL THEN
        RAISE EXCEPTION 'journal entry % is unbalanced (debits - credits = %)',
            bad.entry_id, bad.difference USING ERRCODE = 'check_violation';
    END IF;
    DELETE FROM ledger_pending_check WHERE xact = NEW.xact;
    DELETE FROM ledger_check_sentinel WHERE xact = NEW.xact;
    RETURN NULL;
END $$;
"""


def _fk_name(table: str, column: str) -> str:
    """PostgreSQL's name for the unnamed FKs 0001 created."""
    return f"{table}_{column}_fkey"


def _dropped_fks() -> list[tuple[str, str, str]]:
    """(table, column, parent) of every FK this migration replaces."""
    return [(t, c, p) for t, pairs in CHECKED.items() for c, p in pairs] + [ENTRY_FK]


def _args(pairs) -> str:
    return ", ".join(f"'{name}'" for pair in pairs for name in pair)


def _upgrade_postgresql() -> None:
    op.execute(FUNCTIONS)
    for table, column, _ in _dropped_fks():
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {_fk_name(table, column)}")
    for table, pairs in CHECKED.items():
        for event, old in (("INSERT", ""), ("UPDATE", "OLD TABLE AS old_rows ")):
            op.execute(
                f"CREATE TRIGGER trg_{table}_refs_{event.lower()} AFTER {event} ON {table} "
                f"REFERENCING {old}NEW TABLE AS new_rows FOR EACH STATEMENT "
                f"EXECUTE FUNCTION check_references({_args(pairs)})")
    for parent in PARENTS:
        children = [(t, c) for t, pairs in CHECKED.items() for c, p in pairs if p == parent]
        op.execute(
            f"CREATE TRIGGER trg_{parent}_delete_refs BEFORE DELETE ON {parent} "
            f"FOR EACH ROW EXECUTE FUNCTION refuse_referenced_delete({_args(children)})")
    op.execute(CHECK_PENDING)


def _downgrade_postgresql() -> None:
    op.execute(CHECK_PENDING_0003)
    for parent in PARENTS:
        op.execute(f"DROP TRIGGER IF EXISTS trg_{parent}_delete_refs ON {parent}")
    for table in CHECKED:
        for event in ("insert", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_refs_{event} ON {table}")
    for table, column, parent in _dropped_fks():
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {_fk_name(table, column)} "
                   f"FOREIGN KEY ({column}) REFERENCES {parent} (id) ON DELETE RESTRICT")
    op.execute("DROP FUNCTION IF EXISTS refuse_referenced_delete()")
    op.execute("DROP FUNCTION IF EXISTS check_references()")


def upgrade():
    for name, table, _ in COVERED_INDEXES:
        op.drop_index(name, table_name=table)
    if op.get_bind().dialect.name == "postgresql":
        _upgrade_postgresql()


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        _downgrade_postgresql()
    for name, table, columns in COVERED_INDEXES:
        op.create_index(name, table, columns, unique=False)
