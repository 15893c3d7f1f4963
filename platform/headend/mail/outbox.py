"""Queueing email: services call `queue_email(...)` inside their own transaction; the message
is delivered by a job after that transaction commits (never from inside it), and each
delivery attempt is recorded on the row. Invoice emails, receipts and notices are queued in
bulk by the mail jobs (`queue_invoices`, `queue_receipts`, `queue_notices`)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import Session

from headend.billing.models import Invoice
from headend.db import among, utcnow
from headend.dunning.models import Notice
from headend.errors import ValidationFailed
from headend.mail import compose
from headend.mail.compose import SENDABLE_INVOICES
from headend.mail.jobs import request_delivery
from headend.mail.models import KINDS, OutboundEmail
from headend.mail.services import mail_settings

NOTICE_KINDS = ("failed_payment", "upcoming_suspension")
# Notices older than this are not emailed: turning mail on must not send last year's news.
NOTICE_MAX_AGE = dt.timedelta(days=3)


def queue_email(session: Session, *, tenant_id: int, kind: str, key: str, to: str,
                subject: str, body_text: str, body_html: str | None = None,
                subscriber_id: int | None = None, invoice_id: int | None = None,
                payment_id: int | None = None, notice_id: int | None = None) -> OutboundEmail:
    """Add the message unless one with `key` exists for the tenant (then return that one):
    a retried posting or a replayed webhook never emails twice. `invoice_id` attaches the
    invoice's PDF, rendered when the message is sent."""
    if kind not in KINDS:
        raise ValueError(f"unknown email kind {kind!r}")
    existing = session.scalars(select(OutboundEmail).where(
        OutboundEmail.tenant_id == tenant_id, OutboundEmail.key == key)).first()
    if existing is not None:
        return existing
    row = OutboundEmail(tenant_id=tenant_id, kind=kind, key=key, to_address=to,
                        subject=subject, body_text=body_text, body_html=body_html,
                        subscriber_id=subscriber_id, invoice_id=invoice_id,
                        payment_id=payment_id, notice_id=notice_id)
    session.add(row)
    session.flush()
    request_delivery(session, tenant_id)
    return row


def queue_messages(session: Session, tenant_id: int,
                   messages: list[compose.Message]) -> list[int]:
    """Add the messages whose keys the tenant has not queued yet (one query for the keys, one
    multi-row insert); returns the new rows' ids."""
    if not messages:
        return []
    taken = set(session.scalars(select(OutboundEmail.key).where(
        OutboundEmail.tenant_id == tenant_id,
        OutboundEmail.key.in_([m.key for m in messages]))))
    rows = [OutboundEmail(tenant_id=tenant_id, kind=m.kind, key=m.key, to_address=m.to,
                          subject=m.subject[:255], body_text=m.body_text,
                          body_html=m.body_html, subscriber_id=m.subscriber_id,
                          invoice_id=m.invoice_id, payment_id=m.payment_id,
                          notice_id=m.notice_id)
            for m in messages if m.key not in taken]
    session.add_all(rows)
    session.flush()
    return [row.id for row in rows]


def queue_invoices(session: Session, tenant_id: int, invoice_ids) -> list[int]:
    """Invoice emails for these (posted) invoices, when the tenant emails invoices."""
    row = mail_settings(session)
    if not (row.enabled and row.email_invoices):
        return []
    return queue_messages(session, tenant_id,
                          compose.invoice_messages(session, tenant_id, invoice_ids))


def queue_receipts(session: Session, tenant_id: int, payment_ids) -> list[int]:
    """Receipts for these (processed) payments, when the tenant emails receipts."""
    row = mail_settings(session)
    if not (row.enabled and row.email_receipts):
        return []
    return queue_messages(session, tenant_id,
                          compose.receipt_messages(session, tenant_id, payment_ids))


def queue_missed_invoices(session: Session, tenant_id: int,
                          now: dt.datetime | None = None) -> list[int]:
    """Invoice emails for the invoices posted recently - and since invoices are emailed - that
    have none: the hook of a billing run that failed after some chunks committed, or a worker
    lost, must not leave them unsent (the rerun posts nothing again)."""
    row = mail_settings(session)
    if not (row.enabled and row.email_invoices and row.invoices_since):
        return []
    now = now or utcnow()
    emailed = sa.exists().where(OutboundEmail.invoice_id == Invoice.id,
                                OutboundEmail.kind == "invoice")
    missed = list(session.scalars(select(Invoice.id).where(
        Invoice.posted_at >= max(now - NOTICE_MAX_AGE, row.invoices_since),
        Invoice.status.in_(SENDABLE_INVOICES), ~emailed).order_by(Invoice.id)))
    return queue_invoices(session, tenant_id, missed) if missed else []


def queue_notices(session: Session, tenant_id: int, now: dt.datetime | None = None) -> list[int]:
    """An email per recent unsent notice of the kinds subscribers are told by email (failed
    payment, upcoming suspension) that has none yet. Notice.sent_at is set when it is sent."""
    row = mail_settings(session)
    if not (row.enabled and row.email_notices):
        return []
    now = now or utcnow()
    emailed = sa.exists().where(OutboundEmail.notice_id == Notice.id)
    notices = list(session.scalars(select(Notice).where(
        Notice.sent_at.is_(None), Notice.kind.in_(NOTICE_KINDS),
        Notice.created_at >= now - NOTICE_MAX_AGE, ~emailed).order_by(Notice.id)))
    return queue_messages(session, tenant_id,
                          compose.notice_messages(session, tenant_id, notices))


def queue_test(session: Session, tenant_id: int, to: str) -> OutboundEmail:
    """A test email to `to` with the saved settings (sent at once by the caller)."""
    from headend.mail.services import is_address

    to = (to or "").strip()
    if not is_address(to):
        raise ValidationFailed({"test_address": "must be an email address"})
    row = mail_settings(session)
    if row.id is None or not row.host or not row.from_address:
        raise ValidationFailed({"test_address": "save a server and a from address first"})
    (new_id,) = queue_messages(session, tenant_id,
                               [compose.test_message(session, tenant_id, to, utcnow())])
    return session.get(OutboundEmail, new_id)


def retry(session: Session, ids) -> int:
    """Staff's Retry: failed (or still queued) messages go back in the queue now. A message
    already sent, or being sent, is never sent again from here."""
    rows = list(session.scalars(select(OutboundEmail).where(among(OutboundEmail.id, list(ids)))))
    done = [r for r in rows if r.status in ("sent", "sending")]
    if done:
        raise ValidationFailed({"status": f"{', '.join(r.key for r in done)}: "
                                          "already sent (or being sent); not sent again"})
    for row in rows:
        row.status, row.next_attempt_at = "queued", None
        request_delivery(session, row.tenant_id)
    session.flush()
    return len(rows)
