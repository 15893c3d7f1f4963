"""PostgreSQL itself refuses unbalanced entries and changes to posted rows, even from raw SQL
that bypasses the posting service; concurrent postings of one key give one entry."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from headend.catalog.models import Account
from headend.db import db
from headend.ledger import services as ledger
from headend.ledger.models import JournalEntry, Leg
from headend.ledger.services import LegSpec
from headend.tenancy.context import acting_as
from sqlalchemy import func, select

from tests.ledger_helpers import JAN, invoice, subscriber

pytestmark = pytest.mark.postgresql_only


def _raw_entry(conn, tenant: int, key: str) -> int:
    return conn.execute(sa.insert(JournalEntry.__table__).values(
        tenant_id=tenant, entry_date=JAN, posted_at=sa.func.now(), source_type="raw",
        source_id=1, description="raw SQL", key=key, closed_books_override=False,
    ).returning(JournalEntry.__table__.c.id)).scalar_one()


def _raw_leg(conn, tenant: int, entry: int, account: int, debit=0, credit=0):
    conn.execute(sa.insert(Leg.__table__).values(
        tenant_id=tenant, entry_id=entry, account_id=account, debit=debit, credit=credit))


def _accounts(session) -> dict[str, int]:
    return dict(session.execute(select(Account.code, Account.id)).all())


def _entries() -> int:
    with db.engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(JournalEntry.__table__))


def test_raw_unbalanced_entry_fails_at_commit(books):
    tenant, accounts = books.info["tenant"], _accounts(books)
    books.commit()
    with db.engine.connect() as conn:
        entry = _raw_entry(conn, tenant, "raw-unbalanced")
        _raw_leg(conn, tenant, entry, accounts["1000"], debit=100)
        _raw_leg(conn, tenant, entry, accounts["4000"], credit=99)
        with pytest.raises(sa.exc.IntegrityError, match="unbalanced"):
            conn.commit()
    assert _entries() == 0


def test_raw_entry_without_legs_fails_at_commit(books):
    tenant = books.info["tenant"]
    books.commit()
    with db.engine.connect() as conn:
        _raw_entry(conn, tenant, "raw-empty")
        with pytest.raises(sa.exc.IntegrityError, match="has no legs"):
            conn.commit()
    assert _entries() == 0


def test_raw_balanced_entry_commits(books):
    tenant, accounts = books.info["tenant"], _accounts(books)
    books.commit()
    with db.engine.connect() as conn:
        entry = _raw_entry(conn, tenant, "raw-ok")
        _raw_leg(conn, tenant, entry, accounts["1000"], debit=100)
        _raw_leg(conn, tenant, entry, accounts["4000"], credit=60)
        _raw_leg(conn, tenant, entry, accounts["2200"], credit=40)
        conn.commit()
    assert _entries() == 1


@pytest.mark.parametrize("statement", [
    "UPDATE ledger_leg SET debit = debit + 1, credit = credit",
    "UPDATE ledger_leg SET memo = 'edited'",
    "DELETE FROM ledger_leg",
    "UPDATE journal_entry SET description = 'edited'",
    "DELETE FROM journal_entry",
])
def test_posted_rows_cannot_be_changed_with_raw_sql(books, statement):
    invoice(books, subscriber(books), 100)
    books.commit()
    with db.engine.connect() as conn:
        with pytest.raises(sa.exc.IntegrityError, match="post a reversing entry"):
            conn.execute(sa.text(statement))
    with db.engine.connect() as conn:
        legs = conn.execute(sa.text("SELECT debit, credit, memo FROM ledger_leg ORDER BY id"))
        assert legs.all() == [(100, 0, None), (0, 100, None)]


def test_concurrent_postings_of_one_key_give_one_entry(app, books):
    tenant, sub = books.info["tenant"], subscriber(books)
    books.commit()
    args = dict(key="invoice-42", entry_date=JAN, source_type="invoice", source_id=42,
                description="Invoice", legs=[LegSpec("1200", debit=500, subscriber_id=sub),
                                             LegSpec("4000", credit=500)])
    first_flushed, results, errors = threading.Event(), {}, []

    def post(name: str, hold: bool):
        try:
            with app.app_context(), acting_as(tenant):
                if not hold:
                    first_flushed.wait(5)
                entry = ledger.post_entry(db.session, **args)
                db.session.flush()
                if hold:  # keep the row uncommitted while the other inserts the same key
                    first_flushed.set()
                    threading.Event().wait(0.5)
                results[name] = entry.id
                db.session.commit()
                db.session.remove()
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=post, args=("first", True)),
               threading.Thread(target=post, args=("second", False))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors, errors
    assert results["first"] == results["second"]
    assert _entries() == 1 and ledger.subscriber_balance(books, sub) == 500
