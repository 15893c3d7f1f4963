"""Payments jobs on the `payments` queue: once a day per tenant, settle the payments and
refunds whose outcome the gateway did not give at once (`reconcile_undefined`).

Job id `payments-reconcile:{tenant}:{date}`: a repeated enqueue of the same day runs once.
"""

from __future__ import annotations

import datetime as dt

from flask import Flask

from headend.jobs import Enqueued, app_context, enqueue


def job_id(tenant_id: int, day: dt.date) -> str:
    return f"payments-reconcile:{tenant_id}:{day.isoformat()}"


def run_reconcile(tenant_id: int) -> dict:
    """The RQ job: reconcile one tenant's unsettled payments and refunds, committed."""
    from headend.db import db
    from headend.payments.services import reconcile_undefined
    from headend.tenancy.context import acting_as

    with app_context(), acting_as(tenant_id, actor_name="payments reconciliation"):
        done = reconcile_undefined(db.session, after_each=db.session.commit)
        db.session.commit()
        return done


def enqueue_reconciles(day: dt.date, app: Flask | None = None) -> list[Enqueued]:
    """One reconciliation job per active tenant (the scheduler's daily tick)."""
    from headend.billing.jobs import _active_tenants

    return [enqueue("payments", run_reconcile, t, job_id=job_id(t, day), app=app)
            for t in _active_tenants(app)]
