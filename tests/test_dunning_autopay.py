"""Autopay through the real Stripe plugin against localstripe: a due invoice charged to the
saved card, a declined card retried on schedule and then given up, each attempt recorded with
its decline code and a failed-payment notice; and a payment restoring a suspended subscriber."""

from __future__ import annotations

import datetime as dt
import threading
import time
from decimal import Decimal as D

import pytest
from headend.billing.models import Invoice
from headend.db import db
from headend.dunning.autopay import run_autopay
from headend.dunning.collect import run_collections
from headend.dunning.models import AutopayAttempt, Notice
from headend.dunning.services import update_subscriber_collection
from headend.payments.models import Payment
from headend.payments.services import (
    handle_webhook,
    receive_payment,
    reconcile_undefined,
    save_card,
)
from headend.tenancy.context import acting_as
from sqlalchemy import func, select

from tests.dunning_helpers import MAR1, ServiceListener, active_subscriber, day, owe, rules
from tests.payments_helpers import card_token, enable_manual, enable_stripe, event, sdk, sign
from tests.peers import stripe as peer

localstripe_session, stripe_server = peer.localstripe_session, peer.stripe_server  # fixtures
DECLINES_ON_CHARGE = "4000000000000341"


def _autopay(s, url, number="4242424242424242"):
    sub = active_subscriber(s)
    saved = save_card(s, sub.id, card_token(url, number))
    update_subscriber_collection(s, sub.id, autopay=True, autopay_method_id=saved.id)
    return sub, saved


def _intents(server) -> int:
    return sum(1 for r in server.requests if r[0] == "POST" and r[1] == "/v1/payment_intents")


def test_a_due_invoice_is_charged_once_to_the_saved_card(books, stripe_server):
    s = books
    enable_stripe(s, stripe_server.url)
    rules(s)
    sub, saved = _autopay(s, stripe_server.url)
    invoice = owe(s, sub, "64.99")
    assert run_autopay(s, day(-1)).attempts == 0  # not yet due
    result = run_autopay(s, day(0))
    assert (result.attempts, result.processed, result.charged) == (1, 1, 6499)
    (attempt,) = s.scalars(select(AutopayAttempt)).all()
    payment = attempt.payment
    assert (attempt.attempt, attempt.status, attempt.invoice_id) == (1, "processed", invoice.id)
    assert (payment.source, payment.transaction_id, payment.saved_method_id, payment.amount) == \
        ("autopay", f"autopay-{invoice.id}-1", saved.id, 6499)
    assert s.get(Invoice, invoice.id).status == "paid"
    for again in (day(0), day(1)):
        assert run_autopay(s, again).attempts == 0
    assert _intents(stripe_server) == 1


def test_a_declined_card_is_retried_on_schedule_then_given_up(books, stripe_server):
    s = books
    enable_stripe(s, stripe_server.url)
    rules(s, retry_count=2, retry_interval_days=3)
    sub, _ = _autopay(s, stripe_server.url, DECLINES_ON_CHARGE)
    invoice = owe(s, sub, "50.00")
    made = {n: run_autopay(s, day(n)).attempts for n in range(0, 12)}
    assert {n: a for n, a in made.items() if a} == {0: 1, 3: 1, 6: 1}  # 1 + retry_count
    attempts = s.scalars(select(AutopayAttempt).order_by(AutopayAttempt.attempt)).all()
    assert [(a.attempt, a.status, a.attempted_on, a.next_attempt_on) for a in attempts] == [
        (1, "failed", day(0), day(3)), (2, "failed", day(3), day(6)),
        (3, "failed", day(6), None)]
    assert all(a.decline_code for a in attempts)
    assert [p.transaction_id for p in s.scalars(select(Payment).order_by(Payment.id))] == [
        f"autopay-{invoice.id}-{n}" for n in (1, 2, 3)]
    notices = s.scalars(select(Notice).order_by(Notice.id)).all()
    assert [n.key for n in notices] == [f"failed_payment:{invoice.id}:{n}" for n in (1, 2, 3)]
    assert "try again on" in notices[0].message and "try again" not in notices[2].message
    assert s.get(Invoice, invoice.id).status == "open"
    assert _intents(stripe_server) == 3


def test_a_retry_charges_the_new_card_after_a_decline(books, stripe_server):
    s = books
    enable_stripe(s, stripe_server.url)
    rules(s, retry_interval_days=2)
    sub, _ = _autopay(s, stripe_server.url, DECLINES_ON_CHARGE)
    invoice = owe(s, sub, "20.00")
    assert run_autopay(s, day(0)).failed == 1
    good = save_card(s, sub.id, card_token(stripe_server.url))
    update_subscriber_collection(s, sub.id, autopay_method_id=good.id)
    assert run_autopay(s, day(1)).attempts == 0
    assert run_autopay(s, day(2)).processed == 1
    assert s.get(Invoice, invoice.id).status == "paid"


def test_autopay_needs_a_saved_method_of_the_subscriber(books, stripe_server):
    from headend.errors import ValidationFailed

    s = books
    enable_stripe(s, stripe_server.url)
    sub, saved = _autopay(s, stripe_server.url)
    other = active_subscriber(s)
    with pytest.raises(ValidationFailed) as err:
        update_subscriber_collection(s, other.id, autopay=True, autopay_method_id=saved.id)
    assert set(err.value.errors) == {"autopay_method_id"}
    with pytest.raises(ValidationFailed) as err:
        update_subscriber_collection(s, other.id, autopay=True)
    assert set(err.value.errors) == {"autopay_method_id"}


@pytest.mark.postgresql_only  # SQLite refuses a second writer
def test_two_autopay_runs_at_once_charge_once(app, make_tenant, stripe_server):
    t = make_tenant("Autopay Race", "autopay-race")
    with app.app_context(), acting_as(t):
        s = db.session
        enable_stripe(s, stripe_server.url)
        rules(s)
        sub, _ = _autopay(s, stripe_server.url)
        owe(s, sub, "30.00")
        s.commit()
    barrier, errors = threading.Barrier(2), []

    def run():
        try:
            with app.app_context(), acting_as(t):
                barrier.wait()
                run_autopay(db.session, day(0), after_each=db.session.commit)
                db.session.commit()
                db.session.remove()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with app.app_context(), acting_as(t):
        assert db.session.scalar(select(func.count(Payment.id))) == 1
        assert db.session.scalar(select(func.count(AutopayAttempt.id))) == 1
    assert _intents(stripe_server) == 1


def test_a_real_payment_restores_a_suspended_subscriber_at_once(app, books):
    s = books
    pm = app.extensions["headend_plugins"]
    listener = ServiceListener()
    pm.register(listener, name="restore-listener")
    try:
        enable_manual(s)
        rules(s, grace_days=10, grace_amount=D("5"))
        sub = active_subscriber(s)
        (subscription,) = sub.subscriptions
        owe(s, sub, "100.00")
        assert run_collections(s, day(11)).suspended == [sub.id]
        receive_payment(s, sub.id, 9000, "cash", day(12))  # 10.00 still overdue
        s.refresh(sub)
        assert sub.status == "suspended"
        receive_payment(s, sub.id, 500, "cash", day(12))  # 5.00: within the grace amount
        s.refresh(sub)
        s.refresh(subscription)
        assert (sub.status, subscription.status) == ("active", "active")
        assert listener.events == [("suspended", subscription.id),
                                   ("restored", subscription.id)]
    finally:
        pm.unregister(listener)


# --- an attempt whose outcome comes later ----------------------------------------------------

def _lost_charge(s, server, sub_saved, amount="40.00"):
    """An autopay attempt whose charge never got an answer: "undefined"."""
    sub, _ = sub_saved
    invoice = owe(s, sub, amount)
    server.fail_with = 503
    assert run_autopay(s, day(0)).attempts == 1
    server.fail_with = None
    (attempt,) = s.scalars(select(AutopayAttempt)).all()
    assert (attempt.status, attempt.next_attempt_on) == ("undefined", None)
    assert run_autopay(s, day(5)).attempts == 0  # never retried blind
    return invoice, attempt


def test_a_reconciled_decline_fails_the_attempt_and_schedules_the_retry(books, stripe_server):
    s = books
    enable_stripe(s, stripe_server.url)
    rules(s, retry_count=2, retry_interval_days=3)
    invoice, attempt = _lost_charge(s, stripe_server, _autopay(s, stripe_server.url))
    # The charge never reached Stripe: reconciliation settles it as failed.
    assert reconcile_undefined(s, settle_after=dt.timedelta(0))["payments"] == 1
    s.commit()
    assert (attempt.status, attempt.next_attempt_on) == ("failed", day(3))
    assert attempt.message == attempt.payment.message and attempt.message
    (notice,) = s.scalars(select(Notice).where(Notice.kind == "failed_payment")).all()
    assert notice.key == f"failed_payment:{invoice.id}:1" and "try again on" in notice.message
    assert run_autopay(s, day(2)).attempts == 0
    retry = run_autopay(s, day(3))
    assert (retry.attempts, retry.processed) == (1, 1)
    assert s.get(Invoice, invoice.id).status == "paid"
    assert reconcile_undefined(s, settle_after=dt.timedelta(0))["payments"] == 0


def test_a_decline_told_by_the_webhook_carries_its_code(books, stripe_server):
    s = books
    enable_stripe(s, stripe_server.url)
    rules(s, retry_count=1, retry_interval_days=2)
    invoice, attempt = _lost_charge(s, stripe_server, _autopay(s, stripe_server.url))
    txn = f"autopay-{invoice.id}-1"
    intent = {"id": "pi_ap", "object": "payment_intent", "amount": 4000, "currency": "usd",
              "status": "requires_payment_method",
              "last_payment_error": {"code": "card_declined",
                                     "decline_code": "insufficient_funds",
                                     "message": "Your card has insufficient funds."},
              "metadata": {"transaction_id": txn}}
    body = event("payment_intent.payment_failed", intent, "evt_autopay_declined")
    assert handle_webhook(s, "stripe", sign(body), body) == "applied"
    s.commit()
    assert (attempt.status, attempt.decline_code, attempt.next_attempt_on) == (
        "failed", "insufficient_funds", day(2))
    assert s.scalar(select(func.count(Notice.id))) == 1
    # attempt 2 is the last one (retry_count 1): declined at once, no further retry
    update_subscriber_collection(s, attempt.invoice.subscriber_id,
                                 autopay_method_id=save_card(
                                     s, attempt.invoice.subscriber_id,
                                     card_token(stripe_server.url, DECLINES_ON_CHARGE)).id)
    assert run_autopay(s, day(2)).failed == 1
    assert run_autopay(s, day(9)).attempts == 0


def test_a_lost_answer_reconciled_as_processed_pays_the_attempt(books, stripe_server):
    s = books
    enable_stripe(s, stripe_server.url, timeout=1)
    rules(s)
    sub_saved = _autopay(s, stripe_server.url)
    invoice = owe(s, sub_saved[0], "25.00")
    stripe_server.delay = 1.5  # longer than the timeout: Stripe charges, the answer is lost
    assert run_autopay(s, day(0)).attempts == 1
    stripe_server.delay = 0
    (attempt,) = s.scalars(select(AutopayAttempt)).all()
    assert attempt.status == "undefined"
    deadline = time.monotonic() + 5  # until Stripe has made the charge whose answer was lost
    while not sdk(stripe_server.url).v1.charges.list().data and time.monotonic() < deadline:
        time.sleep(0.1)
    assert reconcile_undefined(s, settle_after=dt.timedelta(0))["payments"] == 1
    s.commit()
    assert (attempt.status, attempt.next_attempt_on, attempt.decline_code) == (
        "processed", None, None)
    assert s.get(Invoice, invoice.id).status == "paid"
    assert s.scalar(select(func.count(Notice.id))) == 0
    assert run_autopay(s, day(3)).attempts == 0
    assert _intents(stripe_server) == 1


def test_a_lost_answer_settled_later_pays_the_invoice_it_was_charged_for(books, stripe_server):
    """An older invoice posted while the answer was lost stays open: the charge was for the
    invoice the attempt named, not for whatever is oldest when the answer arrives."""
    s = books
    enable_stripe(s, stripe_server.url, timeout=1)
    rules(s)
    sub_saved = _autopay(s, stripe_server.url)
    charged = owe(s, sub_saved[0], "25.00")
    stripe_server.delay = 1.5
    assert run_autopay(s, day(0)).attempts == 1
    stripe_server.delay = 0
    older = owe(s, sub_saved[0], "10.00", on=MAR1 - dt.timedelta(days=40))
    deadline = time.monotonic() + 5
    while not sdk(stripe_server.url).v1.charges.list().data and time.monotonic() < deadline:
        time.sleep(0.1)
    assert reconcile_undefined(s, settle_after=dt.timedelta(0))["payments"] == 1
    s.commit()
    assert s.get(Invoice, charged.id).status == "paid"
    assert (s.get(Invoice, older.id).status, s.get(Invoice, older.id).amount_paid) == ("open", 0)
