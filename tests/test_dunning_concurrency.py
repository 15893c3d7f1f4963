"""Two collections jobs at once on the same tenant and day: one fee, one suspension, one
write-off, one notice - the unique keys decide, the loser skips."""

from __future__ import annotations

import threading
from decimal import Decimal as D

import pytest
from headend.billing.models import Invoice
from headend.db import db
from headend.dunning.collect import CHUNK, run_collections
from headend.dunning.models import AppliedFee, Notice, SubscriberCollection, WriteOff
from headend.ledger.models import JournalEntry
from headend.subscribers.models import Subscriber
from headend.tenancy.context import acting_as
from sqlalchemy import func, select

from tests.dunning_helpers import active_subscriber, day, owe, rules


def _race(app, tenant, work, n=2):
    barrier, errors, results = threading.Barrier(n), [], []

    def run():
        try:
            with app.app_context(), acting_as(tenant):
                barrier.wait()
                results.append(work(db.session))
                db.session.commit()
                db.session.remove()
        except Exception as exc:  # reported below, a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck"
    assert errors == []
    return results


@pytest.mark.postgresql_only  # SQLite refuses a second writer ("database is locked")
@pytest.mark.parametrize("chunk, commit", [(1, True), (2, True), (2, False), (CHUNK, True)])
def test_two_collections_runs_at_once_do_everything_once(app, make_tenant, monkeypatch, chunk,
                                                         commit):
    """Chunks committed one by one (as the job does) or only at the end of the run."""
    import headend.dunning.collect as collect

    monkeypatch.setattr(collect, "CHUNK", chunk)
    t = make_tenant("Race Fiber", "race-fiber")
    with app.app_context(), acting_as(t):
        s = db.session
        rules(s, late_fee_days=5, late_fee_amount=D("10"), grace_days=10,
              writeoff_enabled=True, writeoff_threshold=D("100"), writeoff_days=30)
        late = [active_subscriber(s) for _ in range(3)]
        for sub in late:
            owe(s, sub, "70.00")
        gone = active_subscriber(s)
        owe(s, gone, "40.00")
        gone.status = "archived"
        s.flush()
        s.scalar(select(SubscriberCollection).where(
            SubscriberCollection.subscriber_id == gone.id)).archived_on = day(-30)
        s.commit()
        late_ids = sorted(sub.id for sub in late)

    results = _race(app, t, lambda s: run_collections(
        s, day(11), after_step=s.commit if commit else None))
    assert sum(r.late_fees for r in results) == 3
    assert sorted(sum((r.suspended for r in results), [])) == late_ids
    assert sum(r.write_offs for r in results) == 1

    with app.app_context(), acting_as(t):
        s = db.session
        assert s.scalar(select(func.count(AppliedFee.id))) == 3
        assert s.scalar(select(func.count(Invoice.id)).where(Invoice.source == "late_fee")) == 3
        assert s.scalar(select(func.count(WriteOff.id))) == 1
        assert s.scalar(select(func.count(JournalEntry.id)).where(
            JournalEntry.source_type == "write_off")) == 1
        assert s.scalar(select(func.count(Notice.id)).where(Notice.kind == "suspended")) == 3
        assert sorted(s.scalars(select(Subscriber.id).where(
            Subscriber.status == "suspended"))) == late_ids
