"""Batch print: the invoices of a period (optionally only paper-invoice subscribers, open or
paid ones) merged into one PDF by a job on the documents queue, with its progress on the
PrintBatch row."""

from __future__ import annotations

import datetime as dt
import io

import sqlalchemy as sa
from sqlalchemy.orm import Session

from headend.billing.models import Invoice
from headend.db import utcnow
from headend.documents.models import PrintBatch
from headend.errors import raise_if, require
from headend.subscribers.models import Subscriber

# which invoices a batch takes, by status ("all": every posted invoice that is not void)
STATUS_FILTERS = {"open": ("open", "partially_paid"), "paid": ("paid",),
                  "all": ("open", "partially_paid", "paid")}
MAX_DAYS = 366
PROGRESS_EVERY = 25  # invoices rendered between two progress commits
STALLED_AFTER = dt.timedelta(minutes=10)  # queued or running without progress this long


def _date(value, field: str, errors: dict) -> dt.date | None:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value or "").strip())
    except ValueError:
        errors.setdefault(field, []).append("must be a date (YYYY-MM-DD)")
        return None


def create_batch(session: Session, *, date_from, date_to, status: str = "all",
                 paper_only: bool = False, created_by: str = "system") -> PrintBatch:
    """A queued batch for invoices dated date_from..date_to (inclusive); refused criteria
    name their field and nothing is written."""
    errors: dict[str, list[str]] = {}
    first, last = _date(date_from, "date_from", errors), _date(date_to, "date_to", errors)
    if first and last:
        require(errors, "date_to", first <= last, "must be on or after the first date")
        require(errors, "date_to", (last - first).days < MAX_DAYS,
                f"a batch covers at most {MAX_DAYS} days")
    require(errors, "status", status in STATUS_FILTERS,
            f"must be one of {', '.join(STATUS_FILTERS)}")
    require(errors, "paper_only", isinstance(paper_only, bool), "must be true or false")
    raise_if(errors)
    batch = PrintBatch(created_by=created_by, status="queued", total=0, done=0, criteria={
        "date_from": first.isoformat(), "date_to": last.isoformat(), "status": status,
        "paper_only": paper_only})
    session.add(batch)
    session.flush()
    return batch


def invoice_ids(session: Session, criteria: dict) -> list[int]:
    """The invoices a batch prints, by subscriber account then date."""
    query = (sa.select(Invoice.id).join(Subscriber, Subscriber.id == Invoice.subscriber_id)
             .where(Invoice.invoice_date >= dt.date.fromisoformat(criteria["date_from"]),
                    Invoice.invoice_date <= dt.date.fromisoformat(criteria["date_to"]),
                    Invoice.status.in_(STATUS_FILTERS[criteria["status"]]))
             .order_by(Subscriber.account_number, Invoice.invoice_date, Invoice.id))
    if criteria.get("paper_only"):
        query = query.where(Subscriber.paper_invoice.is_(True))
    return list(session.scalars(query))


def _batch(session: Session, batch_id: int) -> PrintBatch:
    batch = session.scalar(sa.select(PrintBatch).where(PrintBatch.id == batch_id))
    if batch is None:
        raise LookupError(f"print batch {batch_id} not found")
    return batch


def stalled(batch: PrintBatch, now: dt.datetime | None = None) -> bool:
    """Queued or running without a sign of life for STALLED_AFTER: its job was lost (a worker
    killed, Redis flushed) or never ran; staff can run it again."""
    since = batch.progress_at or batch.created_at
    return batch.status in ("queued", "running") and since is not None \
        and since < (now or utcnow()) - STALLED_AFTER


def run_again(session: Session, batch_id: int) -> PrintBatch:
    """Queue a failed or stalled batch again (the caller enqueues its job after committing)."""
    batch = _batch(session, batch_id)
    errors: dict = {}
    require(errors, "status", batch.status == "failed" or stalled(batch),
            "only a failed batch, or one without progress for "
            f"{int(STALLED_AFTER.total_seconds() // 60)} minutes, runs again")
    raise_if(errors)
    batch.status, batch.error, batch.progress_at = "queued", None, utcnow()
    session.flush()
    return batch


def _claim(session: Session, batch_id: int, total: int) -> bool:
    """Take the batch for this job: one UPDATE, so two jobs of one batch (a retry, a run again
    while the first still lived) never render it at once. Not taken: done, or another job is
    on it and alive."""
    now = utcnow()
    taken = session.execute(
        sa.update(PrintBatch)
        .where(PrintBatch.id == batch_id, sa.or_(
            PrintBatch.status.in_(("queued", "failed")),
            sa.and_(PrintBatch.status == "running",
                    PrintBatch.progress_at < now - STALLED_AFTER)))
        .values(status="running", total=total, done=0, error=None, progress_at=now)
        .execution_options(synchronize_session=False))
    session.commit()
    return taken.rowcount == 1


def run_batch(session: Session, batch_id: int) -> dict:
    """Render and merge the batch's invoices, committing progress every PROGRESS_EVERY; a
    failure is recorded on the batch (status "failed", the error) instead of raised."""
    from pypdf import PdfReader, PdfWriter

    from headend.documents.render import render_many

    batch = _batch(session, batch_id)
    ids = invoice_ids(session, batch.criteria)
    if not _claim(session, batch_id, len(ids)):
        batch = _batch(session, batch_id)
        return {"batch": batch_id, "status": batch.status, "skipped": True}
    try:
        writer = PdfWriter()
        for done, (_, pdf) in enumerate(render_many(session, ids), 1):
            writer.append(PdfReader(io.BytesIO(pdf)))
            if done % PROGRESS_EVERY == 0 and done < len(ids):
                batch = _batch(session, batch_id)
                batch.done, batch.progress_at = done, utcnow()
                session.commit()
        out = io.BytesIO()
        if ids:
            writer.compress_identical_objects()  # one logo and font set, not one per invoice
            writer.write(out)
        batch = _batch(session, batch_id)
        batch.pdf = out.getvalue() or None
        batch.done, batch.status = len(ids), "done"
        batch.finished_at = batch.progress_at = utcnow()
        session.commit()
    except Exception as exc:  # recorded for the operator; the job itself ends normally
        session.rollback()
        batch = _batch(session, batch_id)
        batch.status, batch.error, batch.finished_at = "failed", str(exc)[:2000], utcnow()
        session.commit()
        return {"batch": batch_id, "status": "failed", "error": batch.error}
    return {"batch": batch_id, "status": "done", "invoices": len(ids)}


def progress(batch: PrintBatch) -> dict:
    percent = 100 if batch.status == "done" else (
        int(batch.done * 100 / batch.total) if batch.total else 0)
    return {"id": batch.id, "status": batch.status, "total": batch.total, "done": batch.done,
            "percent": percent, "error": batch.error, "stalled": stalled(batch)}
