"""Property: any sequence of invoices, credit and debit memos and voids keeps every entry
balanced, all legs summing to zero, and each subscriber's balance equal to invoices - credits +
debits, which is also what its invoices still show due, less its account credit, plus debits."""

from __future__ import annotations

from headend.billing import memos
from headend.billing.models import Invoice, Memo
from headend.errors import ValidationFailed
from headend.ledger import services as ledger
from headend.ledger.models import Leg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.ledger_helpers import JAN, subscriber
from tests.memo_helpers import posted_invoice

amounts = st.integers(min_value=1, max_value=10**7)
operations = st.lists(st.one_of(
    st.tuples(st.just("invoice"), st.integers(0, 1), amounts, st.none()),
    st.tuples(st.just("credit"), st.integers(0, 1), amounts, st.none() | st.integers(0, 20)),
    st.tuples(st.just("debit"), st.integers(0, 1), amounts, st.none()),
    st.tuples(st.just("void"), st.integers(0, 1), st.just(0), st.integers(0, 20)),
), max_size=20)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_any_memo_sequence_keeps_the_books_and_balances_right(books, ops):
    subs = [subscriber(books) for _ in range(2)]
    invoices: list[Invoice] = []
    issued: list[Memo] = []
    for kind, who, amount, pick in ops:
        sub = subs[who]
        if kind == "invoice":
            invoice = posted_invoice(books, sub, amount)
            memos.apply_account_credit(books, invoice)
            invoices.append(invoice)
        elif kind == "void":
            if issued:
                memo = issued[pick % len(issued)]
                try:
                    memos.void_memo(books, memo.id, JAN)
                except ValidationFailed as exc:
                    assert memo.voided_at is not None and exc.errors == {
                        "memo": ["is already void"]}
        else:
            theirs = [i for i in invoices if i.subscriber_id == sub and i.balance_due > 0]
            target = theirs[pick % len(theirs)].id if pick is not None and theirs else None
            issue = memos.credit_memo if kind == "credit" else memos.debit_memo
            issued.append(issue(books, sub, amount, kind, JAN,
                                invoice_id=target if kind == "credit" else None))
        books.commit()

    unbalanced = books.scalars(select(Leg.entry_id).group_by(Leg.entry_id).having(
        func.sum(Leg.debit) != func.sum(Leg.credit))).all()
    assert unbalanced == []
    assert books.scalar(select(func.coalesce(func.sum(Leg.debit - Leg.credit), 0))) == 0
    for sub in subs:
        live = [m for m in issued if m.subscriber_id == sub and m.voided_at is None]
        credits = sum(m.amount for m in live if m.kind == "credit")
        debits = sum(m.amount for m in live if m.kind == "debit")
        mine = [i for i in invoices if i.subscriber_id == sub]
        balance = ledger.subscriber_balance(books, sub)
        assert balance == sum(i.total for i in mine) - credits + debits
        assert balance == (sum(i.balance_due for i in mine) - memos.account_credit(books, sub)
                           + debits)
        for invoice in mine:
            assert 0 <= invoice.amount_paid <= invoice.total
            assert invoice.status == ("open" if invoice.amount_paid == 0 else
                                      "paid" if invoice.balance_due == 0 else "partially_paid")
        for memo in live:
            assert 0 <= memo.unapplied <= (memo.amount if memo.kind == "credit" else 0)
