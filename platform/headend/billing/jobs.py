"""Billing jobs on the `billing` queue: the daily run, one job per tenant and day, and before
it the day's dated subscription changes (cancellations, hibernations starting and ending).

One job per tenant (not per subscription): the run itself chunks and commits set-based, and its
job id `billing-run:{tenant}:{date}` keeps a repeated enqueue from queueing the same day twice
(the changes job likewise: `subscription-changes:{tenant}:{date}`).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from flask import Flask

from headend.jobs import Enqueued, app_context, enqueue


def job_id(tenant_id: int, day: dt.date) -> str:
    return f"billing-run:{tenant_id}:{day.isoformat()}"


def run_billing(tenant_id: int, date_iso: str) -> dict:
    """The RQ job: post the invoices that waited for the tax engine (all of them, committing
    batch by batch, unless it is still down), then bill one tenant for one date; returns what
    it did. The scheduler enqueues it daily for every active tenant, so the retry runs daily."""
    from headend.billing.invoicing import retry_waiting_taxes
    from headend.billing.run import bill_run
    from headend.db import db
    from headend.tenancy.context import acting_as
    from headend.tenancy.models import Tenant

    with app_context():
        session = db.session
        with acting_as(tenant_id, actor_name="billing run"):
            retried = retry_waiting_taxes(session, after_batch=session.commit)
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


def _active_tenants(app: Flask | None) -> list[int]:
    from headend.db import db
    from headend.tenancy.context import acting_as
    from headend.tenancy.models import Tenant

    with app_context(app), acting_as(None):
        tenant_ids = db.session.scalars(
            sa.select(Tenant.id).where(Tenant.active.is_(True)).order_by(Tenant.id)).all()
        db.session.rollback()
    return list(tenant_ids)


def enqueue_billing_runs(day: dt.date, app: Flask | None = None) -> list[Enqueued]:
    """One billing-run job per active tenant (the scheduler's daily tick)."""
    return [enqueue_billing_run(t, day, app) for t in _active_tenants(app)]


def changes_job_id(tenant_id: int, day: dt.date) -> str:
    return f"subscription-changes:{tenant_id}:{day.isoformat()}"


def run_due_changes(tenant_id: int, date_iso: str) -> dict:
    """The RQ job: the statuses one tenant's dated changes call for on the date
    (`changes.apply_due_changes`), committed; returns the subscription ids by change."""
    from headend.billing.changes import apply_due_changes
    from headend.db import db
    from headend.tenancy.context import acting_as

    with app_context(), acting_as(tenant_id, actor_name="subscription changes"):
        session = db.session
        done = apply_due_changes(session, dt.date.fromisoformat(date_iso))
        session.commit()
        return {"cancelled": list(done.cancelled), "hibernating": list(done.hibernating),
                "resumed": list(done.resumed)}


def enqueue_due_changes(day: dt.date, app: Flask | None = None) -> list[Enqueued]:
    """One subscription-changes job per active tenant (queued before the billing runs)."""
    return [enqueue("billing", run_due_changes, t, day.isoformat(),
                    job_id=changes_job_id(t, day), app=app) for t in _active_tenants(app)]
