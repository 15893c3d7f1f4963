"""Billing jobs on the `billing` queue: the daily run, one job per tenant and day.

One job per tenant (not per subscription): the run itself chunks and commits set-based, and its
job id `billing-run:{tenant}:{date}` keeps a repeated enqueue from queueing the same day twice.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from flask import Flask

from headend.jobs import Enqueued, app_context, enqueue


def job_id(tenant_id: int, day: dt.date) -> str:
    return f"billing-run:{tenant_id}:{day.isoformat()}"


def run_billing(tenant_id: int, date_iso: str) -> dict:
    """The RQ job: post yesterday's invoices that waited for the tax engine, then bill one
    tenant for one date; returns what it did."""
    from headend.billing.invoicing import retry_waiting_taxes
    from headend.billing.run import bill_run
    from headend.db import db
    from headend.tenancy.context import acting_as
    from headend.tenancy.models import Tenant

    with app_context():
        session = db.session
        with acting_as(tenant_id, actor_name="billing run"):
            retried = retry_waiting_taxes(session)
            session.commit()
        with acting_as(None, actor_name="billing run"):
            slug = session.scalar(sa.select(Tenant.slug).where(Tenant.id == tenant_id))
            if slug is None:
                raise LookupError(f"no tenant {tenant_id}")
            (result,) = bill_run(session, dt.date.fromisoformat(date_iso), tenant_slug=slug)
        return {"tenant": slug, "invoices": result.invoices, "periods": result.periods,
                "total": result.total, "waiting": result.waiting, "tax_retried": retried}


def enqueue_billing_run(tenant_id: int, day: dt.date, app: Flask | None = None) -> Enqueued:
    return enqueue("billing", run_billing, tenant_id, day.isoformat(),
                   job_id=job_id(tenant_id, day), app=app)


def enqueue_billing_runs(day: dt.date, app: Flask | None = None) -> list[Enqueued]:
    """One billing-run job per active tenant (the scheduler's daily tick)."""
    from headend.db import db
    from headend.tenancy.context import acting_as
    from headend.tenancy.models import Tenant

    with app_context(app), acting_as(None):
        tenant_ids = db.session.scalars(
            sa.select(Tenant.id).where(Tenant.active.is_(True)).order_by(Tenant.id)).all()
        db.session.rollback()
    return [enqueue_billing_run(t, day, app) for t in tenant_ids]
