"""The database itself refuses an unbalanced journal entry and any change to a posted one.

PostgreSQL only (SQLite relies on the flush-time guards of headend.ledger.guards):
- at commit, every entry the transaction created or gave legs to must have legs and balance.
  Checked once per transaction, set-based: statement-level AFTER INSERT triggers (transition
  tables) note the entries a statement touched in ledger_pending_check and put one row per
  transaction in ledger_check_sentinel, whose DEFERRABLE INITIALLY DEFERRED constraint trigger
  checks all noted entries with one GROUP BY at commit. (A per-leg deferred trigger ran one SUM
  per leg at commit: 500k queries for a 100k-invoice billing run.) Legs may still arrive in
  separate statements before the commit, as with the per-row trigger;
- BEFORE UPDATE/DELETE triggers refuse changing posted rows: corrections are reversing entries,
  so only INSERTs can change an entry's balance.
The two bookkeeping tables are UNLOGGED (their rows live for one transaction) and left out of
autogenerate (headend.migrate.HAND_WRITTEN_TABLES). TRUNCATE (test wipes, a tenant purge) fires
no row triggers. Triggers are invisible to autogenerate, so the regenerated 0001 never proposes
dropping them.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE UNLOGGED TABLE ledger_pending_check (xact bigint NOT NULL, entry_id integer NOT NULL);
CREATE INDEX ix_ledger_pending_check_xact ON ledger_pending_check (xact);
CREATE UNLOGGED TABLE ledger_check_sentinel (xact bigint PRIMARY KEY);

CREATE FUNCTION ledger_note_new_entries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_pending_check (xact, entry_id)
        SELECT pg_current_xact_id()::text::bigint, id FROM new_rows;
    INSERT INTO ledger_check_sentinel VALUES (pg_current_xact_id()::text::bigint)
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE FUNCTION ledger_note_new_legs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_pending_check (xact, entry_id)
        SELECT DISTINCT pg_current_xact_id()::text::bigint, entry_id FROM new_rows;
    INSERT INTO ledger_check_sentinel VALUES (pg_current_xact_id()::text::bigint)
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE FUNCTION ledger_check_pending() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE TRIGGER trg_journal_entry_noted AFTER INSERT ON journal_entry
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_note_new_entries();
CREATE TRIGGER trg_ledger_leg_noted AFTER INSERT ON ledger_leg
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_note_new_legs();
CREATE CONSTRAINT TRIGGER trg_ledger_entries_balanced
    AFTER INSERT ON ledger_check_sentinel
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_pending();

CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% of posted % rows is refused: post a reversing entry', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER trg_journal_entry_immutable BEFORE UPDATE OR DELETE ON journal_entry
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER trg_ledger_leg_immutable BEFORE UPDATE OR DELETE ON ledger_leg
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
"""

DOWNGRADE = """
DROP TRIGGER IF EXISTS trg_ledger_leg_immutable ON ledger_leg;
DROP TRIGGER IF EXISTS trg_journal_entry_immutable ON journal_entry;
DROP TRIGGER IF EXISTS trg_ledger_leg_noted ON ledger_leg;
DROP TRIGGER IF EXISTS trg_journal_entry_noted ON journal_entry;
DROP TABLE IF EXISTS ledger_check_sentinel;
DROP TABLE IF EXISTS ledger_pending_check;
DROP FUNCTION IF EXISTS ledger_refuse_change();
DROP FUNCTION IF EXISTS ledger_check_pending();
DROP FUNCTION IF EXISTS ledger_note_new_legs();
DROP FUNCTION IF EXISTS ledger_note_new_entries();
"""


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(UPGRADE)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DOWNGRADE)
