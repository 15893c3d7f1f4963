"""Collections jobs: the daily collections run on the `billing` queue (after the billing run,
so today's invoices are there) and autopay on the `payments` queue; one job per tenant and
day, job ids `collections:{tenant}:{date}` and `autopay:{tenant}:{date}`."""

from __future__ import annotations

import datetime as dt

from flask import Flask

from headend.jobs import Enqueued, app_context, enqueue


def run_collections_job(tenant_id: int, date_iso: str) -> dict:
    """The RQ job: one tenant's collections for the date, committed per chunk of effects (a
    crash keeps the chunks done; the rerun does the rest). Today's autopay charges come first,
    here too: workers take the `billing` queue before `payments`, and a charge that succeeds
    today must spare the fee and the suspension (attempts are keyed per invoice and number, so
    the autopay job on the payments queue charges nothing twice)."""
    from headend.db import db
    from headend.dunning.autopay import run_autopay
    from headend.dunning.collect import run_collections
    from headend.tenancy.context import acting_as

    day = dt.date.fromisoformat(date_iso)
    with app_context(), acting_as(tenant_id, actor_name="collections"):
        session = db.session
        run_autopay(session, day, after_each=session.commit)
        session.commit()
        result = run_collections(session, day, after_step=session.commit)
        session.commit()
        return {"write_offs": result.write_offs, "late_fees": result.late_fees,
                "rebill_fees": result.rebill_fees, "notices": result.notices,
                "suspended": result.suspended}


def run_autopay_job(tenant_id: int, date_iso: str) -> dict:
    """The RQ job: charge one tenant's due autopay invoices, committing after each attempt."""
    from headend.db import db
    from headend.dunning.autopay import run_autopay
    from headend.tenancy.context import acting_as

    with app_context(), acting_as(tenant_id, actor_name="autopay"):
        session = db.session
        result = run_autopay(session, dt.date.fromisoformat(date_iso),
                             after_each=session.commit)
        session.commit()
        return {"attempts": result.attempts, "processed": result.processed,
                "failed": result.failed, "charged": result.charged}


def enqueue_daily(day: dt.date, app: Flask | None = None) -> list[Enqueued]:
    """Per active tenant: autopay (payments queue) and collections (billing queue, behind the
    billing run; it runs any autopay not done yet first)."""
    from headend.billing.jobs import _active_tenants

    done = []
    for tenant_id in _active_tenants(app):
        done.append(enqueue("payments", run_autopay_job, tenant_id, day.isoformat(),
                            job_id=f"autopay:{tenant_id}:{day.isoformat()}", app=app))
        done.append(enqueue("billing", run_collections_job, tenant_id, day.isoformat(),
                            job_id=f"collections:{tenant_id}:{day.isoformat()}", app=app))
    return done
