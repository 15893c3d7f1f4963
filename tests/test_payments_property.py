"""Property: any sequence of invoices, payments (oldest first or to a chosen invoice), refunds
and invoice voids keeps every entry balanced, never allocates more than an invoice's total or
a payment's amount, and leaves each subscriber's ledger balance equal both to invoices less
payments plus refunds and to what the invoices still show due less the account credit."""

from __future__ import annotations

from decimal import Decimal

from headend.billing import invoicing, memos
from headend.billing.models import Invoice
from headend.errors import ValidationFailed
from headend.ledger import services as ledger
from headend.ledger.models import Leg
from headend.payments import services as payments
from headend.payments.models import Payment, PaymentAllocation
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.ledger_helpers import JAN, subscriber
from tests.payments_helpers import enable_manual

amounts = st.integers(min_value=1, max_value=10**6)
operations = st.lists(st.one_of(
    st.tuples(st.just("invoice"), st.integers(0, 1), amounts, st.none()),
    st.tuples(st.just("pay"), st.integers(0, 1), amounts, st.none() | st.integers(0, 20)),
    st.tuples(st.just("refund"), st.integers(0, 1), amounts, st.integers(0, 20)),
    st.tuples(st.just("void"), st.integers(0, 1), st.just(0), st.integers(0, 20)),
), max_size=20)


def _allocated(session, column, key) -> int:
    return int(session.scalar(select(func.coalesce(func.sum(PaymentAllocation.amount), 0))
                              .where(column == key)))


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_any_payment_sequence_keeps_the_books_and_allocations_right(books, ops):
    enable_manual(books)
    subs = [subscriber(books) for _ in range(2)]
    invoices: list[Invoice] = []
    received: list[Payment] = []
    for kind, who, amount, pick in ops:
        sub = subs[who]
        if kind == "invoice":
            invoices.append(invoicing.new_invoice(
                books, sub, JAN, [{"description": "Service",
                                   "unit_price": str(Decimal(amount) / 100)}], today=JAN))
        elif kind == "pay":
            theirs = [i for i in invoices if i.subscriber_id == sub and i.balance_due > 0]
            chosen = [theirs[pick % len(theirs)].id] if pick is not None and theirs else None
            received.append(payments.receive_payment(books, sub, amount, "cash", JAN,
                                                     invoice_ids=chosen))
        elif kind == "refund" and received:
            payment = received[pick % len(received)]
            left = payments.refundable(books, payment)
            try:
                payments.refund_payment(books, payment.id, amount, JAN)
                assert amount <= left
            except ValidationFailed as exc:
                assert amount > left and set(exc.errors) == {"amount"}
                books.rollback()
        elif kind == "void" and invoices:
            invoice = invoices[pick % len(invoices)]
            if invoice.status != "void":
                invoicing.void_invoice(books, invoice.id, JAN)
        books.commit()

    unbalanced = books.scalars(select(Leg.entry_id).group_by(Leg.entry_id).having(
        func.sum(Leg.debit) != func.sum(Leg.credit))).all()
    assert unbalanced == []
    assert books.scalar(select(func.coalesce(func.sum(Leg.debit - Leg.credit), 0))) == 0
    for invoice in invoices:
        assert 0 <= invoice.amount_paid <= invoice.total
        assert invoice.amount_paid == _allocated(books, PaymentAllocation.invoice_id, invoice.id)
        if invoice.status == "void":
            assert invoice.amount_paid == 0
    for payment in received:
        assert payment.unapplied >= 0 and 0 <= payment.refunded <= payment.amount
        assert _allocated(books, PaymentAllocation.payment_id, payment.id) + payment.unapplied \
            + payment.refunded == payment.amount
    for sub in subs:
        mine = [i for i in invoices if i.subscriber_id == sub and i.status != "void"]
        paid = [p for p in received if p.subscriber_id == sub]
        balance = ledger.subscriber_balance(books, sub)
        assert balance == sum(i.total for i in mine) - sum(p.amount - p.refunded for p in paid)
        assert balance == sum(i.balance_due for i in mine) - memos.account_credit(books, sub)
