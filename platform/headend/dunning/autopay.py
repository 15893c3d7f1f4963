"""Autopay: charge each due invoice of an autopay subscriber to their saved method, and retry a
declined charge on the tenant's schedule.

Attempt 1 is made on (or the first run after) the due date; a failed attempt n schedules the
next `retry_interval_days` later while n <= retry_count, so there are at most 1 + retry_count
attempts per invoice. Each attempt is an AutopayAttempt row claimed before the charge (unique
invoice + attempt: a rerun or a concurrent run finds it taken and charges nothing) and its
transaction id `autopay-{invoice}-{attempt}` is the gateway's idempotency key, so a charge
whose response was lost is never made twice. An "undefined" (or "pending") outcome is not
retried: the payments service settles it with the provider and `follow_payment` then gives the
attempt its outcome - a decline learned that way is retried on the same schedule. A failure
writes a failed-payment notice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from headend.billing.models import Invoice
from headend.dunning.models import AutopayAttempt, Notice, SubscriberCollection
from headend.dunning.services import OPEN_STATUSES, collection_settings
from headend.errors import DomainError
from headend.money import format_money
from headend.payments.models import Payment, SavedPaymentMethod

RETRYABLE = ("failed", "error")  # a decline, or a charge refused before reaching the provider
UNSETTLED = ("pending", "undefined")  # the provider tells later (webhook, reconciliation)


@dataclass
class AutopayRun:
    attempts: int = 0
    processed: int = 0
    failed: int = 0
    charged: int = 0  # minor units processed


def due_charges(session: Session, today: dt.date) -> list[tuple[int, int, int, int, int]]:
    """(invoice, subscriber, saved method, balance due, next attempt number) for every unpaid
    invoice due on or before today of an autopay subscriber whose next attempt is due."""
    last = (sa.select(AutopayAttempt.invoice_id,
                      sa.func.max(AutopayAttempt.attempt).label("attempt"))
            .group_by(AutopayAttempt.invoice_id).subquery())
    latest = aliased(AutopayAttempt)
    stmt = (sa.select(Invoice.id, Invoice.subscriber_id, SubscriberCollection.autopay_method_id,
                      Invoice.total - Invoice.amount_paid,
                      sa.func.coalesce(last.c.attempt, 0) + 1)
            .join(SubscriberCollection,
                  SubscriberCollection.subscriber_id == Invoice.subscriber_id)
            .join(SavedPaymentMethod,
                  SavedPaymentMethod.id == SubscriberCollection.autopay_method_id)
            .outerjoin(last, last.c.invoice_id == Invoice.id)
            .outerjoin(latest, sa.and_(latest.invoice_id == Invoice.id,
                                       latest.attempt == last.c.attempt))
            .where(SubscriberCollection.autopay.is_(True),
                   SavedPaymentMethod.removed_at.is_(None),
                   Invoice.status.in_(OPEN_STATUSES), Invoice.due_date <= today,
                   Invoice.total > Invoice.amount_paid,
                   sa.or_(last.c.attempt.is_(None),
                          sa.and_(latest.status.in_(RETRYABLE),
                                  latest.next_attempt_on <= today)))
            .order_by(Invoice.due_date, Invoice.id))
    return [(i, s, m, int(b), int(n)) for i, s, m, b, n in session.execute(stmt)]


def charge(session: Session, invoice_id: int, subscriber_id: int, method_id: int, amount: int,
           attempt: int, today: dt.date, *, retry_count: int,
           retry_interval_days: int) -> AutopayAttempt | None:
    """Make attempt `attempt` on the invoice; None when another run already made it."""
    from headend.payments.services import receive_payment

    try:
        with session.begin_nested():
            row = AutopayAttempt(invoice_id=invoice_id, attempt=attempt, attempted_on=today,
                                 status="pending")
            session.add(row)
            session.flush()
    except IntegrityError:
        return None
    try:
        with session.begin_nested():
            payment = receive_payment(
                session, subscriber_id, amount, "card", today, invoice_ids=[invoice_id],
                saved_method_id=method_id, source="autopay",
                transaction_id=f"autopay-{invoice_id}-{attempt}")
        row.payment_id, row.status = payment.id, payment.status
        row.decline_code, row.message = payment.decline_code, (payment.message or None)
    except DomainError as exc:
        row.status, row.message = "error", str(exc)[:255]
    if row.status in RETRYABLE:
        _declined(session, row, subscriber_id, amount, retry_count=retry_count,
                  retry_interval_days=retry_interval_days)
    session.flush()
    return row


def _declined(session: Session, row: AutopayAttempt, subscriber_id: int, amount: int, *,
              retry_count: int, retry_interval_days: int) -> None:
    """A failed attempt: the next one `retry_interval_days` after it while attempts are left,
    and a failed-payment notice."""
    if row.attempt <= retry_count:
        row.next_attempt_on = row.attempted_on + dt.timedelta(days=retry_interval_days)
    invoice = session.get(Invoice, row.invoice_id)
    retry = f" We will try again on {row.next_attempt_on:%Y-%m-%d}." \
        if row.next_attempt_on else ""
    session.add(Notice(
        kind="failed_payment", key=f"failed_payment:{row.invoice_id}:{row.attempt}",
        subscriber_id=subscriber_id, invoice_id=row.invoice_id, payment_id=row.payment_id,
        message=(f"The automatic payment of {format_money(amount, invoice.currency)} for "
                 f"invoice {invoice.number} was declined"
                 f"{f' ({row.decline_code})' if row.decline_code else ''}.{retry}")))


def follow_payment(session: Session, payment: Payment) -> AutopayAttempt | None:
    """An autopay charge whose outcome came later (webhook, reconciliation of "undefined"):
    its attempt takes the payment's status, decline code and message, and a decline
    schedules the next retry - counted from the attempt's day - and writes the notice, exactly
    as a decline answered at once does. Called by the payments service inside the payment's
    transaction; returns the attempt it updated (None: not an autopay charge, or settled)."""
    if payment.source != "autopay" or payment.status in UNSETTLED:
        return None
    row = session.scalar(sa.select(AutopayAttempt).where(
        AutopayAttempt.payment_id == payment.id, AutopayAttempt.status.in_(UNSETTLED))
        .with_for_update().execution_options(populate_existing=True))
    if row is None:
        return None
    row.status, row.decline_code = payment.status, payment.decline_code
    row.message = payment.message
    if row.status in RETRYABLE:
        settings = collection_settings(session)
        _declined(session, row, payment.subscriber_id, payment.amount,
                  retry_count=settings.retry_count,
                  retry_interval_days=settings.retry_interval_days)
    session.flush()
    return row


def run_autopay(session: Session, today: dt.date, *,
                after_each: Callable[[], None] | None = None) -> AutopayRun:
    """The acting tenant's autopay for `today`; `after_each` runs after each attempt (the job
    commits there: a charge made is never forgotten by a crash later in the run)."""
    settings = collection_settings(session)
    retry_count, interval = settings.retry_count, settings.retry_interval_days
    result = AutopayRun()
    for invoice_id, subscriber_id, method_id, amount, attempt in due_charges(session, today):
        if attempt > 1 + retry_count:
            continue
        row = charge(session, invoice_id, subscriber_id, method_id, amount, attempt, today,
                     retry_count=retry_count, retry_interval_days=interval)
        if row is None:
            continue
        result.attempts += 1
        if row.status == "processed":
            result.processed += 1
            result.charged += amount
        elif row.status in RETRYABLE:
            result.failed += 1
        if after_each is not None:
            after_each()
    return result
