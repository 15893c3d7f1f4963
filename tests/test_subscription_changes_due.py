"""Dated changes happen on their date: the daily job's `apply_due_changes` flips cancellations,
hibernations and resumes on the right day, never before, once, audited."""

import datetime as dt
from decimal import Decimal as D

from headend.audit.models import AuditLog
from headend.billing.changes import apply_due_changes, cancel_subscription, hibernate, resume
from headend.billing.jobs import changes_job_id, job_id
from headend.db import db
from headend.jobs import daily_jobs
from headend.subscribers.models import Subscription
from headend.tenancy.context import acting_as
from sqlalchemy import func, select

from tests.invoicing_helpers import fixed_day_one, subscribe, subscriber, triple_play

JAN1, JAN11, FEB1, FEB15, MAR1 = (dt.date(2026, 1, 1), dt.date(2026, 1, 11),
                                  dt.date(2026, 2, 1), dt.date(2026, 2, 15), dt.date(2026, 3, 1))
DAY = dt.timedelta(days=1)


def _subscription(s, **package):
    package = triple_play(s, price_monthly=D("49.99"), setup_fee=None,
                          hibernation_allowed=True, **package)
    return subscribe(s, subscriber(s), package, start=JAN1, status="active")


def _statuses(s, *subs) -> list[str]:
    s.flush()
    return [s.scalar(select(Subscription.status).where(Subscription.id == x.id)) for x in subs]


def _audited_status_changes(s) -> int:
    return s.scalar(select(func.count(AuditLog.id)).where(
        AuditLog.entity == "subscription", AuditLog.action == "update"))


def test_dated_changes_flip_on_their_day_and_not_before(books):
    s = books
    fixed_day_one(s)
    cancelled, bounded, open_ended, early = (_subscription(s) for _ in range(4))
    cancel_subscription(s, cancelled.id, FEB1, today=JAN11)
    hibernate(s, bounded.id, FEB1, MAR1, today=JAN11)
    hibernate(s, open_ended.id, FEB1, None, today=JAN11)
    hibernate(s, early.id, FEB1, None, today=JAN11)
    subs = (cancelled, bounded, open_ended, early)
    assert _statuses(s, *subs) == ["active"] * 4  # future dates only stored

    assert apply_due_changes(s, FEB1 - DAY).cancelled == ()
    assert _statuses(s, *subs) == ["active"] * 4

    done = apply_due_changes(s, FEB1)
    assert (done.cancelled, set(done.hibernating), done.resumed) == (
        (cancelled.id,), {bounded.id, open_ended.id, early.id}, ())
    assert _statuses(s, *subs) == ["cancelled", "hibernating", "hibernating", "hibernating"]

    resume(s, early.id, FEB15, today=FEB1)  # a resume set for a later day
    assert _statuses(s, early) == ["hibernating"]
    assert apply_due_changes(s, FEB15 - DAY).resumed == ()
    assert apply_due_changes(s, FEB15).resumed == (early.id,)
    assert apply_due_changes(s, MAR1 - DAY).resumed == ()
    assert apply_due_changes(s, MAR1).resumed == (bounded.id,)
    assert _statuses(s, *subs) == ["cancelled", "active", "hibernating", "active"]


def test_running_twice_changes_nothing(books):
    s = books
    fixed_day_one(s)
    first, second = _subscription(s), _subscription(s)
    cancel_subscription(s, first.id, FEB1, today=JAN11)
    hibernate(s, second.id, FEB1, MAR1, today=JAN11)
    apply_due_changes(s, FEB1)
    audited = _audited_status_changes(s)
    again = apply_due_changes(s, FEB1)
    assert (again.cancelled, again.hibernating, again.resumed) == ((), (), ())
    assert _audited_status_changes(s) == audited
    assert _statuses(s, first, second) == ["cancelled", "hibernating"]


def test_a_cancellation_wins_over_a_hibernation_of_the_same_day(books):
    s = books
    fixed_day_one(s)
    sub = _subscription(s)
    hibernate(s, sub.id, FEB1, None, today=JAN11)
    cancel_subscription(s, sub.id, FEB1, today=JAN11)
    done = apply_due_changes(s, MAR1)  # a day missed: still applied, once
    assert (done.cancelled, done.hibernating) == ((sub.id,), ())
    assert _statuses(s, sub) == ["cancelled"]


def test_the_daily_jobs_apply_the_changes_before_the_run_and_audit_them(app, make_tenant):
    tenant = make_tenant("Dated ISP")
    with app.app_context(), acting_as(tenant):
        s = db.session
        fixed_day_one(s)
        leaving, resting = _subscription(s), _subscription(s)
        cancel_subscription(s, leaving.id, FEB1, today=JAN11)
        hibernate(s, resting.id, FEB1, MAR1, today=JAN11)
        s.commit()
        ids = leaving.id, resting.id
        s.remove()
    with app.app_context():
        jobs = daily_jobs(FEB1, app)
    by_id = {j.job_id: n for n, j in enumerate(jobs)}
    changes, run = by_id[changes_job_id(tenant, FEB1)], by_id[job_id(tenant, FEB1)]
    assert changes < run  # queued first: a worker applies them before billing
    assert jobs[changes].result == {"cancelled": [ids[0]], "hibernating": [ids[1]],
                                    "resumed": []}
    with app.app_context(), acting_as(tenant):
        s = db.session
        assert [s.get(Subscription, i).status for i in ids] == ["cancelled", "hibernating"]
        rows = s.scalars(select(AuditLog).where(
            AuditLog.entity == "subscription", AuditLog.actor_name == "subscription changes")
            .order_by(AuditLog.entity_id)).all()
        assert [(r.entity_id, r.before, r.after) for r in rows] == [
            (str(ids[0]), {"status": "active"}, {"status": "cancelled"}),
            (str(ids[1]), {"status": "active"}, {"status": "hibernating"})]
        s.remove()
    with app.app_context():
        again = daily_jobs(FEB1, app)  # the scheduler restarted: nothing more to do
    assert [j.result for j in again if j.job_id == changes_job_id(tenant, FEB1)] == [
        {"cancelled": [], "hibernating": [], "resumed": []}]
