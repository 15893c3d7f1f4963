"""Moving a payment's money onto invoices and back: the one place PaymentAllocation,
Invoice.amount_paid and Payment.unapplied change together (payments.batch does the same for
many new payments at once, set-based).

Kept apart from payments.services (and free of Flask, gateways and the ledger) so that
billing.memos can spend payment credit on a new invoice exactly as it spends credit memos,
without importing the payments domain's services. Callers lock the invoice and the payment.

Lock order (PostgreSQL row locks; SQLite has one database lock): a payment before the invoices
it settles, several payments in id order, several invoices in id order (whatever order they are
settled in: a batch of payments locks all its subscribers' open invoices at once). Receiving,
settling later (webhook, reconciliation) and refunding lock the payment, then its invoices;
voiding an invoice locks the payments that settled it (`release_invoice_payments`, which
billing.memos calls before it touches the invoice), then changes the invoice. The one
transaction that locks an invoice before payments, `spend_payment_credit` under
billing.memos.apply_account_credit, works on an invoice being posted in that same transaction:
it has no allocations yet and no other transaction can lock it, so nothing holding a payment
ever waits for it - no cycle, no deadlock.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from headend.billing.models import Invoice
from headend.payments.models import Payment, PaymentAllocation


def invoice_status(invoice: Invoice) -> str:
    """open / partially_paid / paid from what has been applied (void stays void)."""
    if invoice.status == "void":
        return "void"
    if invoice.amount_paid <= 0:
        return "open"
    return "paid" if invoice.balance_due <= 0 else "partially_paid"


def allocate(session: Session, payment: Payment, invoice: Invoice, amount: int, *,
             first: bool = False) -> None:
    """Settle `amount` of the invoice's balance due from the payment's unapplied money.

    `first`: the payment has no allocation yet (it is being posted), so there is no row to
    look up and add to. The new row refers to the loaded payment and invoice, which spares
    the tenant check a query for each."""
    invoice.amount_paid += amount
    invoice.status = invoice_status(invoice)
    payment.unapplied -= amount
    row = None if first else session.scalar(sa.select(PaymentAllocation).where(
        PaymentAllocation.payment_id == payment.id, PaymentAllocation.invoice_id == invoice.id))
    if row is None:
        session.add(PaymentAllocation(payment=payment, invoice=invoice, amount=amount))
    else:
        row.amount += amount


def unallocate(session: Session, allocation: PaymentAllocation, invoice: Invoice,
               amount: int) -> None:
    """Take `amount` of an allocation off its invoice (reopening it); the money is the
    caller's to keep as credit or give back. The allocation goes when nothing is left."""
    invoice.amount_paid -= amount
    invoice.status = invoice_status(invoice)
    allocation.amount -= amount
    if allocation.amount <= 0:
        session.delete(allocation)


def spend_payment_credit(session: Session, invoice: Invoice) -> int:
    """Settle the (locked, open) invoice from its subscriber's payments with unapplied money,
    oldest first; returns the minor units applied. The payments are locked (FOR UPDATE)."""
    payments = session.scalars(
        sa.select(Payment)
        .where(Payment.subscriber_id == invoice.subscriber_id, Payment.status == "processed",
               Payment.unapplied > 0)
        .order_by(Payment.received_on, Payment.id)
        .with_for_update().execution_options(populate_existing=True)).all()
    applied = 0
    for payment in payments:
        amount = min(payment.unapplied, invoice.balance_due)
        if amount <= 0:
            break
        allocate(session, payment, invoice, amount)
        applied += amount
    return applied


def release_invoice_payments(session: Session, invoice: Invoice) -> int:
    """A voided invoice gives what payments settled on it back to them as account credit;
    returns the minor units released.

    Its payments are locked first, in id order, then the invoice (the lock order above), and
    the allocations and the invoice are read again under those locks: a refund of one of the
    payments that committed meanwhile has already taken its part off the invoice."""
    payments: dict[int, Payment] = {}
    while True:
        allocations = session.scalars(
            sa.select(PaymentAllocation).where(PaymentAllocation.invoice_id == invoice.id)
            .order_by(PaymentAllocation.id).execution_options(populate_existing=True)).all()
        unlocked = {a.payment_id for a in allocations} - set(payments)
        if not unlocked:
            break
        payments.update((p.id, p) for p in session.scalars(
            sa.select(Payment).where(Payment.id.in_(unlocked)).order_by(Payment.id)
            .with_for_update().execution_options(populate_existing=True)))
    if not allocations:
        return 0
    invoice = session.scalar(sa.select(Invoice).where(Invoice.id == invoice.id)
                             .with_for_update().execution_options(populate_existing=True))
    released = 0
    for allocation in allocations:
        payment = payments[allocation.payment_id]
        payment.unapplied += allocation.amount
        released += allocation.amount
        unallocate(session, allocation, invoice, allocation.amount)
    return released


def credit_holders(session: Session, subscriber_ids) -> set[int]:
    """Which of these subscribers have payment money not applied to any invoice."""
    from headend.db import among

    return set(session.scalars(sa.select(Payment.subscriber_id).distinct().where(
        Payment.status == "processed", Payment.unapplied > 0,
        among(Payment.subscriber_id, subscriber_ids))))


def payment_credit(session: Session, subscriber_id: int) -> int:
    return int(session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(Payment.unapplied), 0))
        .where(Payment.subscriber_id == subscriber_id, Payment.status == "processed")))
