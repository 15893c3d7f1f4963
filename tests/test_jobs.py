"""Jobs: inline without Redis, on the real Redis (127.0.0.1:6379) with a worker, and the daily
scheduler tick - each with the billing run as the job."""

from __future__ import annotations

import datetime as dt

import pytest
from headend.billing.jobs import enqueue_billing_run, job_id, run_billing
from headend.db import db
from headend.jobs import enqueue, queue, rq_job_id, run_scheduler, run_worker
from headend.tenancy.context import acting_as
from rq import SimpleWorker

from tests.billing_run_helpers import RUN, fingerprint, tenant_with_subscribers


def _invoices(app, tenant) -> int:
    with app.app_context(), acting_as(tenant):
        count = fingerprint(db.session)["invoices"]
        db.session.remove()
        return count


def test_without_redis_a_job_runs_inline_and_returns_its_result(app, make_tenant):
    tenant = tenant_with_subscribers(app, make_tenant, "Inline ISP", 3)
    assert not app.config.get("REDIS_URL")
    with app.app_context():
        done = enqueue_billing_run(tenant, RUN)
    assert done.job_id == f"billing-run:{tenant}:{RUN}" == job_id(tenant, RUN)
    assert done.status == "finished"
    assert done.result == {"tenant": "inline-isp", "invoices": 3, "periods": 3,
                           "total": 3 * 6600, "waiting": 0, "tax_retried": 0}
    assert _invoices(app, tenant) == 3


def test_an_inline_job_that_fails_raises(app):
    def boom():
        raise RuntimeError("failed loudly")

    with app.app_context(), pytest.raises(RuntimeError, match="failed loudly"):
        enqueue("billing", boom, job_id="boom")


def test_on_redis_the_job_is_queued_once_and_a_worker_runs_it(app, make_tenant, on_redis):
    tenant = tenant_with_subscribers(app, make_tenant, "Queued ISP", 4)
    with app.app_context():
        first = enqueue_billing_run(tenant, RUN)
        again = enqueue_billing_run(tenant, RUN)
        billing = queue("billing")
        assert billing.name == f"{on_redis}billing"
        assert first.status == again.status == "queued" and first.job_id == again.job_id
        assert billing.count == 1  # the deterministic id kept the second one out
        assert _invoices(app, tenant) == 0
        worker = SimpleWorker([billing], connection=billing.connection,
                              name=f"{on_redis}worker")
        assert worker.work(burst=True)
        job = billing.fetch_job(rq_job_id(first.job_id))
        assert job.get_status() == "finished"
        assert job.return_value()["invoices"] == 4
    assert _invoices(app, tenant) == 4


def test_the_scheduler_tick_queues_every_tenant_and_the_forking_worker_bills_them(
        app, make_tenant, on_redis):
    tenants = [tenant_with_subscribers(app, make_tenant, f"Tick ISP {n}", 2) for n in (1, 2)]
    at_run = lambda: dt.datetime.combine(RUN, dt.time(1, 5))  # noqa: E731
    run_scheduler(app, once=True, now=at_run)
    run_scheduler(app, once=True, now=at_run)  # a restarted scheduler queues nothing new
    with app.app_context():
        # Per tenant: the dated subscription changes, the billing run, the collections.
        assert queue("billing").count == 6
    run_worker(app, ["billing"], burst=True)
    assert [_invoices(app, t) for t in tenants] == [2, 2]


def test_the_job_function_is_a_plain_call_too(app, make_tenant):
    tenant = tenant_with_subscribers(app, make_tenant, "Direct ISP", 1)
    with app.app_context():
        assert run_billing(tenant, RUN.isoformat())["invoices"] == 1
        assert run_billing(tenant, RUN.isoformat())["invoices"] == 0
