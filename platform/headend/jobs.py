"""Background jobs: RQ queues when REDIS_URL is set, the same functions inline when it is not.

Jobs are module-level functions taking ids (never ORM objects) with deterministic job ids, so
enqueueing the same work twice (a scheduler tick repeated, an operator clicking twice) runs it
once while it is pending. They run inside an app context: the worker pushes one
(`headend worker`), inline calls reuse the caller's.

Inline runs call the function directly instead of `Queue(is_async=False)`: RQ marks a failed
synchronous job "failed" without raising, and a billing run that failed silently is worse than
one that fails loudly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, has_app_context

QUEUES = ("billing", "payments", "network", "documents")
# Jobs that are pending or running: enqueueing the same job id again is a no-op meanwhile.
_PENDING = ("queued", "started", "deferred", "scheduled")


@dataclass(frozen=True)
class Enqueued:
    """What `enqueue` did: `status` "finished" (inline), "queued", or the pending job's status."""

    job_id: str
    status: str
    result: Any = None


def redis_url(app: Flask | None = None) -> str | None:
    return (app or current_app).config.get("REDIS_URL")


def connection(app: Flask | None = None):
    """The Redis connection of the app, or None when jobs run inline."""
    url = redis_url(app)
    if not url:
        return None
    from redis import Redis

    return Redis.from_url(url)


def queue_name(name: str, app: Flask | None = None) -> str:
    """The RQ queue name: RQ_QUEUE_PREFIX (also put before job ids) lets tests, or two
    deployments, share one Redis."""
    if name not in QUEUES:
        raise ValueError(f"unknown queue {name!r}; expected one of {QUEUES}")
    return (app or current_app).config.get("RQ_QUEUE_PREFIX", "") + name


def queue(name: str, app: Flask | None = None):
    from rq import Queue

    return Queue(queue_name(name, app), connection=connection(app))


def enqueue(queue: str, func, *args, job_id: str, app: Flask | None = None,
            **kwargs) -> Enqueued:
    """Run `func(*args)` on `queue`: on Redis when configured, else right now, in-process."""
    app = app or current_app._get_current_object()
    if not redis_url(app):
        with app_context(app):
            return Enqueued(job_id, "finished", func(*args, **kwargs))
    from rq import Queue
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    redis = connection(app)
    rq_id = rq_job_id(job_id, app)
    with contextlib.suppress(NoSuchJobError):
        status = _value(Job.fetch(rq_id, connection=redis).get_status(refresh=False))
        if status in _PENDING:
            return Enqueued(job_id, status)
    job = Queue(queue_name(queue, app), connection=redis).enqueue(
        func, args=args, kwargs=kwargs, job_id=rq_id, job_timeout=3600,
        result_ttl=7 * 86400, failure_ttl=30 * 86400)
    return Enqueued(job_id, _value(job.get_status(refresh=False)))


def enqueue_in(queue: str, func, *args, delay: dt.timedelta, job_id: str,
               app: Flask | None = None) -> Enqueued | None:
    """Run `func(*args)` on `queue` after `delay` (a retry with backoff). Needs Redis and a
    worker started `--with-scheduler`; without Redis nothing is scheduled (None): in-process
    work is retried by the next event or the daily jobs instead of blocking a request."""
    app = app or current_app._get_current_object()
    if not redis_url(app):
        return None
    from rq import Queue

    job = Queue(queue_name(queue, app), connection=connection(app)).enqueue_in(
        delay, func, *args, job_id=rq_job_id(job_id, app), job_timeout=3600,
        result_ttl=7 * 86400, failure_ttl=30 * 86400)
    return Enqueued(job_id, _value(job.get_status(refresh=False)))


def _value(status) -> str:
    return getattr(status, "value", status)


def rq_job_id(job_id: str, app: Flask | None = None) -> str:
    """RQ 3 allows only letters, digits, "_" and "-" in job ids: `billing-run:3:2026-03-01`
    is stored as `billing-run_3_2026-03-01` (after RQ_QUEUE_PREFIX)."""
    return (app or current_app).config.get("RQ_QUEUE_PREFIX", "") + job_id.replace(":", "_")


@contextlib.contextmanager
def app_context(app: Flask | None = None):
    """The current app context, or a new one for the job (a worker child without one)."""
    if has_app_context() and (app is None or current_app._get_current_object() is app):
        yield current_app._get_current_object()
        return
    if app is None:
        from headend.app import create_app

        app = create_app()
    with app.app_context():
        yield app


# --- the daily work --------------------------------------------------------------------------

def daily_jobs(day: dt.date, app: Flask | None = None) -> list[Enqueued]:
    """Enqueue what runs once a day: every active tenant's dated subscription changes, then
    its billing run, then its collections (same queue, so a worker takes them in that order);
    autopay and the reconciliation of unsettled payments go on the payments queue, the network
    reconcile (drift repair) on the network queue."""
    from headend.billing.jobs import enqueue_billing_runs, enqueue_due_changes
    from headend.dunning.jobs import enqueue_daily as enqueue_collections
    from headend.network.jobs import enqueue_daily as enqueue_network
    from headend.payments.jobs import enqueue_reconciles

    return (enqueue_due_changes(day, app=app) + enqueue_billing_runs(day, app=app)
            + enqueue_collections(day, app=app) + enqueue_reconciles(day, app=app)
            + enqueue_network(day, app=app))


def hourly_jobs(app: Flask | None = None) -> list[Enqueued]:
    """Enqueue what runs every hour: the usage import, so that traffic counts on (close to) its
    day and a data cap is enforced within the hour it is passed; and an email delivery per
    tenant that sends mail, which retries what failed."""
    from headend.mail.jobs import enqueue_hourly as enqueue_mail
    from headend.network.jobs import enqueue_usage_imports

    return enqueue_usage_imports(app=app) + enqueue_mail(app=app)


def run_scheduler(app: Flask, *, once: bool = False, at_hour: int = 1, sleep=None,
                  now=dt.datetime.now) -> None:
    """Enqueue the daily and the hourly work now, then the hourly work at the top of every hour
    and the daily work again each day at `at_hour` (local time), until stopped.

    Deterministic job ids make a restarted scheduler harmless: a run already queued for the day
    (or hour) is not queued twice, and a finished run is a no-op when repeated (billed periods).
    """
    import time

    sleep = sleep or time.sleep
    daily_done = None
    while True:
        tick = now()
        with app.app_context():
            if daily_done is None or (tick.hour == at_hour and daily_done != tick.date()):
                daily_jobs(tick.date(), app)
                daily_done = tick.date()
            hourly_jobs(app)
        if once:
            return
        next_hour = tick.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
        sleep(max((next_hour - now()).total_seconds(), 1))


def run_worker(app: Flask, queues: list[str], *, burst: bool = False,
               with_scheduler: bool = False) -> None:
    """An RQ worker for `queues` whose jobs run inside this app's context.

    The forking worker runs each job in a child: the parent drops its pooled database
    connections first so that no child inherits (and shares) one.
    """
    from rq import Queue, Worker

    from headend.db import db

    redis = connection(app)
    if redis is None:
        raise RuntimeError("REDIS_URL is not set: jobs run inline, there is nothing to work on")
    names = [queue_name(q, app) for q in queues or QUEUES]
    with app.app_context():
        db.engine.dispose()
        worker = Worker([Queue(n, connection=redis) for n in names], connection=redis)
        worker.work(burst=burst, with_scheduler=with_scheduler)
