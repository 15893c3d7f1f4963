"""The daily collections job, day by day: fees, notices, suspension, restore, promises to pay,
write-off - hand-computed, once only on reruns."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest
from headend.billing.memos import credit_memo
from headend.billing.models import Invoice
from headend.dunning.collect import fee_amount, run_collections
from headend.dunning.models import AppliedFee, Notice, SubscriberCollection, WriteOff
from headend.dunning.services import (
    after_payment,
    cancel_action,
    collection_settings,
    schedule_action,
    update_subscriber_collection,
)
from headend.errors import ValidationFailed
from headend.ledger.services import account_history, subscriber_balance
from sqlalchemy import func, select

from tests.dunning_helpers import (
    MAR16,
    ServiceListener,
    active_subscriber,
    day,
    legs_of,
    owe,
    rules,
)


def _fees(s, kind="late_fee"):
    return s.scalars(select(AppliedFee).where(AppliedFee.kind == kind)
                     .order_by(AppliedFee.id)).all()


def test_a_fixed_late_fee_is_charged_once_after_the_configured_days(books):
    s = books
    rules(s, late_fee_days=5, late_fee_kind="fixed", late_fee_amount=D("10.00"))
    sub = active_subscriber(s)
    invoice = owe(s, sub, "100.00")
    assert invoice.due_date == MAR16

    assert run_collections(s, day(4)).late_fees == 0
    result = run_collections(s, day(5))
    assert (result.late_fees, result.fees_total) == (1, 1000)
    (fee,) = _fees(s)
    assert (fee.invoice_id, fee.amount, fee.applied_on) == (invoice.id, 1000, day(5))
    charged = fee.fee_invoice
    assert (charged.status, charged.source, charged.total, charged.invoice_date) == \
        ("open", "late_fee", 1000, day(5))
    assert charged.lines[0].description == f"Late fee for invoice {invoice.number}"
    assert legs_of(s, "invoice", charged.id) == [("1200", 1000, 0, sub.id),
                                                ("4500", 0, 1000, None)]
    assert subscriber_balance(s, sub.id) == 11000

    for again in (day(5), day(6), day(30)):  # reruns: the fee is never charged twice
        assert run_collections(s, again).late_fees == 0
    assert len(_fees(s)) == 1
    history = account_history(s, sub.id)
    assert [(h.description, h.debit, h.balance) for h in history] == [
        (f"Invoice {invoice.number}", 10000, 10000),
        (f"Invoice {charged.number}: Late fee for invoice {invoice.number}", 1000, 11000)]


@pytest.mark.parametrize("rate, maximum, expected", [
    ("1.5", None, 185),   # 1.5 % of 123.45 = 1.85175 -> 1.85 (half-up)
    ("1.5", "1.00", 100),  # capped
    ("2.5", None, 309),   # 3.08625 -> 3.09
])
def test_a_percent_late_fee_is_a_share_of_the_balance_due_capped(books, rate, maximum,
                                                                 expected):
    s = books
    rules(s, late_fee_days=1, late_fee_kind="percent", late_fee_amount=D(rate),
          late_fee_max=D(maximum) if maximum else None)
    sub = active_subscriber(s)
    owe(s, sub, "123.45")
    run_collections(s, day(1))
    (fee,) = _fees(s)
    assert fee.amount == expected == fee.fee_invoice.total


def test_a_percent_fee_counts_only_what_is_still_due(books):
    s = books
    settings = rules(s, late_fee_days=1, late_fee_kind="percent", late_fee_amount=D("1.5"))
    sub = active_subscriber(s)
    invoice = owe(s, sub, "123.45")
    credit_memo(s, sub.id, 2345, "Goodwill", MAR16, invoice_id=invoice.id)
    assert invoice.balance_due == 10000
    assert fee_amount(settings, "late_fee", invoice.balance_due, "USD") == 150
    run_collections(s, day(1))
    assert _fees(s)[0].amount == 150


def test_the_rebilling_fee_follows_its_own_days_and_income_account(books):
    s = books
    rules(s, late_fee_days=5, late_fee_amount=D("10"), rebill_fee_days=20,
          rebill_fee_amount=D("4.50"))
    sub = active_subscriber(s)
    owe(s, sub, "60.00")
    run_collections(s, day(19))
    assert (len(_fees(s)), _fees(s, "rebill_fee")) == (1, [])
    assert run_collections(s, day(20)).rebill_fees == 1
    (rebill,) = _fees(s, "rebill_fee")
    assert rebill.amount == 450
    assert legs_of(s, "invoice", rebill.fee_invoice_id) == [("1200", 450, 0, sub.id),
                                                           ("4700", 0, 450, None)]
    run_collections(s, day(21))
    assert len(_fees(s, "rebill_fee")) == 1
    # fee invoices themselves never draw fees, even when they fall overdue
    run_collections(s, day(80))
    assert len(_fees(s)) == 1 and len(_fees(s, "rebill_fee")) == 1


def test_no_late_fees_subscribers_and_promises_to_pay_skip_the_fee(books):
    s = books
    rules(s, late_fee_days=5, late_fee_amount=D("10"))
    exempt, promised = active_subscriber(s), active_subscriber(s)
    update_subscriber_collection(s, exempt.id, no_late_fees=True)
    owe(s, exempt, "50.00")
    owe(s, promised, "50.00")
    schedule_action(s, promised.id, "late_fee", day(9), day(3), reason="pays on the 25th")
    run_collections(s, day(5))
    assert _fees(s) == []
    run_collections(s, day(9))  # the promise has run out
    assert [f.fee_invoice.subscriber_id for f in _fees(s)] == [promised.id]


def _status(s, sub):
    s.refresh(sub)
    return sub.status, [x.status for x in sub.subscriptions]


def test_the_documented_sequence_due_fee_notice_suspension_restore(app, books):
    """Due MAR16, late fee after 5 days, notice 3 days before suspension, suspended more than
    10 days past due, restored the moment a payment brings it within the grace amount."""
    s = books
    pm = app.extensions["headend_plugins"]
    listener = ServiceListener()
    pm.register(listener, name="service-listener")
    try:
        rules(s, late_fee_days=5, late_fee_amount=D("10"), grace_days=10,
              grace_amount=D("5.00"), suspension_notice_days=3)
        sub = active_subscriber(s)
        (subscription,) = sub.subscriptions
        invoice = owe(s, sub, "100.00")
        timeline = {}
        for n in range(0, 13):
            r = run_collections(s, day(n))
            timeline[n] = (r.late_fees, r.notices, len(r.suspended))
        assert {n: t for n, t in timeline.items() if t != (0, 0, 0)} == {
            5: (1, 0, 0), 8: (0, 1, 0), 11: (0, 0, 1)}
        assert _status(s, sub) == ("suspended", ["suspended"])
        notices = s.scalars(select(Notice).order_by(Notice.id)).all()
        assert [(n.kind, n.key) for n in notices] == [
            ("upcoming_suspension", f"upcoming_suspension:{sub.id}:{day(11)}"),
            ("suspended", f"suspended:{sub.id}:{day(11)}")]
        assert listener.events == [("suspended", subscription.id)]
        row = s.scalar(select(SubscriberCollection))
        assert (row.suspended_on, row.suspended_subscription_ids) == (day(11),
                                                                     [subscription.id])

        # a payment leaving 6.00 overdue (> 5.00 grace amount) does not restore
        credit_memo(s, sub.id, 9400, "Paid in part", day(12), invoice_id=invoice.id)
        assert after_payment(s, sub.id, day(12)) == []
        assert _status(s, sub)[0] == "suspended"
        # the rest but 1.00 (the fee is not yet due): within grace, restored at once
        credit_memo(s, sub.id, 500, "Paid", day(12), invoice_id=invoice.id)
        assert after_payment(s, sub.id, day(12)) == [subscription.id]
        assert _status(s, sub) == ("active", ["active"])
        assert listener.events[-1] == ("restored", subscription.id)
        assert s.scalar(select(Notice.kind).order_by(Notice.id.desc()).limit(1)) == "restored"
        # the job, run again the same day, does not suspend again (1.00 is within grace)
        assert run_collections(s, day(12)).suspended == []
    finally:
        pm.unregister(listener)


def test_within_the_grace_amount_never_suspended(books):
    s = books
    rules(s, grace_days=3, grace_amount=D("20.00"))
    sub = active_subscriber(s)
    owe(s, sub, "20.00")
    for n in range(0, 40, 3):
        assert run_collections(s, day(n)).suspended == []
    owe(s, sub, "0.01", on=day(40))  # one cent more, due day(55): overdue 20.01 from day(56)
    assert run_collections(s, day(55)).suspended == []
    assert run_collections(s, day(56)).suspended == [sub.id]


def test_never_suspend_auto_suspend_off_and_overrides(books):
    s = books
    settings = rules(s, grace_days=10)
    exempt, patient, strict = (active_subscriber(s) for _ in range(3))
    update_subscriber_collection(s, exempt.id, never_suspend=True)
    update_subscriber_collection(s, patient.id, grace_days=30)
    update_subscriber_collection(s, strict.id, grace_days=2)
    for sub in (exempt, patient, strict):
        owe(s, sub, "80.00")
    assert run_collections(s, day(3)).suspended == [strict.id]
    assert run_collections(s, day(11)).suspended == []
    settings.auto_suspend = False
    assert run_collections(s, day(31)).suspended == []
    settings.auto_suspend = True
    assert run_collections(s, day(31)).suspended == [patient.id]
    assert _status(s, exempt)[0] == "active"


def test_a_promise_to_pay_defers_the_suspension_until_its_date(books):
    s = books
    rules(s, grace_days=10, suspension_notice_days=2)
    sub = active_subscriber(s)
    owe(s, sub, "80.00")
    promise = schedule_action(s, sub.id, "suspend", day(15), day(9), reason="Promised Friday",
                              created_by="valley-billing")
    assert run_collections(s, day(11)).suspended == []
    assert run_collections(s, day(13)).notices == 1  # 2 days before the promised date
    assert run_collections(s, day(14)).suspended == []
    assert run_collections(s, day(15)).suspended == [sub.id]
    assert promise.created_by == "valley-billing"


def test_a_cancelled_promise_no_longer_defers(books):
    s = books
    rules(s, grace_days=10)
    sub = active_subscriber(s)
    owe(s, sub, "80.00")
    promise = schedule_action(s, sub.id, "suspend", day(20), day(9), reason="Promised")
    assert run_collections(s, day(11)).suspended == []
    cancel_action(s, promise.id)
    assert run_collections(s, day(12)).suspended == [sub.id]
    with pytest.raises(ValidationFailed) as err:
        cancel_action(s, promise.id)
    assert "scheduled_action" in err.value.errors


def test_a_promise_needs_a_future_date_an_action_and_a_reason(books):
    s = books
    sub = active_subscriber(s)
    with pytest.raises(ValidationFailed) as err:
        schedule_action(s, sub.id, "disconnect", day(0), day(0), reason="")
    assert set(err.value.errors) == {"action", "not_before", "reason"}
    with pytest.raises(ValidationFailed) as err:
        schedule_action(s, 10**9, "suspend", day(5), day(0), reason="x")
    assert set(err.value.errors) == {"subscriber"}


def test_a_suspension_by_staff_is_not_restored_by_a_payment(books):
    s = books
    rules(s)
    sub = active_subscriber(s)
    invoice = owe(s, sub, "30.00")
    sub.status = "suspended"
    s.flush()
    credit_memo(s, sub.id, 3000, "Paid", day(20), invoice_id=invoice.id)
    assert after_payment(s, sub.id, day(20)) == []
    assert _status(s, sub)[0] == "suspended"


def test_auto_restore_off_leaves_the_subscriber_suspended(books):
    s = books
    settings = rules(s, grace_days=1)
    sub = active_subscriber(s)
    invoice = owe(s, sub, "30.00")
    run_collections(s, day(2))
    settings.auto_restore = False
    credit_memo(s, sub.id, 3000, "Paid", day(3), invoice_id=invoice.id)
    assert after_payment(s, sub.id, day(3)) == []
    assert _status(s, sub)[0] == "suspended"


# --- write-off ------------------------------------------------------------------------------

def test_archiving_records_the_day_and_unarchiving_clears_it(books):
    s = books
    sub = active_subscriber(s)
    sub.status = "archived"
    s.flush()
    row = s.scalar(select(SubscriberCollection).where(
        SubscriberCollection.subscriber_id == sub.id))
    assert row.archived_on == dt.date.today()
    sub.status = "active"
    s.flush()
    assert row.archived_on is None


def _archive(s, sub, on: dt.date):
    sub.status = "archived"
    s.flush()
    s.scalar(select(SubscriberCollection).where(
        SubscriberCollection.subscriber_id == sub.id)).archived_on = on
    s.flush()


def test_an_archived_small_balance_is_written_off_to_bad_debt_once(books):
    s = books
    rules(s, writeoff_enabled=True, writeoff_threshold=D("50.00"), writeoff_days=90)
    small, large, paid = (active_subscriber(s) for _ in range(3))
    inv = owe(s, small, "42.10")
    credit_memo(s, small.id, 1000, "Part", MAR16, invoice_id=inv.id)  # 32.10 left
    owe(s, large, "50.01")
    for sub in (small, large, paid):
        _archive(s, sub, day(0))
    assert run_collections(s, day(89)).write_offs == 0
    result = run_collections(s, day(90))
    assert (result.write_offs, result.written_off) == (1, 3210)
    row = s.scalar(select(WriteOff))
    assert (row.subscriber_id, row.amount, row.archived_on, row.written_on) == \
        (small.id, 3210, day(0), day(90))
    assert legs_of(s, "write_off", row.id) == [("1200", 0, 3210, small.id),
                                              ("6000", 3210, 0, None)]
    assert subscriber_balance(s, small.id) == 0
    assert s.get(Invoice, inv.id).status == "written_off"
    assert account_history(s, small.id)[-1].description == \
        f"Bad debt written off (account archived {day(0):%Y-%m-%d})"
    assert run_collections(s, day(91)).write_offs == 0
    assert s.scalar(select(func.count(WriteOff.id))) == 1
    # archived subscribers are never suspended
    assert run_collections(s, day(120)).suspended == []


def test_write_off_off_by_default(books):
    s = books
    assert collection_settings(s).writeoff_enabled is False
    sub = active_subscriber(s)
    owe(s, sub, "10.00")
    _archive(s, sub, day(0))
    assert run_collections(s, day(400)).write_offs == 0


def test_a_dry_run_counts_and_writes_nothing(books):
    s = books
    rules(s, late_fee_days=5, late_fee_amount=D("10"), grace_days=10)
    sub = active_subscriber(s)
    owe(s, sub, "100.00")
    result = run_collections(s, day(11), dry_run=True)
    assert (result.late_fees, result.fees_total, result.suspended) == (1, 1000, [sub.id])
    assert _fees(s) == [] and _status(s, sub)[0] == "active"
    assert s.scalar(select(func.count(Notice.id))) == 0


# --- set-based writing ------------------------------------------------------------------------

def test_effects_are_written_in_chunks_each_followed_by_its_step_then_its_events(
        app, books, monkeypatch):
    """Chunks of CHUNK effects: `after_step` (the job's commit) runs after each chunk is
    written, and the chunk's service_suspended events fire after it."""
    import headend.dunning.collect as collect

    monkeypatch.setattr(collect, "CHUNK", 2)
    s = books
    pm = app.extensions["headend_plugins"]
    listener = ServiceListener()
    pm.register(listener, name="service-listener")
    try:
        rules(s, late_fee_days=5, late_fee_amount=D("10"), grace_days=10)
        subs = [active_subscriber(s) for _ in range(5)]
        invoices = [owe(s, sub, "100.00") for sub in subs]
        heard_at_step = []
        result = run_collections(s, day(11),
                                 after_step=lambda: heard_at_step.append(len(listener.events)))
        # 3 chunks of late fees, 3 of suspensions, then the run's summary audit row
        assert heard_at_step == [0, 0, 0, 0, 2, 4, 5]
        assert (result.late_fees, result.fees_total) == (5, 5000)
        assert sorted(result.suspended) == sorted(sub.id for sub in subs)
        assert sorted(sid for _, sid in listener.events) == sorted(
            x.subscriptions[0].id for x in subs)
        fees = _fees(s)
        assert [f.invoice_id for f in fees] == [i.id for i in invoices]
        numbers = [f.fee_invoice.number for f in fees]
        assert len(set(numbers)) == 5 and all(numbers)
        for sub, fee in zip(subs, fees, strict=True):
            assert legs_of(s, "invoice", fee.fee_invoice_id) == [("1200", 1000, 0, sub.id),
                                                                 ("4500", 0, 1000, None)]
            assert subscriber_balance(s, sub.id) == 11000
            assert _status(s, sub) == ("suspended", ["suspended"])
        assert run_collections(s, day(11)).late_fees == 0
        assert len(_fees(s)) == 5
    finally:
        pm.unregister(listener)


def test_bulk_writes_are_audited_once_per_run_and_per_suspension(books):
    from headend.audit.models import AuditLog

    s = books
    rules(s, late_fee_days=5, late_fee_amount=D("10"), grace_days=10)
    sub = active_subscriber(s)
    (subscription,) = sub.subscriptions
    owe(s, sub, "100.00")
    run_collections(s, day(11))
    changes = s.execute(select(AuditLog.entity, AuditLog.entity_id, AuditLog.before,
                               AuditLog.after).where(
        AuditLog.action == "update", AuditLog.entity.in_(("subscriber", "subscription")))
        .order_by(AuditLog.id)).all()
    assert [tuple(c) for c in changes if c.after == {"status": "suspended"}] == [
        ("subscriber", str(sub.id), {"status": "active"}, {"status": "suspended"}),
        ("subscription", str(subscription.id), {"status": "active"}, {"status": "suspended"})]
    run_collections(s, day(11))  # a rerun does nothing, and says nothing
    (summary,) = s.scalars(select(AuditLog).where(AuditLog.entity == "collections_run"))
    assert (summary.entity_id, summary.after) == (day(11).isoformat(), {
        "write_offs": 0, "written_off": 0, "late_fees": 1, "rebill_fees": 0,
        "fees_total": 1000, "notices": 0, "suspended": 1})


def test_account_credit_settles_a_new_fee_invoice(books):
    s = books
    rules(s, late_fee_days=5, late_fee_amount=D("10"))
    sub = active_subscriber(s)
    owe(s, sub, "100.00")
    credit_memo(s, sub.id, 400, "Goodwill", MAR16)  # on account: no invoice chosen
    run_collections(s, day(5))
    charged = _fees(s)[0].fee_invoice
    assert (charged.amount_paid, charged.status) == (400, "partially_paid")
    assert subscriber_balance(s, sub.id) == 10000 + 1000 - 400
