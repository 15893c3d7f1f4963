"""References of the hot billing tables to tenant, account, tax rate, item and journal entry.

On PostgreSQL they are checked once per statement by the triggers of migration 0004 (no FK row
triggers): a missing parent is refused, a referenced parent cannot be deleted, also when the
delete races an insert. On both databases the catalog's delete guards say why in words.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa
from headend.billing.models import Invoice, InvoiceLine, InvoiceLineTax
from headend.catalog import services as catalog
from headend.catalog.models import Account, Item, TaxRate
from headend.db import db
from headend.errors import ValidationFailed
from headend.ledger.models import JournalEntry, Leg
from headend.ledger.services import LegSpec, post_entry
from headend.subscribers.models import Subscriber
from headend.tenancy.models import Tenant
from sqlalchemy import func, select

from tests.ledger_helpers import JAN, subscriber

pg_only = pytest.mark.postgresql_only
MISSING = 987654321
WAIT = 10  # seconds: the longest any test waits for another connection


# --- rows ----------------------------------------------------------------------------------

def _catalog(session) -> dict[str, int]:
    """Committed rows of the acting tenant: the parents the tests reference or delete."""
    account = Account(code="4800", name="Test income", type="income")
    spare = Account(code="4810", name="Unused income", type="income")
    rate = TaxRate(label="State", kind="percent", rate=Decimal("6.25"))
    spare_rate = TaxRate(label="Unused", kind="percent", rate=Decimal("1"))
    item = Item(code="RTR", name="Router", type="equipment", price=Decimal("5"))
    spare_item = Item(code="UNUSED", name="Unused", type="fee", price=Decimal("1"))
    session.add_all([account, spare, rate, spare_rate, item, spare_item])
    session.flush()
    ids = dict(tenant=session.info["tenant"], subscriber=subscriber(session), account=account.id,
               spare_account=spare.id, rate=rate.id, spare_rate=spare_rate.id, item=item.id,
               spare_item=spare_item.id, ar=session.scalar(
                   select(Account.id).where(Account.code == catalog.ACCOUNTS_RECEIVABLE)))
    session.commit()
    return ids


def _invoice(conn, ids, **over) -> int:
    values = dict(tenant_id=ids["tenant"], subscriber_id=ids["subscriber"], invoice_date=JAN,
                  due_date=JAN, currency="USD") | over
    return conn.execute(sa.insert(Invoice.__table__).values(values)
                        .returning(Invoice.__table__.c.id)).scalar_one()


def _line(ids, invoice: int, **over) -> dict:
    return dict(tenant_id=ids["tenant"], invoice_id=invoice, description="Router rental",
                income_account_id=ids["account"], item_id=ids["item"], amount=500) | over


def _line_id(conn, ids, invoice: int, **over) -> int:
    return conn.execute(sa.insert(InvoiceLine.__table__).values(_line(ids, invoice, **over))
                        .returning(InvoiceLine.__table__.c.id)).scalar_one()


def _tax(ids, line: int, **over) -> dict:
    return dict(tenant_id=ids["tenant"], line_id=line, tax_rate_id=ids["rate"],
                jurisdiction="State", rate=Decimal("6.25"), amount=31) | over


def _entry(conn, ids, key: str, **over) -> int:
    values = dict(tenant_id=ids["tenant"], entry_date=JAN, posted_at=sa.func.now(),
                  source_type="raw", source_id=1, description="raw SQL", key=key,
                  closed_books_override=False) | over
    return conn.execute(sa.insert(JournalEntry.__table__).values(values)
                        .returning(JournalEntry.__table__.c.id)).scalar_one()


def _legs(ids, entry: int, amount: int = 100, **over) -> list[dict]:
    """A balanced pair: AR debit, income credit (with `over` on the credit)."""
    base = dict(tenant_id=ids["tenant"], entry_id=entry, tax_rate_id=None)
    return [base | dict(account_id=ids["ar"], debit=amount, credit=0),
            base | dict(account_id=ids["account"], debit=0, credit=amount) | over]


def _count(model) -> int:
    with db.engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(model.__table__))


# --- inserts and updates naming a missing parent --------------------------------------------

BAD_INSERTS = {
    "leg account": ("ledger_leg", "account_id", dict(account_id=MISSING)),
    "leg tax rate": ("ledger_leg", "tax_rate_id", dict(tax_rate_id=MISSING)),
    "leg tenant": ("ledger_leg", "tenant_id", dict(tenant_id=MISSING)),
    "line account": ("invoice_line", "income_account_id", dict(income_account_id=MISSING)),
    "line item": ("invoice_line", "item_id", dict(item_id=MISSING)),
    "line tenant": ("invoice_line", "tenant_id", dict(tenant_id=MISSING)),
    "line tax rate": ("invoice_line_tax", "tax_rate_id", dict(tax_rate_id=MISSING)),
    "line tax tenant": ("invoice_line_tax", "tenant_id", dict(tenant_id=MISSING)),
    "invoice tenant": ("invoice", "tenant_id", dict(tenant_id=MISSING)),
    "entry tenant": ("journal_entry", "tenant_id", dict(tenant_id=MISSING)),
}
MODELS = {"ledger_leg": Leg, "invoice_line": InvoiceLine, "invoice_line_tax": InvoiceLineTax,
          "invoice": Invoice, "journal_entry": JournalEntry}


@pg_only
@pytest.mark.parametrize("case", list(BAD_INSERTS))
def test_multi_row_insert_naming_a_missing_parent_is_refused(books, case):
    table, column, bad = BAD_INSERTS[case]
    ids = _catalog(books)
    with db.engine.connect() as conn:
        invoice = _invoice(conn, ids)
        line = _line_id(conn, ids, invoice)
        entry = _entry(conn, ids, "refs")
        good = {"ledger_leg": _legs(ids, entry)[1], "invoice_line": _line(ids, invoice),
                "invoice_line_tax": _tax(ids, line),
                "invoice": dict(tenant_id=ids["tenant"], subscriber_id=ids["subscriber"],
                                invoice_date=JAN, due_date=JAN, currency="USD"),
                "journal_entry": dict(tenant_id=ids["tenant"], entry_date=JAN, source_type="raw",
                                      source_id=2, description="raw", key="refs-2",
                                      closed_books_override=False)}[table]
        rows = [good, good | bad | ({"key": "refs-3"} if table == "journal_entry" else {})]
        with pytest.raises(sa.exc.IntegrityError, match=fr"{table}\.{column} = {MISSING} is not "):
            conn.execute(sa.insert(MODELS[table].__table__).values(rows))
        conn.rollback()
    assert _count(MODELS[table]) == 0 and _count(Invoice) == 0


@pg_only
def test_valid_multi_row_inserts_pass(books):
    ids = _catalog(books)
    with db.engine.connect() as conn:
        invoice = _invoice(conn, ids)
        conn.execute(sa.insert(InvoiceLine.__table__).values([
            _line(ids, invoice), _line(ids, invoice, income_account_id=ids["spare_account"]),
            _line(ids, invoice, item_id=None), _line(ids, invoice, item_id=ids["spare_item"])]))
        line = conn.scalar(select(func.min(InvoiceLine.__table__.c.id)))
        conn.execute(sa.insert(InvoiceLineTax.__table__).values([
            _tax(ids, line), _tax(ids, line, tax_rate_id=None),
            _tax(ids, line, tax_rate_id=ids["spare_rate"])]))
        entries = [_entry(conn, ids, f"ok-{n}") for n in range(3)]
        conn.execute(sa.insert(Leg.__table__).values(
            [leg for entry in entries for leg in _legs(ids, entry, tax_rate_id=ids["rate"])]))
        conn.commit()
    assert (_count(InvoiceLine), _count(InvoiceLineTax), _count(Leg)) == (4, 3, 6)


@pg_only
def test_updating_a_reference_to_a_missing_parent_is_refused(books):
    ids = _catalog(books)
    with db.engine.connect() as conn:
        line = _line_id(conn, ids, _invoice(conn, ids))
        conn.commit()
        lines = InvoiceLine.__table__
        with pytest.raises(sa.exc.IntegrityError, match="income_account_id = 987654321"):
            conn.execute(lines.update().values(income_account_id=MISSING))
        conn.rollback()
        # Changing other columns, or pointing at a parent that exists, is fine.
        conn.execute(lines.update().values(description="Edited"))
        conn.execute(lines.update().values(income_account_id=ids["spare_account"]))
        conn.commit()
        assert conn.execute(select(lines.c.income_account_id, lines.c.description)
                            .where(lines.c.id == line)).one() == (ids["spare_account"], "Edited")


@pg_only
def test_a_leg_whose_entry_does_not_exist_is_refused_at_commit(books):
    ids = _catalog(books)
    with db.engine.connect() as conn:
        conn.execute(sa.insert(Leg.__table__).values(_legs(ids, MISSING)))  # balanced
        with pytest.raises(sa.exc.IntegrityError, match=f"journal entry {MISSING} does not exist"):
            conn.commit()
    assert _count(Leg) == 0


# --- deleting a referenced parent ------------------------------------------------------------

@pytest.fixture
def referenced(books):
    """Ids of the catalog, with one posted entry (legs on `account` with tax rate `rate`) and
    one invoice line of `item` (on the AR account, untaxed); the spares unreferenced."""
    ids = _catalog(books)
    with db.engine.connect() as conn:
        _line_id(conn, ids, _invoice(conn, ids), income_account_id=ids["ar"])
        entry = _entry(conn, ids, "posted")
        conn.execute(sa.insert(Leg.__table__).values(_legs(ids, entry, tax_rate_id=ids["rate"])))
        conn.commit()
    return ids


def _delete(table: str, row_id: int) -> None:
    with db.engine.connect() as conn:
        conn.execute(sa.text(f"DELETE FROM {table} WHERE id = :id"), {"id": row_id})
        conn.commit()


@pg_only
@pytest.mark.parametrize(("table", "key", "child"), [
    ("account", "account", "ledger_leg.account_id"),
    ("tax_rate", "rate", "ledger_leg.tax_rate_id"),
    ("item", "item", "invoice_line.item_id"),
])
def test_deleting_a_referenced_parent_is_refused(referenced, table, key, child):
    with pytest.raises(sa.exc.IntegrityError, match=fr"still referenced from {child}"):
        _delete(table, referenced[key])


@pg_only
def test_deleting_an_account_or_rate_only_a_line_uses_is_refused(books):
    ids = _catalog(books)
    with db.engine.connect() as conn:
        line = _line_id(conn, ids, _invoice(conn, ids), income_account_id=ids["spare_account"])
        conn.execute(sa.insert(InvoiceLineTax.__table__).values(
            _tax(ids, line, tax_rate_id=ids["spare_rate"])))
        conn.commit()
    with pytest.raises(sa.exc.IntegrityError, match=r"invoice_line\.income_account_id"):
        _delete("account", ids["spare_account"])
    with pytest.raises(sa.exc.IntegrityError, match=r"invoice_line_tax\.tax_rate_id"):
        _delete("tax_rate", ids["spare_rate"])


@pg_only
def test_deleting_unreferenced_parents_works(referenced):
    for table, key in (("account", "spare_account"), ("tax_rate", "spare_rate"),
                       ("item", "spare_item")):
        _delete(table, referenced[key])
    with db.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Account.__table__).where(
            Account.__table__.c.id == referenced["spare_account"])) == 0


@pg_only
def test_deleting_a_tenant_with_billing_rows_is_refused(books):
    """Only the trigger stands in the way: the tenant has no catalog of its own."""
    ids = _catalog(books)
    with db.engine.connect() as conn:
        bare = conn.execute(sa.insert(Tenant.__table__).values(
            name="Bare", slug="bare", currency="USD", timezone="UTC", active=True,
            created_at=sa.func.now()).returning(Tenant.__table__.c.id)).scalar_one()
        _invoice(conn, ids, tenant_id=bare)
        conn.commit()
    with pytest.raises(sa.exc.IntegrityError, match=r"still referenced from invoice\.tenant_id"):
        _delete("tenant", bare)
    with db.engine.connect() as conn:
        conn.execute(sa.text("DELETE FROM invoice WHERE tenant_id = :t"), {"t": bare})
        conn.commit()
    _delete("tenant", bare)


@pg_only
def test_a_delete_is_refused_outside_read_committed(referenced):
    with db.engine.connect() as conn:
        conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        with pytest.raises(sa.exc.NotSupportedError, match="needs READ COMMITTED"):
            conn.execute(sa.text("DELETE FROM account WHERE id = :id"),
                         {"id": referenced["spare_account"]})


# --- the service guards (both databases) -----------------------------------------------------

def _orm_rows(session, ids):
    """A posted entry on `account` and an invoice line (account, item), through the ORM."""
    legs = [LegSpec(account_id=ids["ar"], debit=106, subscriber_id=ids["subscriber"]),
            LegSpec(account_id=ids["account"], credit=100),
            LegSpec(account_id=ids["account"], credit=6, tax_rate_id=ids["rate"],
                    jurisdiction="State")]
    post_entry(session, key="guarded", entry_date=JAN, source_type="raw", source_id=1,
               description="Guarded", legs=legs)
    invoice = Invoice(subscriber_id=ids["subscriber"], invoice_date=JAN, due_date=JAN,
                      currency="USD")
    invoice.lines.append(InvoiceLine(description="Router", income_account_id=ids["spare_account"],
                                     item_id=ids["item"]))
    session.add(invoice)
    session.flush()


@pytest.mark.parametrize(("model", "key", "guard", "message"), [
    (Account, "account", catalog.guard_account_delete, "account 4800 is used by 2 ledger leg(s)"),
    (Account, "spare_account", catalog.guard_account_delete,
     "account 4810 is used by 1 invoice line(s)"),
    (Item, "item", catalog.guard_item_delete, "item 'RTR' is used by 1 invoice line(s)"),
    (TaxRate, "rate", catalog.guard_tax_rate_delete,
     "tax rate 'State' is used by 1 ledger leg(s)"),
])
def test_service_guards_refuse_a_parent_postings_use(books, model, key, guard, message):
    ids = _catalog(books)
    _orm_rows(books, ids)
    with pytest.raises(ValidationFailed) as refused:
        guard(books, books.get(model, ids[key]))
    field = {Item: "item", TaxRate: "tax_rate"}.get(model, "account")
    assert refused.value.errors == {field: [f"{message}; deactivate it instead"]}


def test_a_tax_rate_subscribers_carry_is_kept(books):
    ids = _catalog(books)
    spare_rate = books.get(TaxRate, ids["spare_rate"])
    owner = books.get(Subscriber, ids["subscriber"])
    owner.tax_rates.append(spare_rate)
    books.flush()
    with pytest.raises(ValidationFailed) as refused:
        catalog.guard_tax_rate_delete(books, spare_rate)
    assert refused.value.errors == {
        "tax_rate": ["tax rate 'Unused' is used by 1 subscriber(s); deactivate it instead"]}


def test_service_guards_pass_unreferenced_parents(books):
    ids = _catalog(books)
    _orm_rows(books, ids)
    catalog.guard_item_delete(books, books.get(Item, ids["spare_item"]))
    catalog.guard_tax_rate_delete(books, books.get(TaxRate, ids["spare_rate"]))
    spare = Account(code="4820", name="Spare", type="income")
    books.add(spare)
    books.flush()
    catalog.guard_account_delete(books, spare)
    books.delete(spare)
    books.commit()


# --- concurrency -----------------------------------------------------------------------------

def _waiting_on_lock(pid: int) -> bool:
    """Whether backend `pid` is blocked on a lock, polled for up to WAIT seconds."""
    deadline = time.monotonic() + WAIT
    with db.engine.connect() as watcher:
        while time.monotonic() < deadline:
            if watcher.scalar(sa.text("SELECT wait_event_type = 'Lock' FROM pg_stat_activity "
                                      "WHERE pid = :pid"), {"pid": pid}):
                return True
            watcher.rollback()
            time.sleep(0.05)
    return False


def _in_thread(conn, statement: str, params: dict) -> tuple[threading.Thread, list]:
    """Run `statement` on `conn` (bounded by lock_timeout) and commit, in a thread; the list
    gets "ok" or the exception."""
    outcome: list = []

    def run():
        try:
            conn.execute(sa.text(f"SET LOCAL lock_timeout = '{WAIT}s'"))
            conn.execute(sa.text(statement), params)
            conn.commit()
            outcome.append("ok")
        except Exception as exc:  # checked by the test, in its own thread
            conn.rollback()
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pg_only
def test_a_delete_waits_for_an_insert_holding_the_parent_and_is_then_refused(books):
    ids = _catalog(books)
    with db.engine.connect() as a, db.engine.connect() as b:
        entry = _entry(a, ids, "racing")
        legs = _legs(ids, entry, account_id=ids["spare_account"])
        a.execute(sa.insert(Leg.__table__).values(legs))
        pid = b.scalar(sa.text("SELECT pg_backend_pid()"))
        b.commit()
        thread, outcome = _in_thread(b, "DELETE FROM account WHERE id = :id",
                                     {"id": ids["spare_account"]})
        assert _waiting_on_lock(pid), "the delete did not wait for the inserting transaction"
        a.commit()
        thread.join(WAIT)
        assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], sa.exc.IntegrityError), outcome
    assert "still referenced from ledger_leg.account_id" in str(outcome[0])
    assert _count(Leg) == 2


@pg_only
def test_an_insert_waits_for_a_delete_of_its_parent_and_is_then_refused(books):
    ids = _catalog(books)
    with db.engine.connect() as a, db.engine.connect() as b:
        a.execute(sa.text("DELETE FROM account WHERE id = :id"), {"id": ids["spare_account"]})
        entry = _entry(b, ids, "late")
        pid = b.scalar(sa.text("SELECT pg_backend_pid()"))
        thread, outcome = _in_thread(
            b, "INSERT INTO ledger_leg (tenant_id, entry_id, account_id, debit, credit) "
               "VALUES (:t, :e, :a, 100, 0), (:t, :e, :ar, 0, 100)",
            {"t": ids["tenant"], "e": entry, "a": ids["spare_account"], "ar": ids["ar"]})
        assert _waiting_on_lock(pid), "the insert did not wait for the deleting transaction"
        a.commit()
        thread.join(WAIT)
        assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], sa.exc.IntegrityError), outcome
    assert f"ledger_leg.account_id = {ids['spare_account']} is not present" in str(outcome[0])
    assert _count(Leg) == 0 and _count(JournalEntry) == 0
