"""What collections looks like: AR aging and a subscriber's collections log. Read-only, one
grouped query per figure (the aging never loads invoices)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from headend.billing import drafting
from headend.billing.models import Invoice
from headend.dunning.models import AppliedFee, AutopayAttempt, Notice, ScheduledAction, WriteOff
from headend.dunning.services import OPEN_STATUSES
from headend.money import format_money

AGING_BUCKETS = ("current", "1-30", "31-60", "61-90", "90+")


def ar_aging(session: Session, today: dt.date) -> list[tuple[str, int]]:
    """The balance due of open invoices by days past due: (bucket, minor units), in order.
    "current" is not yet due; a bucket counts days after the due date (1-30: due 1 to 30 days
    ago)."""
    edges = [today - dt.timedelta(days=n) for n in (0, 30, 60, 90)]  # due_date below each
    bucket = sa.case(
        (Invoice.due_date >= edges[0], 0), (Invoice.due_date >= edges[1], 1),
        (Invoice.due_date >= edges[2], 2), (Invoice.due_date >= edges[3], 3), else_=4)
    rows = dict(session.execute(
        sa.select(bucket, sa.func.sum(Invoice.total - Invoice.amount_paid))
        .where(Invoice.status.in_(OPEN_STATUSES)).group_by(bucket)).tuples().all())
    return [(name, int(rows.get(n, 0) or 0)) for n, name in enumerate(AGING_BUCKETS)]


@dataclass(frozen=True)
class LogRow:
    """One thing collections did (or was told) for a subscriber."""

    at: dt.date
    kind: str  # autopay, late_fee, rebill_fee, write_off, promise, notice kinds
    text: str
    ref: int | None = None  # an invoice id to link, where there is one


def subscriber_log(session: Session, subscriber_id: int, limit: int = 200) -> list[LogRow]:
    """The subscriber's collections history, newest first: autopay attempts, fees, notices
    (suspensions, restores, failed payments, upcoming suspensions), promises to pay and
    write-offs. Who changed what is in the audit log."""
    rows: list[LogRow] = []
    for attempt, number in session.execute(
            sa.select(AutopayAttempt, Invoice.number).join(
                Invoice, Invoice.id == AutopayAttempt.invoice_id)
            .where(Invoice.subscriber_id == subscriber_id)):
        outcome = attempt.status + (f" ({attempt.decline_code})" if attempt.decline_code else "")
        retry = f", next try {attempt.next_attempt_on}" if attempt.next_attempt_on else ""
        rows.append(LogRow(attempt.attempted_on, "autopay",
                           f"Autopay attempt {attempt.attempt} for {number}: {outcome}{retry}",
                           attempt.invoice_id))
    fee_invoice = sa.orm.aliased(Invoice)
    for fee, number, currency, fee_number in session.execute(
            sa.select(AppliedFee, Invoice.number, Invoice.currency, fee_invoice.number)
            .join(Invoice, Invoice.id == AppliedFee.invoice_id)
            .outerjoin(fee_invoice, fee_invoice.id == AppliedFee.fee_invoice_id)
            .where(Invoice.subscriber_id == subscriber_id)):
        label = "Late fee" if fee.kind == "late_fee" else "Re-billing fee"
        rows.append(LogRow(fee.applied_on, fee.kind,
                           f"{label} of {format_money(fee.amount, currency)} for {number}: "
                           f"invoice {fee_number}", fee.fee_invoice_id))
    for notice in session.scalars(sa.select(Notice).where(
            Notice.subscriber_id == subscriber_id)):
        rows.append(LogRow(notice.created_at.date(), notice.kind, notice.message,
                           notice.invoice_id))
    for action in session.scalars(sa.select(ScheduledAction).where(
            ScheduledAction.subscriber_id == subscriber_id)):
        what = "suspension" if action.action == "suspend" else "late fees"
        state = " (cancelled)" if action.cancelled_at else ""
        rows.append(LogRow(action.created_at.date(), "promise",
                           f"Promise to pay: no {what} before {action.not_before}"
                           f"{state}, by {action.created_by or 'system'}: {action.reason}"))
    currency = drafting.currency(session)
    for row in session.scalars(sa.select(WriteOff).where(
            WriteOff.subscriber_id == subscriber_id)):
        rows.append(LogRow(row.written_on, "write_off",
                           f"{format_money(row.amount, currency)} written off to bad debt "
                           f"(archived {row.archived_on})"))
    rows.sort(key=lambda r: r.at, reverse=True)
    return rows[:limit]
