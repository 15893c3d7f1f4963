"""Posting, idempotency, reversal, balances, history, trial balance and closed books."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from headend.audit.models import AuditLog
from headend.errors import ValidationFailed
from headend.ledger import services as ledger
from headend.ledger.guards import LedgerGuardError
from headend.ledger.models import JournalEntry, Leg
from headend.ledger.services import LegSpec
from sqlalchemy import func, select

from tests.ledger_helpers import JAN, invoice, payment, subscriber


def _count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_balanced_entry_is_posted_with_its_legs(books):
    sub = subscriber(books)
    entry = invoice(books, sub, 4999, tax=312)
    books.commit()
    legs = books.scalars(select(Leg).where(Leg.entry_id == entry.id).order_by(Leg.id)).all()
    assert [(leg.account.code, leg.debit, leg.credit) for leg in legs] == [
        ("1200", 5311, 0), ("4000", 0, 4999), ("2200", 0, 312)]
    assert legs[0].subscriber_id == sub and legs[2].jurisdiction == "State"
    assert entry.tenant_id == books.info["tenant"] and entry.posted_at is not None


def test_same_key_posts_once(books):
    sub = subscriber(books)
    first = invoice(books, sub, 1000, key="invoice-7")
    again = invoice(books, sub, 1000, key="invoice-7")
    books.commit()
    assert again.id == first.id
    assert _count(books, JournalEntry) == 1 and _count(books, Leg) == 2
    assert ledger.subscriber_balance(books, sub) == 1000


@pytest.mark.parametrize("legs, message", [
    ([LegSpec("1200", debit=100, subscriber_id=None), LegSpec("4000", credit=100)],
     "receivable needs its subscriber"),
    ([LegSpec("1000", debit=100), LegSpec("4000", credit=99)], "unbalanced"),
    ([], "at least one debit and one credit"),
    ([LegSpec("1000", debit=100, credit=100), LegSpec("4000", credit=0)], "either a debit"),
    ([LegSpec("1000", debit=-5), LegSpec("4000", credit=-5)], "cannot be negative"),
    ([LegSpec("9999", debit=5), LegSpec("4000", credit=5)], "account 9999 does not exist"),
])
def test_bad_entries_are_refused_and_nothing_written(books, legs, message):
    with pytest.raises(ValidationFailed) as exc:
        ledger.post_entry(books, key="bad", entry_date=JAN, source_type="invoice", source_id=1,
                          description="Bad", legs=legs)
    assert message in " ".join(exc.value.errors["legs"])
    books.commit()
    assert _count(books, JournalEntry) == 0 and _count(books, Leg) == 0


def test_amounts_must_be_int_minor_units():
    for bad in (1.5, Decimal("1.50"), True, "100"):
        with pytest.raises(TypeError):
            LegSpec("1000", debit=bad)
    with pytest.raises(TypeError):
        LegSpec(debit=1)  # neither a code nor an id


def test_account_by_id_and_another_tenants_subscriber_is_refused(app, books, make_tenant):
    from headend.catalog.models import Account
    from headend.db import db
    from headend.tenancy.context import acting_as

    income = books.scalar(select(Account).where(Account.code == "4300"))
    sub = subscriber(books)
    entry = ledger.post_entry(books, key="k", entry_date=JAN, source_type="invoice",
                              source_id=1, description="Modem",
                              legs=[LegSpec("1200", debit=7, subscriber_id=sub),
                                    LegSpec(account_id=income.id, credit=7)])
    assert entry.legs[1].account_id == income.id
    books.commit()
    other = make_tenant("Other ISP")
    with app.app_context(), acting_as(other):
        with pytest.raises(ValidationFailed) as exc:
            ledger.post_entry(db.session, key="k", entry_date=JAN, source_type="invoice",
                              source_id=1, description="Steal",
                              legs=[LegSpec("1200", debit=7, subscriber_id=sub),
                                    LegSpec(account_id=income.id, credit=7)])
        text = " ".join(exc.value.errors["legs"])
        assert f"subscriber {sub} does not exist" in text
        assert f"account {income.id} does not exist" in text
        db.session.rollback()


def test_flush_guard_refuses_changing_or_deleting_posted_rows(books):
    entry = invoice(books, subscriber(books), 100)
    books.commit()
    entry.legs[0].debit = 50
    with pytest.raises(LedgerGuardError, match="immutable"):
        books.flush()
    books.rollback()
    books.delete(entry.legs[1])
    with pytest.raises(LedgerGuardError, match="cannot be deleted"):
        books.flush()
    books.rollback()
    entry.description = "changed"
    with pytest.raises(LedgerGuardError):
        books.flush()
    books.rollback()
    entry.legs.append(Leg(account_id=entry.legs[1].account_id, debit=0, credit=1))
    with pytest.raises(LedgerGuardError, match="new journal entry"):
        books.flush()
    books.rollback()


def test_flush_guard_refuses_an_unbalanced_entry_written_with_the_orm(books):
    entry = invoice(books, subscriber(books), 100)
    books.add(JournalEntry(key="orm", entry_date=JAN, source_type="x", source_id=1,
                           description="x",
                           legs=[Leg(account_id=entry.legs[1].account_id, debit=5, credit=0)]))
    with pytest.raises(LedgerGuardError, match="unbalanced"):
        books.flush()
    books.rollback()
    books.add(JournalEntry(key="empty", entry_date=JAN, source_type="x", source_id=1,
                           description="x"))
    with pytest.raises(LedgerGuardError, match="empty"):
        books.flush()
    books.rollback()


def test_reversal_mirrors_the_entry_once(books):
    sub = subscriber(books)
    entry = invoice(books, sub, 2500, tax=150)
    void = ledger.reverse_entry(books, entry, key="void-1", entry_date=JAN + dt.timedelta(3),
                                description="Void invoice")
    books.commit()
    assert void.reverses_id == entry.id and void.source_type == "invoice"
    assert [(leg.account_id, leg.debit, leg.credit, leg.subscriber_id) for leg in void.legs] == [
        (leg.account_id, leg.credit, leg.debit, leg.subscriber_id) for leg in entry.legs]
    assert ledger.subscriber_balance(books, sub) == 0
    assert ledger.reverse_entry(books, entry, key="void-1", entry_date=JAN,
                                description="again").id == void.id
    with pytest.raises(ValidationFailed) as exc:
        ledger.reverse_entry(books, entry, key="void-2", entry_date=JAN, description="twice")
    assert "already reversed" in exc.value.errors["entry"][0]


def test_balance_and_history_with_running_balance(books):
    sub, other = subscriber(books), subscriber(books)
    invoice(books, sub, 5000, day=dt.date(2024, 1, 1))
    invoice(books, other, 999, day=dt.date(2024, 1, 2))
    payment(books, sub, 3000, day=dt.date(2024, 1, 10))
    late = invoice(books, sub, 500, day=dt.date(2024, 1, 5))  # posted later, dated earlier
    books.commit()
    assert ledger.subscriber_balance(books, sub) == 2500
    assert ledger.subscriber_balance(books, other) == 999
    rows = ledger.account_history(books, sub)
    assert [(r.entry_date.day, r.source_type, r.debit, r.credit, r.balance) for r in rows] == [
        (1, "invoice", 5000, 0, 5000), (5, "invoice", 500, 0, 5500),
        (10, "payment", 0, 3000, 2500)]
    assert rows[1].entry_id == late.id and rows[1].description == "Invoice"
    assert ledger.subscriber_balance(books, 10**9) == 0
    assert ledger.account_history(books, 10**9) == []


def test_trial_balance_opening_period_and_closing(books):
    sub = subscriber(books)
    invoice(books, sub, 1000, tax=60, day=dt.date(2023, 12, 20))
    invoice(books, sub, 2000, tax=120, day=dt.date(2024, 1, 10))
    payment(books, sub, 1060, day=dt.date(2024, 1, 31))
    invoice(books, sub, 7, day=dt.date(2024, 2, 1))  # after the period: not counted
    books.commit()
    rows = {r.code: r for r in ledger.trial_balance(books, dt.date(2024, 1, 1),
                                                    dt.date(2024, 1, 31))}
    ar = rows["1200"]
    assert (ar.opening, ar.debits, ar.credits, ar.closing) == (1060, 2120, 1060, 2120)
    assert (rows["4000"].opening, rows["4000"].credits, rows["4000"].closing) == (
        -1000, 2000, -3000)
    assert rows["1000"].closing == 1060 and rows["2200"].closing == -180
    total = ledger.trial_balance_totals(list(rows.values()))
    assert total.opening == 0 and total.debits == total.credits == 3180 and total.closing == 0
    with pytest.raises(ValidationFailed) as exc:
        ledger.trial_balance(books, dt.date(2024, 2, 1), dt.date(2024, 1, 1))
    assert "end" in exc.value.errors


def test_closed_books_block_refuses_and_writes_nothing(books):
    sub = subscriber(books)
    ledger.set_closing_date(books, dt.date(2024, 1, 31), "block")
    books.commit()
    with pytest.raises(ValidationFailed) as exc:
        invoice(books, sub, 100, day=dt.date(2024, 1, 31))
    assert "closing date 2024-01-31" in exc.value.errors["entry_date"][0]
    with pytest.raises(ValidationFailed):
        ledger.check_books_open(books, dt.date(2023, 5, 1))
    books.commit()
    assert _count(books, JournalEntry) == 0
    invoice(books, sub, 100, day=dt.date(2024, 2, 1))  # the day after is open
    ledger.check_books_open(books, dt.date(2024, 2, 1))
    books.commit()
    assert _count(books, JournalEntry) == 1


def test_closed_books_warn_posts_and_records_the_warning(books):
    sub = subscriber(books)
    ledger.set_closing_date(books, dt.date(2024, 1, 31), "warn")
    entry = invoice(books, sub, 100, day=dt.date(2024, 1, 15))
    ledger.check_books_open(books, dt.date(2024, 1, 20))
    books.commit()
    assert entry.closed_books_override is True
    warnings = books.scalars(select(AuditLog).where(AuditLog.action == "warn")
                             .order_by(AuditLog.id)).all()
    assert [(w.entity, w.entity_id) for w in warnings] == [
        ("journal_entry", str(entry.id)), ("closed_books", "2024-01-20")]
    assert warnings[0].after["closing_date"] == "2024-01-31"
    assert warnings[0].tenant_id == books.info["tenant"]
    assert not invoice(books, sub, 5, day=dt.date(2024, 2, 1)).closed_books_override


def test_closing_settings_are_validated(books):
    with pytest.raises(ValidationFailed) as exc:
        ledger.set_closing_date(books, "2024-01-01", "sometimes")
    assert set(exc.value.errors) == {"closing_date", "closing_mode"}
    ledger.set_closing_date(books, dt.date(2024, 1, 31), "warn")
    settings = ledger.set_closing_date(books, None, "block")  # reopened
    books.commit()
    assert settings.closing_date is None and ledger.ledger_settings(books).id == settings.id


def test_entries_are_tenant_isolated(app, books, make_tenant):
    from headend.db import db
    from headend.tenancy.context import acting_as

    sub = subscriber(books)
    invoice(books, sub, 100, key="shared-key")
    books.commit()
    other = make_tenant("Elsewhere")
    with app.app_context(), acting_as(other):
        session = db.session
        assert _count(session, JournalEntry) == 0 and _count(session, Leg) == 0
        assert ledger.subscriber_balance(session, sub) == 0
        assert ledger.account_history(session, sub) == []
        assert ledger.trial_balance(session, dt.date(2024, 1, 1), dt.date(2024, 12, 31)) == []
        mine = invoice(session, subscriber(session), 300, key="shared-key")  # same key: own
        session.commit()
        assert mine.legs[0].debit == 300
    assert ledger.subscriber_balance(books, sub) == 100
