"""The database itself refuses an unbalanced journal entry and any change to a posted one.

PostgreSQL only (SQLite relies on the flush-time guards of headend.ledger.guards):
- a DEFERRABLE INITIALLY DEFERRED constraint trigger on ledger_leg checks, at commit, that the
  legs of every entry touched sum to equal debits and credits; one on journal_entry checks that
  a new entry has legs at all;
- BEFORE UPDATE/DELETE triggers refuse changing posted rows: corrections are reversing entries.
TRUNCATE (test wipes, a tenant purge) fires no row triggers. Triggers are invisible to
autogenerate, so the regenerated 0001 never proposes dropping them.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE FUNCTION ledger_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    target integer := CASE WHEN TG_OP = 'DELETE' THEN OLD.entry_id ELSE NEW.entry_id END;
    difference bigint;
BEGIN
    SELECT COALESCE(SUM(debit), 0) - COALESCE(SUM(credit), 0) INTO difference
      FROM ledger_leg WHERE entry_id = target;
    IF difference <> 0 THEN
        RAISE EXCEPTION 'journal entry % is unbalanced (debits - credits = %)', target, difference
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER trg_ledger_leg_balanced
    AFTER INSERT OR UPDATE OR DELETE ON ledger_leg
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_balanced();

CREATE FUNCTION ledger_entry_has_legs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ledger_leg WHERE entry_id = NEW.id) THEN
        RAISE EXCEPTION 'journal entry % has no legs', NEW.id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER trg_journal_entry_has_legs
    AFTER INSERT ON journal_entry
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_has_legs();

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
DROP TRIGGER IF EXISTS trg_journal_entry_has_legs ON journal_entry;
DROP TRIGGER IF EXISTS trg_ledger_leg_balanced ON ledger_leg;
DROP FUNCTION IF EXISTS ledger_refuse_change();
DROP FUNCTION IF EXISTS ledger_entry_has_legs();
DROP FUNCTION IF EXISTS ledger_entry_balanced();
"""


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(UPGRADE)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DOWNGRADE)
