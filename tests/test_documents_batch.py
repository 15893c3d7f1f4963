"""Batch print: a period's invoices (filtered) merged into one PDF by the print-batch job on the
documents queue - inline without Redis, and on the real Redis with a worker - with progress,
failures recorded on the batch; and the paper invoice list."""

from __future__ import annotations

import datetime as dt

import pytest
from headend.billing.invoicing import new_invoice
from headend.billing.models import Invoice
from headend.db import db, utcnow
from headend.documents import batch as batches
from headend.documents.jobs import enqueue_print_batch, job_id
from headend.documents.models import InvoiceDesign, PrintBatch
from headend.errors import ValidationFailed
from headend.jobs import queue, rq_job_id
from headend.plugins.interfaces import InvoiceForm
from headend.tenancy.context import acting_as
from pypdf import PdfWriter
from rq import SimpleWorker
from sqlalchemy import func, select, update
from sqlalchemy.orm import undefer

from tests.documents_helpers import (
    INVOICE_DATE,
    LINES,
    add_invoice,
    invoiced_tenant,
    page_count,
    pdf_text,
)

MARCH = {"date_from": "2026-03-01", "date_to": "2026-03-31"}


def _batch(app, tenant, batch_id) -> PrintBatch:
    with app.app_context(), acting_as(tenant):
        row = db.session.scalar(select(PrintBatch).where(PrintBatch.id == batch_id)
                                .options(undefer(PrintBatch.pdf)))
        db.session.expunge(row)
        return row


def _create(app, tenant, **criteria) -> int:
    with app.app_context(), acting_as(tenant):
        made = batches.create_batch(db.session, **(MARCH | criteria))
        db.session.commit()
        return made.id


@pytest.mark.parametrize(("criteria", "field"), [
    ({"date_from": "2026-13-01"}, "date_from"),
    ({"date_to": ""}, "date_to"),
    ({"date_from": "2026-04-01"}, "date_to"),
    ({"date_from": "2024-01-01"}, "date_to"),
    ({"status": "void"}, "status"),
    ({"paper_only": "yes"}, "paper_only"),
])
def test_bad_criteria_name_their_field_and_create_nothing(app, make_tenant, criteria, field):
    tenant = make_tenant("Criteria ISP")
    with app.app_context(), acting_as(tenant):
        with pytest.raises(ValidationFailed) as refused:
            batches.create_batch(db.session, **(MARCH | criteria))
        assert field in refused.value.errors
        db.session.rollback()
        assert db.session.scalar(select(func.count(PrintBatch.id))) == 0


def test_the_page_prints_a_period_inline_with_progress_and_download(app, make_tenant, login_as):
    tenant, ids = invoiced_tenant(app, make_tenant, "Print ISP", count=3)
    add_invoice(app, tenant, dt.date(2026, 2, 1))  # outside the period
    client = login_as(tenant, "Billing")
    assert client.get("/documents/print/").status_code == 200
    resp = client.post("/documents/print/", data=MARCH | {"status": "all"})
    assert resp.status_code == 302
    batch_id = int(resp.headers["Location"].rstrip("/").split("/")[-1])
    page = client.get(f"/documents/print/{batch_id}")
    assert page.status_code == 200 and b'id="batch-bar"' in page.data
    progress = client.get(f"/documents/print/{batch_id}/progress").get_json()
    assert progress | {"download": None} == {
        "id": batch_id, "status": "done", "total": 3, "done": 3, "percent": 100, "error": None,
        "stalled": False, "download": None}
    assert progress["download"] == f"/documents/print/{batch_id}/download"
    pdf = client.get(progress["download"])
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert page_count(pdf.data) == 3
    text = pdf_text(pdf.data)
    with app.app_context(), acting_as(tenant):
        numbers = [db.session.get(Invoice, i).number for i in ids]
    assert all(n in text for n in numbers)


def test_filters_paper_only_and_status(app, make_tenant):
    tenant, ids = invoiced_tenant(app, make_tenant, "Filter ISP", count=4, paper=(1, 3))
    with app.app_context(), acting_as(tenant):
        db.session.get(Invoice, ids[3]).status = "paid"
        db.session.commit()
        assert batches.invoice_ids(db.session, MARCH | {"status": "all",
                                                        "paper_only": True}) == [ids[1], ids[3]]
        assert batches.invoice_ids(db.session, MARCH | {"status": "open",
                                                        "paper_only": True}) == [ids[1]]
        assert batches.invoice_ids(db.session, MARCH | {"status": "paid"}) == [ids[3]]


def test_a_batch_with_no_invoices_finishes_empty(app, make_tenant, login_as):
    tenant = make_tenant("Empty ISP")
    batch_id = _create(app, tenant)
    with app.app_context():
        assert enqueue_print_batch(tenant, batch_id).result["invoices"] == 0
    done = _batch(app, tenant, batch_id)
    assert (done.status, done.total, done.pdf) == ("done", 0, None)
    resp = login_as(tenant).get(f"/documents/print/{batch_id}/download")
    assert resp.status_code == 302


def test_progress_is_committed_as_the_job_goes(app, make_tenant, monkeypatch):
    monkeypatch.setattr(batches, "PROGRESS_EVERY", 2)
    tenant, _ = invoiced_tenant(app, make_tenant, "Progress ISP", count=5)
    batch_id = _create(app, tenant)
    seen = []

    original = PdfWriter.append

    def watch(self, *args, **kwargs):
        with app.app_context(), acting_as(tenant):  # another connection: committed rows only
            seen.append(db.session.scalar(select(PrintBatch.done)
                                          .where(PrintBatch.id == batch_id)))
            db.session.remove()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PdfWriter, "append", watch)
    with app.app_context():
        enqueue_print_batch(tenant, batch_id)
    assert seen == [0, 0, 2, 2, 4]
    assert _batch(app, tenant, batch_id).done == 5


class BrokenForm(InvoiceForm):
    plugin_id = "broken_form"
    name = "Broken"

    def render(self, invoice, branding):
        raise ValueError("the printer caught fire")


class BrokenPlugin:
    from headend import hookimpl

    @hookimpl
    def register_invoice_forms(self):
        return [BrokenForm()]


def test_a_failure_is_recorded_on_the_batch(app, make_tenant, login_as):
    pm = app.extensions["headend_plugins"]
    plugin = BrokenPlugin()
    pm.register(plugin, name="broken-form")
    try:
        tenant, _ = invoiced_tenant(app, make_tenant, "Broken ISP", count=2)
        with app.app_context(), acting_as(tenant):
            db.session.add(InvoiceDesign(form_plugin_id="broken_form"))
            db.session.commit()
        batch_id = _create(app, tenant)
        with app.app_context():
            assert enqueue_print_batch(tenant, batch_id).result["status"] == "failed"
    finally:
        pm.unregister(plugin)
    failed = _batch(app, tenant, batch_id)
    assert failed.status == "failed" and "the printer caught fire" in failed.error
    assert failed.pdf is None and failed.finished_at is not None
    progress = login_as(tenant).get(f"/documents/print/{batch_id}/progress").get_json()
    assert progress["status"] == "failed" and "printer caught fire" in progress["error"]


def test_the_merged_pdf_holds_the_logo_once(app, make_tenant):
    import io
    import random

    from headend.branding.services import save_branding
    from headend.documents.render import invoice_pdf
    from PIL import Image

    tenant, ids = invoiced_tenant(app, make_tenant, "Logo ISP", count=6)
    noise = random.Random(5)
    logo = io.BytesIO()  # incompressible: ~60 KB as PNG
    Image.frombytes("RGB", (150, 130), bytes(noise.randrange(256)
                                             for _ in range(150 * 130 * 3))).save(logo, "PNG")
    with app.app_context(), acting_as(tenant):
        save_branding(db.session, logo=logo.getvalue())
        db.session.commit()
    batch_id = _create(app, tenant)
    with app.app_context():
        enqueue_print_batch(tenant, batch_id)
    done = _batch(app, tenant, batch_id)
    with app.app_context(), acting_as(tenant):
        one = invoice_pdf(db.session, ids[0])
    assert page_count(done.pdf) == 6 and len(one) > 20_000  # the logo is most of an invoice
    assert len(done.pdf) < 2 * len(one), "six invoices share one copy of the logo"


def test_a_batch_whose_job_was_lost_shows_stalled_and_runs_again(app, make_tenant, login_as):
    tenant, _ = invoiced_tenant(app, make_tenant, "Lost ISP", count=2)
    batch_id = _create(app, tenant)
    quiet = utcnow() - batches.STALLED_AFTER - dt.timedelta(minutes=1)
    with app.app_context(), acting_as(tenant):  # a worker took it, then was killed
        db.session.execute(update(PrintBatch).values(status="running", total=2, done=1,
                                                     progress_at=quiet))
        db.session.commit()
    client = login_as(tenant, "Billing")
    assert client.get(f"/documents/print/{batch_id}/progress").get_json()["stalled"] is True
    page = client.get(f"/documents/print/{batch_id}").get_data(as_text=True)
    assert 'id="batch-again"' in page and "its job was lost" in page
    assert "stalled" in client.get("/documents/print/").get_data(as_text=True)
    assert login_as(tenant, "ReadOnly").post(
        f"/documents/print/{batch_id}/again").status_code in (302, 403)
    assert _batch(app, tenant, batch_id).status == "running"
    resp = client.post(f"/documents/print/{batch_id}/again")
    assert resp.status_code == 302
    done = _batch(app, tenant, batch_id)
    assert (done.status, done.done, done.total) == ("done", 2, 2) and page_count(done.pdf) == 2
    again = client.post(f"/documents/print/{batch_id}/again", follow_redirects=True)
    assert "only a failed batch" in again.get_data(as_text=True)


def test_a_batch_a_live_job_is_building_is_not_built_twice(app, make_tenant):
    tenant, _ = invoiced_tenant(app, make_tenant, "Busy ISP", count=1)
    batch_id = _create(app, tenant)
    with app.app_context(), acting_as(tenant):
        db.session.execute(update(PrintBatch).values(status="running", progress_at=utcnow()))
        db.session.commit()
        assert batches.run_batch(db.session, batch_id) == {
            "batch": batch_id, "status": "running", "skipped": True}
        with pytest.raises(ValidationFailed) as refused:
            batches.run_again(db.session, batch_id)
        assert "status" in refused.value.errors
        db.session.rollback()
    assert _batch(app, tenant, batch_id).pdf is None


def test_on_redis_a_worker_builds_the_batch(app, make_tenant, login_as, on_redis):
    tenant, _ = invoiced_tenant(app, make_tenant, "Queued ISP", count=3)
    client = login_as(tenant, "Billing")
    resp = client.post("/documents/print/", data=MARCH | {"status": "open"})
    batch_id = int(resp.headers["Location"].rstrip("/").split("/")[-1])
    assert client.get(f"/documents/print/{batch_id}/progress").get_json()["status"] == "queued"
    with app.app_context():
        again = enqueue_print_batch(tenant, batch_id)
        documents = queue("documents")
        assert again.status == "queued" and documents.count == 1  # the deterministic id
        worker = SimpleWorker([documents], connection=documents.connection,
                              name=f"{on_redis}worker")
        assert worker.work(burst=True)
        job = documents.fetch_job(rq_job_id(job_id(batch_id)))
        assert job.get_status() == "finished"
        assert job.return_value() == {"batch": batch_id, "status": "done", "invoices": 3}
    progress = client.get(f"/documents/print/{batch_id}/progress").get_json()
    assert progress["status"] == "done" and progress["done"] == progress["total"] == 3
    assert page_count(client.get(progress["download"]).data) == 3


def test_another_tenants_batch_is_404(app, make_tenant, login_as):
    tenant, _ = invoiced_tenant(app, make_tenant, "Own ISP", count=1)
    other, _ = invoiced_tenant(app, make_tenant, "Foreign ISP", count=1)
    theirs = _create(app, other)
    with app.app_context():
        enqueue_print_batch(other, theirs)
    client = login_as(tenant)
    for url in (f"/documents/print/{theirs}", f"/documents/print/{theirs}/progress",
                f"/documents/print/{theirs}/download"):
        assert client.get(url).status_code == 404, url


def test_the_paper_invoice_list(app, make_tenant, login_as):
    tenant, ids = invoiced_tenant(app, make_tenant, "Paper ISP", count=3, paper=(0, 2))
    newer = INVOICE_DATE + dt.timedelta(days=3)
    with app.app_context(), acting_as(tenant):
        first = db.session.get(Invoice, ids[0])
        latest = new_invoice(db.session, first.subscriber_id, newer, LINES, today=newer)
        db.session.commit()
        latest_id, latest_number = latest.id, latest.number
        paper_two = db.session.get(Invoice, ids[2]).number
    other, _ = invoiced_tenant(app, make_tenant, "Other paper ISP", count=1, paper=(0,))
    body = login_as(tenant, "ReadOnly").get("/documents/paper/").get_data(as_text=True)
    assert body.count('class="paper-subscriber"') == 2
    assert "Paper0" in body and "Paper2" in body and "Doc1" not in body
    assert latest_number in body and paper_two in body
    assert f"/documents/invoice/{latest_id}.pdf" in body
