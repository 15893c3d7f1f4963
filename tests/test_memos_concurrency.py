"""Concurrent callers: memo numbers stay distinct and account credit is spent once."""

from __future__ import annotations

import datetime as dt
import threading

from headend.billing import memos
from headend.billing.models import Invoice, Memo
from headend.db import db
from headend.tenancy.context import acting_as
from sqlalchemy import func, select

from tests.ledger_helpers import subscriber
from tests.memo_helpers import posted_invoice

JAN = dt.date(2024, 1, 15)


def _race(app, tenant, work, n):
    barrier, errors = threading.Barrier(n), []

    def run(i):
        try:
            with app.app_context(), acting_as(tenant):
                barrier.wait()
                work(db.session, i)
                db.session.commit()
                db.session.remove()
        except Exception as exc:  # reported below, a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck"
    assert errors == []


def test_concurrent_memos_get_distinct_numbers(app, make_tenant):
    t = make_tenant()
    with app.app_context(), acting_as(t):
        sub = subscriber(db.session)
        db.session.commit()
    _race(app, t, lambda s, i: memos.credit_memo(s, sub, 100 + i, "race", JAN), 6)
    with app.app_context(), acting_as(t):
        numbers = sorted(db.session.scalars(select(Memo.number)))
    assert numbers == [f"CM-{n}" for n in range(1, 7)]


def test_account_credit_is_spent_once_by_concurrent_invoices(app, make_tenant):
    t = make_tenant()
    with app.app_context(), acting_as(t):
        sub = subscriber(db.session)
        memos.credit_memo(db.session, sub, 1000, "Credit", JAN)
        invoice_ids = [posted_invoice(db.session, sub, 600).id for _ in range(4)]
        db.session.commit()

    def apply(session, i):
        memos.apply_account_credit(session, session.get(Invoice, invoice_ids[i]))

    _race(app, t, apply, 4)
    with app.app_context(), acting_as(t):
        assert db.session.scalar(select(func.sum(Invoice.amount_paid))) == 1000
        assert db.session.scalar(select(Memo.unapplied)) == 0
        assert memos.account_credit(db.session, sub) == 0
