"""Network jobs on the `network` queue: a tenant's reconcile, enqueued after a commit that
changed what the network should look like (a suspension, a restore, an activation, a package
change) and once a day for every tenant (drift made by hand is repaired even when nothing
happened in billing).

Requests come from billing's events (headend.network.listener) and from any ORM change of the
columns that shape the network (`_request_on_change`). Job ids carry the second
(`network-reconcile:{tenant}:{stamp}`): a burst of events in the same second is one job, and an
event while a reconcile is running queues the next one.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context
from sqlalchemy.orm import Session

from headend.db import utcnow
from headend.jobs import Enqueued, app_context, enqueue, enqueue_in, redis_url

_REQUESTED = "headend.network.reconcile"
RETRY_DELAYS = (60, 300, 900, 3600)  # seconds before each retry of a failed reconcile


def run_reconcile_job(tenant_id: int, attempt: int = 0) -> dict:
    """The RQ job: reconcile one tenant's targets, committed. A target that failed (a router
    unreachable) makes the job come back later, with a growing delay, until RETRY_DELAYS run
    out; the daily reconcile catches anything after that."""
    from headend.db import db
    from headend.network.reconcile import reconcile
    from headend.tenancy.context import acting_as

    with app_context(), acting_as(tenant_id, actor_name="network"):
        results = reconcile(db.session)
        db.session.commit()
        if any(r.status != "ok" for r in results) and attempt < len(RETRY_DELAYS):
            enqueue_in("network", run_reconcile_job, tenant_id, attempt + 1,
                       delay=dt.timedelta(seconds=RETRY_DELAYS[attempt]),
                       job_id=f"network-retry:{tenant_id}:{attempt + 1}")
        return {r.target: r.describe() for r in results}


def enqueue_reconcile(tenant_id: int, stamp: str | None = None,
                      app: Flask | None = None) -> Enqueued:
    stamp = stamp or utcnow().strftime("%Y%m%d%H%M%S")
    return enqueue("network", run_reconcile_job, tenant_id,
                   job_id=f"network-reconcile:{tenant_id}:{stamp}", app=app)


def enqueue_daily(day: dt.date, app: Flask | None = None) -> list[Enqueued]:
    from headend.billing.jobs import _active_tenants

    return [enqueue_reconcile(t, day.isoformat(), app=app) for t in _active_tenants(app)]


def run_usage_import_job(tenant_id: int) -> str:
    """The RQ job: import one tenant's usage from RADIUS accounting (commits per batch)."""
    from headend.db import db
    from headend.network.usage import import_usage
    from headend.tenancy.context import acting_as

    with app_context(), acting_as(tenant_id, actor_name="usage import"):
        return import_usage(db.session).describe()


def enqueue_usage_imports(app: Flask | None = None, stamp: str | None = None) -> list[Enqueued]:
    """A usage import per active tenant. Called with the daily jobs for now; hourly would keep
    each day's usage closer to its day (a delta counts on the day it is seen). The job id
    carries the hour, so a repeated tick within it queues nothing more."""
    from headend.billing.jobs import _active_tenants

    stamp = stamp or utcnow().strftime("%Y%m%d%H")
    return [enqueue("network", run_usage_import_job, t, job_id=f"usage-import:{t}:{stamp}",
                    app=app) for t in _active_tenants(app)]


def request_reconcile(session: Session, tenant_id: int) -> None:
    """Reconcile the tenant once this session commits (never before: a worker would read the
    state before the change)."""
    session.info.setdefault(_REQUESTED, set()).add(tenant_id)


def _watched() -> dict[type, frozenset[str] | None]:
    """The columns whose change alters what the network should look like (None: any)."""
    from headend.catalog.models import InternetProfile
    from headend.subscribers.models import ServiceInstance, Subscription

    return {Subscription: frozenset({"status", "package_id"}),
            ServiceInstance: frozenset({"status", "username", "password", "static_ip",
                                        "router_id", "download_override", "upload_override",
                                        "data_limit_gb_override"}),
            InternetProfile: None}


@sa.event.listens_for(Session, "after_flush")
def _request_on_change(session: Session, flush_context) -> None:
    """Any ORM change of a watched column asks for a reconcile of its tenant: an activation,
    a package or speed change, a cancellation or hibernation flipping on its day - the network
    follows billing without each service remembering to say so."""
    watched = _watched()
    for obj in (*session.new, *session.dirty, *session.deleted):
        columns = watched.get(type(obj), False)
        if columns is False:
            continue
        if columns is not None and obj in session.dirty and not any(
                sa.inspect(obj).attrs[c].history.has_changes() for c in columns):
            continue
        if obj.tenant_id is not None:
            request_reconcile(session, obj.tenant_id)


@sa.event.listens_for(Session, "after_commit")
def _enqueue_requested(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint committed (SQLAlchemy tells those too): wait for the real commit
    tenants = session.info.pop(_REQUESTED, None)
    if not tenants or not has_app_context():
        return
    app = current_app._get_current_object()
    for tenant_id in sorted(tenants):
        if redis_url(app):
            enqueue_reconcile(tenant_id, app=app)
        else:  # inline: in an app context (and so a session) of its own, this one is committing
            with app.app_context():
                enqueue_reconcile(tenant_id, app=app)


@sa.event.listens_for(Session, "after_soft_rollback")
def _forget_requested(session: Session, previous_transaction) -> None:
    """A whole transaction rolled back changed nothing (a savepoint's rollback, say a
    sequence row created meanwhile by someone else, keeps the requests of the rest)."""
    if previous_transaction.parent is None:
        session.info.pop(_REQUESTED, None)
