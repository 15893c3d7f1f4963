"""Rendering 1,000 invoices to PDF with the classic form through the `documents` queue on two
RQ worker processes (real Redis, PostgreSQL), against raw xhtml2pdf on the same HTML.

    .venv/bin/python bench/documents.py [--invoices 1000] [--chunk 50] [--keep]

Creates (and at the end drops) the database `headend_bench_documents` on 127.0.0.1:5432, seeds
one tenant with the demo catalog, N subscribers and a billing run (so N posted invoices with
recurring, setup and inclusion lines and their taxes), a logo and a marketing message. Then:
- the queue: N/chunk jobs on the documents queue (deterministic ids), each drawing its chunk of
  invoices as production does (headend.documents.render.render_many: batched reads, design,
  branding, the classic form), drained by two SimpleWorker processes;
- the floor: the HTML of the same invoices built beforehand (untimed), then only
  xhtml2pdf's CreatePDF on it, on two processes as well.
Per core is invoices per CPU second of the worker processes (the floor: of xhtml2pdf alone), so
other load on the machine does not count against it; wall-clock figures are printed too.
Targets: >= 35 invoices/s per core, and the queue <= 1.2x the floor.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import multiprocessing
import os
import random
import time
import uuid

import redis
import sqlalchemy as sa
from headend.app import create_app
from headend.billing.models import Invoice
from headend.billing.run import bill_run
from headend.branding.services import branding_for, save_branding
from headend.db import db
from headend.documents import data
from headend.documents.render import form_for, render_many
from headend.documents.services import current_design, save_design
from headend.jobs import enqueue, queue
from headend.migrate import upgrade
from headend.tenancy.context import acting_as
from headend.tenancy.services import create_tenant
from headend.testing import app_settings
from seeding import SERVER, admin, seed_subscriptions

NAME = "headend_bench_documents"
RUN = dt.date(2026, 3, 1)
REDIS = "redis://127.0.0.1:6379/0"
WORKERS = 2
PREFIX = f"bench-{uuid.uuid4().hex[:6]}-"


def make_app():
    return create_app(overrides=app_settings(f"{SERVER}/{NAME}") | {
        "TESTING": False, "REDIS_URL": REDIS, "RQ_QUEUE_PREFIX": PREFIX})


def logo() -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (240, 80), (31, 78, 121))
    ImageDraw.Draw(image).rectangle((20, 20, 220, 60), fill=(240, 165, 0))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def seed(app, count: int) -> tuple[int, list[int]]:
    with app.app_context(), acting_as(None):
        tenant_id = create_tenant(db.session, "Bench Documents ISP", "bench-docs").id
        db.session.commit()
    with app.app_context(), acting_as(tenant_id):
        seed_subscriptions(db.session, count, RUN, random.Random(7))
        save_branding(db.session, display_name="Bench Fiber", logo=logo(),
                      address="1 Main St\nSpringfield, IL 62701", phone="555-0100",
                      billing_name="Bench Fiber Billing", billing_address="PO Box 9")
        save_design(db.session, tenant_id, marketing_message="Refer a friend and get a month "
                    "free.", footer_text="Questions? Call 555-0100.")
        db.session.commit()
    with app.app_context(), acting_as(None):
        bill_run(db.session, RUN, tenant_slug="bench-docs")
    with app.app_context(), acting_as(tenant_id):
        ids = list(db.session.scalars(sa.select(Invoice.id).order_by(Invoice.id)))
        db.session.remove()
    return tenant_id, ids


def render_chunk(tenant_id: int, invoice_ids: list[int]) -> int:
    """The job: draw a chunk of invoices as production does; the bytes drawn."""
    with acting_as(tenant_id, actor_name="bench"):
        drawn = sum(len(pdf) for _, pdf in render_many(db.session, invoice_ids))
        db.session.remove()
        return drawn


def work(_: int) -> float:
    """One worker process: a SimpleWorker on the documents queue until it is empty; the CPU
    seconds it used."""
    from rq import SimpleWorker

    started = time.process_time()
    app = make_app()
    with app.app_context():
        documents = queue("documents", app)
        worker = SimpleWorker([documents], connection=documents.connection,
                              name=f"{PREFIX}{os.getpid()}")
        worker.work(burst=True, logging_level="WARNING")
    return time.process_time() - started


def timed_queue(app, tenant_id: int, ids: list[int], chunk: int) -> tuple[float, float, int]:
    # RQ takes no function of __main__: the job is this file imported under its module name
    from documents import render_chunk as job

    with app.app_context():
        for n, start in enumerate(range(0, len(ids), chunk)):
            enqueue("documents", job, tenant_id, ids[start:start + chunk],
                    job_id=f"bench-render:{n}", app=app)
        jobs = queue("documents", app).count
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        cpu = sum(pool.map(work, range(WORKERS)))
    elapsed = time.perf_counter() - started
    with app.app_context():
        failed = queue("documents", app).failed_job_registry.count
    if failed:
        raise SystemExit(f"{failed} of {jobs} jobs failed")
    return elapsed, cpu, jobs


_HTML: list[str] = []


def floor_render(index: int) -> float:
    """xhtml2pdf alone on one invoice's HTML, as the form calls it; the CPU seconds used."""
    from headend_form_classic.form import pdf_of

    started = time.process_time()
    pdf_of(_HTML[index])
    return time.process_time() - started


def timed_floor(app, tenant_id: int, ids: list[int]) -> tuple[float, float]:
    """Raw xhtml2pdf on the classic form's HTML of the same invoices (built untimed)."""
    with app.app_context(), acting_as(tenant_id):
        row = current_design(db.session)
        form = form_for(row.form_plugin_id)
        branding = data.branding_mapping(branding_for(db.session, tenant_id))
        documents = data.documents(db.session, ids, data.design_of(row))
        _HTML[:] = [form.html(d, branding) for d in documents]
        db.session.remove()
        db.engine.dispose()
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        cpu = sum(pool.map(floor_render, range(len(_HTML)), chunksize=25))
    return time.perf_counter() - started, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--invoices", type=int, default=1000)
    parser.add_argument("--chunk", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    admin(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{NAME}"')
    app = make_app()
    upgrade(app)
    t0 = time.perf_counter()
    tenant_id, ids = seed(app, args.invoices)
    print(f"seeded {len(ids):,} posted invoices in {time.perf_counter() - t0:.1f} s")
    with app.app_context():
        db.engine.dispose()  # the worker processes are forked: no inherited connections
    try:
        seconds, cpu, jobs = timed_queue(app, tenant_id, ids, args.chunk)
        floor_s, floor_cpu = timed_floor(app, tenant_id, ids)
    finally:
        conn = redis.Redis.from_url(REDIS)
        keys = list(conn.scan_iter(f"*{PREFIX}*"))
        if keys:
            conn.delete(*keys)
    n = len(ids)
    per_core, floor_per_core = n / cpu, n / floor_cpu
    print(f"\n{n:,} invoices, {jobs} jobs of {args.chunk}, {WORKERS} worker processes on "
          f"{os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f})")
    print(f"documents queue {seconds:7.2f} s wall  {n / seconds:7.1f} invoices/s   "
          f"{cpu:6.2f} CPU s  {per_core:6.1f} invoices/s per core"
          f"{'' if per_core >= 35 else '  UNDER TARGET (35/s per core)'}")
    print(f"floor           {floor_s:7.2f} s wall  {n / floor_s:7.1f} invoices/s   "
          f"{floor_cpu:6.2f} CPU s  {floor_per_core:6.1f} invoices/s per core "
          f"(xhtml2pdf alone on the same HTML)")
    ratio = cpu / floor_cpu
    print(f"queue / floor   {ratio:7.2f} x CPU   {seconds / floor_s:5.2f} x wall"
          f"{'' if ratio <= 1.2 else '  OVER TARGET (1.2x)'}")
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    if not args.keep:
        admin(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')


if __name__ == "__main__":
    main()
