"""Sending the acting tenant's outbox over SMTP, each message exactly once.

A message is claimed before it is sent: `UPDATE ... SET status='sending' WHERE id=? AND
<due>` committed on its own, so of two deliveries running at once only one gets a row (on
PostgreSQL the second UPDATE waits for the first to commit and then no longer matches). The
SMTP conversation happens outside any transaction; its outcome is committed per message. A
failed message is retried with backoff (`RETRY_DELAYS`), then stays "failed" for staff. A
message left "sending" by a worker that died is not resent blindly (the server may have taken
it): after STALE it shows as failed, for staff to retry.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from dataclasses import dataclass

import sqlalchemy as sa
from rq.timeouts import JobTimeoutException
from sqlalchemy import select
from sqlalchemy.orm import Session

from headend.billing.models import Invoice
from headend.db import among, utcnow
from headend.dunning.models import Notice
from headend.mail import smtp
from headend.mail.compose import SENDABLE_INVOICES
from headend.mail.models import MailSettings, OutboundEmail

BATCH = 50  # messages claimed, then sent over one connection, at a time
RETRY_DELAYS = (60, 300, 1800)  # seconds before each automatic retry of a failed message
STALE = dt.timedelta(minutes=15)
INTERRUPTED = ("interrupted while sending (the server may have taken it): check the "
               "recipient's mailbox before Retry")


@dataclass
class Delivery:
    """What a delivery did; `retry_at`: the earliest automatic retry now waiting."""

    sent: int = 0
    failed: int = 0
    retry_at: dt.datetime | None = None


def usable(settings: MailSettings | None) -> bool:
    return settings is not None and bool(settings.host and settings.from_address)


def _due(now: dt.datetime):
    return sa.or_(OutboundEmail.status == "queued",
                  sa.and_(OutboundEmail.status == "failed",
                          OutboundEmail.next_attempt_at <= now))


def deliver(session: Session, *, now: dt.datetime | None = None, ids=None,
            even_when_off: bool = False) -> Delivery:
    """Send the acting tenant's due messages (only `ids` when given), committing each claim and
    each outcome. Nothing is sent while the tenant's mail is off (`even_when_off`: the test
    email, which checks settings before they are switched on)."""
    from headend.mail.outbox import queue_missed_invoices, queue_notices

    now = now or utcnow()
    result = Delivery()
    settings = session.scalar(select(MailSettings))
    if not usable(settings) or not (settings.enabled or even_when_off):
        session.rollback()
        return result
    session.expunge(settings)  # read once; the commits below would expire it
    if ids is None:
        queue_notices(session, settings.tenant_id, now)
        queue_missed_invoices(session, settings.tenant_id, now)
        _fail_stale(session, now)
        session.commit()
    while True:
        stmt = select(OutboundEmail.id).where(_due(now)).order_by(OutboundEmail.id).limit(BATCH)
        if ids is not None:
            stmt = stmt.where(among(OutboundEmail.id, list(ids)))
        candidates = list(session.scalars(stmt))
        claimed = [pk for pk in candidates if _claim(session, pk, now)]
        session.commit()
        if not candidates:
            break
        if claimed:
            _send(session, settings, claimed, now, result)
    result.retry_at = session.scalar(select(sa.func.min(OutboundEmail.next_attempt_at)).where(
        OutboundEmail.status == "failed", OutboundEmail.next_attempt_at.is_not(None)))
    session.commit()
    return result


def _claim(session: Session, pk: int, now: dt.datetime) -> bool:
    """Take the row if it is still due at `now`; stamped with the time of the claim (not of
    the run's start), so a long delivery's rows never look stale to another."""
    done = session.execute(
        sa.update(OutboundEmail).where(OutboundEmail.id == pk, _due(now))
        .values(status="sending", attempts=OutboundEmail.attempts + 1,
                attempted_at=max(now, utcnow()))
        .execution_options(synchronize_session=False))
    return done.rowcount == 1


def _fail_stale(session: Session, now: dt.datetime) -> None:
    session.execute(
        sa.update(OutboundEmail).where(OutboundEmail.status == "sending",
                                       OutboundEmail.attempted_at < now - STALE)
        .values(status="failed", last_error=INTERRUPTED, next_attempt_at=None)
        .execution_options(synchronize_session=False))


def _send(session: Session, settings: MailSettings, claimed: list[int], now: dt.datetime,
          result: Delivery) -> None:
    """Send the claimed rows over one connection; a server that cannot be used fails the rest
    of the batch with its error (each retried later)."""
    rows = list(session.scalars(select(OutboundEmail).where(among(OutboundEmail.id, claimed))
                                .order_by(OutboundEmail.id)))
    connection = None
    try:
        for n, row in enumerate(rows):
            handed_over = False
            try:
                msg = smtp.message(settings, row, _attachment(session, row))
                connection = connection or smtp.connect(settings)
                handed_over = True
                connection.send_message(msg)
            except smtp.MESSAGE_ERRORS as exc:
                _failed(row, exc, now, result)
            except OSError as exc:
                # the connection broke; if it broke while this message was handed over, the
                # server may have taken it: never resent blindly, staff decide (Retry)
                if handed_over:
                    _failed(row, exc, now, result)
                    row.last_error, row.next_attempt_at = f"{INTERRUPTED} ({exc})"[:2000], None
                for rest in rows[n + 1 if handed_over else n:]:
                    _failed(rest, exc, now, result)
                session.commit()
                return
            except JobTimeoutException:
                raise  # RQ stops the job: the claimed rows go stale and are reported
            except InvoiceWithdrawn as exc:
                _failed(row, exc, now, result)
                row.next_attempt_at = None
            except Exception as exc:  # noqa: BLE001 - a PDF that cannot be drawn fails its row
                _failed(row, exc, now, result)
            else:
                _sent(session, row, result)
            session.commit()
    finally:
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.quit()


class InvoiceWithdrawn(Exception):
    """The invoice an email was queued for is no longer one to send."""


def _attachment(session: Session, row: OutboundEmail) -> tuple[str, bytes] | None:
    """The invoice's PDF, drawn now (never in the transaction that posted the invoice)."""
    if row.invoice_id is None:
        return None
    from headend.documents.render import invoice_pdf

    number, status = session.execute(select(Invoice.number, Invoice.status).where(
        Invoice.id == row.invoice_id)).one()
    if status not in SENDABLE_INVOICES:  # voided (or deleted back to a draft) since queued
        raise InvoiceWithdrawn(f"invoice {number or row.invoice_id} is {status}: not sent")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", number or str(row.invoice_id))
    return f"invoice-{name}.pdf", invoice_pdf(session, row.invoice_id)


def _sent(session: Session, row: OutboundEmail, result: Delivery) -> None:
    row.status, row.sent_at, row.next_attempt_at = "sent", utcnow(), None
    if row.notice_id is not None:
        session.execute(sa.update(Notice).where(Notice.id == row.notice_id)
                        .values(sent_at=row.sent_at)
                        .execution_options(synchronize_session=False))
    result.sent += 1


def _failed(row: OutboundEmail, exc: BaseException, now: dt.datetime,
            result: Delivery) -> None:
    row.status = "failed"
    row.last_error = (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)[:2000]
    retries_done = row.attempts - 1
    row.next_attempt_at = (row.attempted_at or now) + dt.timedelta(
        seconds=RETRY_DELAYS[retries_done]) if retries_done < len(RETRY_DELAYS) else None
    result.failed += 1
