"""One lock order for payments and invoices (payments.allocation): voiding an invoice that two
payments settled while one of them is refunded, at once, neither deadlocks nor gives the
refunded money back twice (as account credit on top of the refund)."""

from __future__ import annotations

import threading

import pytest
from headend.billing.invoicing import void_invoice
from headend.billing.models import Invoice
from headend.db import db
from headend.ledger.services import subscriber_balance
from headend.payments.models import Payment, PaymentAllocation
from headend.payments.services import receive_payment, refund_payment
from headend.tenancy.context import acting_as
from sqlalchemy import func, select

from tests.dunning_helpers import MAR1, active_subscriber, owe
from tests.payments_helpers import enable_manual

ROUNDS = 5


@pytest.mark.postgresql_only  # row locks; SQLite has one database lock
def test_void_and_refund_at_once_take_locks_in_one_order(app, books):
    tenant = books.info["tenant"]
    enable_manual(books)
    cases = []
    for _ in range(ROUNDS):
        sub = active_subscriber(books)
        invoice = owe(books, sub, "100.00")
        first = receive_payment(books, sub.id, 4000, "cash", MAR1, invoice_ids=[invoice.id])
        second = receive_payment(books, sub.id, 6000, "cash", MAR1, invoice_ids=[invoice.id])
        cases.append((sub.id, invoice.id, first.id, second.id))
    books.commit()
    errors = []

    def run(work):
        try:
            with app.app_context(), acting_as(tenant):
                barrier.wait()
                work(db.session)
                db.session.commit()
                db.session.remove()
        except Exception as exc:  # reported below: a deadlock would land here
            errors.append(exc)

    for _, invoice_id, _, second_id in cases:
        barrier = threading.Barrier(2)
        threads = [
            threading.Thread(target=run, args=(
                lambda s, i=invoice_id: void_invoice(s, i, MAR1),)),
            threading.Thread(target=run, args=(
                lambda s, p=second_id: refund_payment(s, p, 6000, MAR1, "race"),))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads), "a thread is stuck"
    assert errors == []
    books.expire_all()
    for sub_id, invoice_id, first_id, second_id in cases:
        invoice = books.get(Invoice, invoice_id)
        first, second = books.get(Payment, first_id), books.get(Payment, second_id)
        assert (invoice.status, invoice.amount_paid) == ("void", 0)
        assert (first.unapplied, second.unapplied, second.refunded) == (4000, 0, 6000)
        assert books.scalar(select(func.count()).select_from(PaymentAllocation).where(
            PaymentAllocation.invoice_id == invoice_id)) == 0
        assert subscriber_balance(books, sub_id) == -4000  # P1 left as account credit
