"""Moving a payment's money onto invoices and back: the one place PaymentAllocation,
Invoice.amount_paid and Payment.unapplied change together.

Kept apart from payments.services (and free of Flask, gateways and the ledger) so that
billing.memos can spend payment credit on a new invoice exactly as it spends credit memos,
without importing the payments domain's services. Callers lock the invoice and the payment.
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


def allocate(session: Session, payment: Payment, invoice: Invoice, amount: int) -> None:
    """Settle `amount` of the invoice's balance due from the payment's unapplied money."""
    invoice.amount_paid += amount
    invoice.status = invoice_status(invoice)
    payment.unapplied -= amount
    row = session.scalar(sa.select(PaymentAllocation).where(
        PaymentAllocation.payment_id == payment.id, PaymentAllocation.invoice_id == invoice.id))
    if row is None:
        session.add(PaymentAllocation(payment_id=payment.id, invoice_id=invoice.id,
                                      amount=amount))
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
    returns the minor units released."""
    released = 0
    for allocation in session.scalars(sa.select(PaymentAllocation).where(
            PaymentAllocation.invoice_id == invoice.id)).all():
        payment = session.scalar(
            sa.select(Payment).where(Payment.id == allocation.payment_id)
            .with_for_update().execution_options(populate_existing=True))
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
