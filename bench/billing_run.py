"""The nightly billing run over 100k active subscriptions on PostgreSQL, against its floor.

    .venv/bin/python bench/billing_run.py [--subscriptions 100000] [--keep]

Creates (and at the end drops) the database `headend_bench_billing` on 127.0.0.1:5432, seeds one
tenant with the demo catalog and N active subscribers, each with one subscription starting on
the run date (so each owes one period: recurring fee, setup fee, inclusions, 6.25 % state tax
and the flat 911 fee) and its service instances, all with core multi-row inserts. Then times:
- the floor: one set-based INSERT .. SELECT (data-modifying CTEs) writing the same number of
  invoice, line, line-tax, billed-period, entry and leg rows into the real tables, with their
  constraints, indexes and ledger triggers (no Python, no per-row logic);
- the billing run (simple tax engine), and its rerun (nothing left to do).
Targets: run <= 10 s and <= 3x the floor; rerun <= 1 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import time

import sqlalchemy as sa
from headend.app import create_app
from headend.billing.models import Invoice, InvoiceLine, InvoiceLineTax
from headend.billing.run import bill_run
from headend.catalog.models import Account, Package
from headend.db import db
from headend.ledger.models import Leg
from headend.migrate import upgrade
from headend.tenancy.context import acting_as
from headend.tenancy.models import Tenant
from headend.tenancy.services import create_tenant
from headend.testing import app_settings
from seeding import SERVER, admin, seed_subscriptions

NAME = "headend_bench_billing"
RUN = dt.date(2026, 3, 1)


def seed(app, count: int) -> None:
    rnd = random.Random(11)
    with app.app_context(), acting_as(None):
        tenant_id = create_tenant(db.session, "Bench Billing ISP", "bench").id
        db.session.commit()
    with app.app_context(), acting_as(tenant_id):
        session = db.session
        seed_subscriptions(session, count, RUN, rnd)


FLOOR = """
WITH subs AS MATERIALIZED (
    SELECT s.id AS sub_id, s.subscriber_id, p.price_monthly + coalesce(p.setup_fee, 0) AS total,
           nextval(pg_get_serial_sequence('invoice', 'id')) AS invoice_id,
           nextval(pg_get_serial_sequence('journal_entry', 'id')) AS entry_id
      FROM subscription s JOIN package p ON p.id = s.package_id WHERE s.tenant_id = :bench),
entries AS (
    INSERT INTO journal_entry (id, tenant_id, entry_date, posted_at, source_type, source_id,
                               description, key, closed_books_override)
    SELECT entry_id, :floor, :run, now(), 'invoice', invoice_id, 'Invoice',
           'invoice-' || invoice_id || '-post', false FROM subs),
legs AS (
    INSERT INTO ledger_leg (tenant_id, entry_id, account_id, subscriber_id, debit, credit)
    SELECT :floor, entry_id, :account, CASE WHEN k = 1 THEN subscriber_id END,
           CASE WHEN k = 1 THEN :legs - 1 ELSE 0 END, CASE WHEN k = 1 THEN 0 ELSE 1 END
      FROM subs CROSS JOIN generate_series(1, :legs) AS k),
invoices AS (
    INSERT INTO invoice (id, tenant_id, number, subscriber_id, invoice_date, due_date, status,
                         source, currency, subtotal, tax_total, total, amount_paid, tax_status,
                         tax_attempts, posted_entry_id, posted_at, created_at)
    SELECT invoice_id, :floor, 'F-' || invoice_id, subscriber_id, :run, :run + 15, 'open',
           'billing_run', 'USD', total, 0, total, 0, 'ok', 0, entry_id, now(), now()
      FROM subs),
lines AS (
    INSERT INTO invoice_line (tenant_id, invoice_id, position, kind, description,
                              subscription_id, for_subscriber_id, period_start, period_end,
                              quantity, unit_price, amount, income_account_id, taxable, tax)
    SELECT :floor, invoice_id, k, 'recurring', 'Fiber 500', sub_id, subscriber_id, :run,
           :run + 31, 10000, total, total, :account, true, 0
      FROM subs CROSS JOIN generate_series(1, :lines) AS k
    RETURNING id, invoice_id, position),
line_taxes AS (
    INSERT INTO invoice_line_tax (tenant_id, line_id, jurisdiction, rate, amount)
    SELECT :floor, id, 'State sales tax', 6250000, 1
      FROM lines CROSS JOIN generate_series(1, :taxes) AS k WHERE position = 1),
periods AS (
    INSERT INTO billed_period (tenant_id, subscription_id, period_start, period_end, invoice_id)
    SELECT :floor, sub_id, :run, :run + 31, invoice_id FROM subs)
SELECT count(*) FROM subs
"""


def floor(app, per_invoice: dict) -> float:
    """The same rows as the run (per invoice: lines, line taxes, legs; one entry, one billed
    period), written by one set-based INSERT .. SELECT into the real tables - constraints,
    indexes and ledger triggers included - for a second tenant, committed."""
    with app.app_context():
        with acting_as(None):
            floor_tenant = create_tenant(db.session, "Floor ISP", "floor").id
            bench = db.session.scalar(sa.select(Tenant.id).where(Tenant.slug == "bench"))
            db.session.commit()
        with acting_as(bench):
            account = db.session.scalar(sa.select(Account.id).where(Account.code == "4000"))
            db.session.remove()
        with db.engine.connect() as conn:
            start = time.perf_counter()
            conn.execute(sa.text(FLOOR), {"run": RUN, "bench": bench, "floor": floor_tenant,
                                          "account": account, **per_invoice})
            conn.commit()
            return time.perf_counter() - start


def timed_run(app) -> tuple[float, int]:
    with app.app_context(), acting_as(None):
        start = time.perf_counter()
        (result,) = bill_run(db.session, RUN, tenant_slug="bench")
        elapsed = time.perf_counter() - start
        db.session.remove()
        return elapsed, result.invoices


def counts(app) -> tuple[int, int, int, int]:
    with app.app_context(), acting_as(None):
        s = db.session
        n = [s.scalar(sa.select(sa.func.count()).select_from(m))
             for m in (Invoice, InvoiceLine, InvoiceLineTax, Leg)]
        s.remove()
        return tuple(n)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    admin(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{NAME}"')
    app = create_app(overrides=app_settings(f"{SERVER}/{NAME}") | {"TESTING": False})
    upgrade(app)
    t0 = time.perf_counter()
    seed(app, args.subscriptions)
    print(f"seeded {args.subscriptions:,} subscriptions in {time.perf_counter() - t0:.1f} s")

    seconds, invoices = timed_run(app)
    rerun, again = timed_run(app)
    n_invoices, n_lines, n_taxes, n_legs = counts(app)
    floor_s = floor(app, {"lines": round(n_lines / n_invoices),
                          "taxes": round(n_taxes / n_invoices),
                          "legs": round(n_legs / n_invoices)})
    with app.app_context():
        packages = db.session.scalar(sa.select(sa.func.count()).select_from(Package))
        db.session.remove()
    print(f"\n{n_invoices:,} invoices, {n_lines:,} lines, {n_taxes:,} line taxes, "
          f"{n_legs:,} ledger legs "
          f"({packages} packages)")
    print(f"billing run   {seconds:7.2f} s   {invoices / seconds:9,.0f} invoices/s"
          f"{'' if seconds <= 10 else '  OVER TARGET (10 s)'}")
    print(f"rerun         {rerun:7.2f} s   ({again} invoices)"
          f"{'' if rerun <= 1 else '  OVER TARGET (1 s)'}")
    print(f"floor         {floor_s:7.2f} s   (set-based INSERT .. SELECT of the same rows)")
    ratio = seconds / floor_s
    print(f"run / floor   {ratio:7.2f} x{'' if ratio <= 3 else '  OVER TARGET (3x)'}")
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    if not args.keep:
        admin(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')


if __name__ == "__main__":
    main()
