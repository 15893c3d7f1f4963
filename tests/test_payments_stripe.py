"""Card payments through the real Stripe plugin and SDK against localstripe on loopback: saved
cards, charges, declines recorded with their code, lost answers reconciled, one charge per
transaction id (also from two threads at once), refunds, and webhooks deduplicated by event id."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from headend.billing.models import Invoice
from headend.db import db
from headend.errors import NotFound, ValidationFailed
from headend.ledger import services as ledger
from headend.ledger.models import JournalEntry
from headend.payments import services as payments
from headend.payments.models import GatewayEvent, Payment, Refund, SavedPaymentMethod
from headend.plugins.services import set_enabled
from headend.subscribers.models import Subscriber
from headend.tenancy.context import acting_as
from headend.tenancy.models import Tenant
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from tests.ledger_helpers import subscriber
from tests.memo_helpers import posted_invoice
from tests.payments_helpers import (
    FEB,
    JAN,
    card_token,
    count,
    enable_manual,
    enable_stripe,
    event,
    legs,
    sdk,
    sign,
)
from tests.peers import stripe as peer
from tests.peers.stripe import WEBHOOK_SECRET

localstripe_session, stripe_server = peer.localstripe_session, peer.stripe_server  # fixtures

DECLINES_ON_CHARGE = "4000000000000341"
REFUSED_AT_ATTACH = "4000000000000002"


@pytest.fixture
def shop(books, stripe_server):
    """A tenant taking cards through Stripe (localstripe) and cash by hand."""
    enable_manual(books)
    enable_stripe(books, stripe_server.url)
    books.commit()
    return books


def _card(session, url, sub, number="4242424242424242") -> SavedPaymentMethod:
    saved = payments.save_card(session, sub, card_token(url, number))
    session.commit()
    return saved


def _charges(url) -> list:
    return sdk(url).v1.charges.list({"limit": 100}).data


# --- saved cards -----------------------------------------------------------------------------

def test_saving_cards_creates_the_customer_once(shop, stripe_server):
    sub = subscriber(shop)
    visa = _card(shop, stripe_server.url, sub)
    assert (visa.plugin_id, visa.method, visa.brand, visa.last4, visa.exp_month,
            visa.exp_year, visa.is_default) == ("stripe", "card", "visa", "4242", 4, 2031, True)
    assert visa.provider_ref.startswith("pm_") and visa.customer_ref.startswith("cus_")
    second = _card(shop, stripe_server.url, sub, "5555555555554444")
    assert second.customer_ref == visa.customer_ref
    assert (second.is_default, visa.is_default) == (True, False)
    customer = sdk(stripe_server.url).v1.customers.retrieve(visa.customer_ref)
    account = shop.get(Subscriber, sub).account_number
    slug = shop.get(Tenant, shop.info["tenant"]).slug
    assert customer.metadata["customer_code"] == f"{slug}-{account}"
    payments.set_default(shop, visa.id)
    payments.remove_method(shop, second.id)
    shop.commit()
    assert [m.id for m in payments.saved_methods(shop, sub)] == [visa.id]
    assert visa.is_default and second.removed_at is not None
    with pytest.raises(NotFound):
        payments.remove_method(shop, second.id)


def test_a_card_refused_at_attach_names_the_token_and_saves_nothing(shop, stripe_server):
    sub = subscriber(shop)
    shop.commit()
    with pytest.raises(ValidationFailed) as caught:
        payments.save_card(shop, sub, card_token(stripe_server.url, REFUSED_AT_ATTACH))
    shop.rollback()
    assert "declined" in caught.value.errors["token"][0].lower()
    with pytest.raises(ValidationFailed) as caught:
        payments.save_card(shop, sub, "pm_nonexistent")
    shop.rollback()
    assert caught.value.errors["token"]
    assert count(shop, SavedPaymentMethod) == 0


def test_stripe_unreachable_while_saving_is_a_clear_error(shop, stripe_server):
    sub = subscriber(shop)
    shop.commit()
    token = card_token(stripe_server.url)
    stripe_server.fail_with = 503
    with pytest.raises(payments.GatewayDown, match="could not be reached"):
        payments.save_card(shop, sub, token)
    shop.rollback()
    assert count(shop, SavedPaymentMethod) == 0


# --- charging --------------------------------------------------------------------------------

def test_card_payment_is_charged_posted_and_allocated(shop, stripe_server):
    sub = subscriber(shop)
    inv = posted_invoice(shop, sub, 4999)
    card = _card(shop, stripe_server.url, sub)
    pay = payments.receive_payment(shop, sub, 4999, "card", JAN, saved_method_id=card.id)
    shop.commit()
    assert (pay.status, pay.plugin_id, pay.number, inv.status) == ("processed", "stripe",
                                                                 "R-000001", "paid")
    assert pay.provider_ref.startswith("pi_")
    assert legs(shop, pay.posted_entry_id) == [("1010", 4999, 0, None), ("1200", 0, 4999, sub)]
    assert shop.get(JournalEntry, pay.posted_entry_id).description == \
        "Payment R-000001 (visa ending 4242)"
    (charge,) = _charges(stripe_server.url)
    assert charge.amount == 4999 and charge.payment_intent == pay.provider_ref


def test_a_card_payment_needs_a_saved_card(shop):
    sub = subscriber(shop)
    shop.commit()
    with pytest.raises(ValidationFailed) as caught:
        payments.receive_payment(shop, sub, 100, "card", JAN)
    assert "saved payment method" in caught.value.errors["saved_method"][0]


def test_a_decline_is_recorded_with_its_code_and_posts_nothing(shop, stripe_server):
    sub = subscriber(shop)
    inv = posted_invoice(shop, sub, 2000)
    card = _card(shop, stripe_server.url, sub, DECLINES_ON_CHARGE)
    pay = payments.receive_payment(shop, sub, 2000, "card", JAN, saved_method_id=card.id,
                                   source="autopay", transaction_id="autopay-1-1")
    shop.commit()
    assert (pay.status, pay.decline_code, pay.number, pay.posted_entry_id) == (
        "failed", "card_declined", None, None)
    assert pay.message
    assert (inv.status, inv.amount_paid) == ("open", 0)
    assert ledger.subscriber_balance(shop, sub) == 2000
    # asked again with the same id: the same decline, no second attempt at Stripe
    again = payments.receive_payment(shop, sub, 2000, "card", JAN, saved_method_id=card.id,
                                     transaction_id="autopay-1-1")
    assert again.id == pay.id and count(shop, Payment) == 1


def test_a_lost_answer_is_undefined_then_reconciled(shop, stripe_server):
    sub = subscriber(shop)
    inv = posted_invoice(shop, sub, 6000)
    card = _card(shop, stripe_server.url, sub)
    enable_stripe(shop, stripe_server.url, timeout=1)
    shop.commit()
    stripe_server.delay = 1.5  # longer than the timeout: Stripe charges, the answer is lost
    pay = payments.receive_payment(shop, sub, 6000, "card", JAN, saved_method_id=card.id,
                                   transaction_id="pay-lost")
    shop.commit()
    stripe_server.delay = 0
    assert (pay.status, pay.posted_entry_id, inv.status) == ("undefined", None, "open")
    # retried with its id: the same (unknown) payment, never a second charge
    assert payments.receive_payment(shop, sub, 6000, "card", JAN, saved_method_id=card.id,
                                    transaction_id="pay-lost").id == pay.id
    # Too soon, the charge may still be under way at Stripe: it is left alone.
    assert payments.reconcile_undefined(shop)["payments"] == 0
    assert pay.status == "undefined"
    deadline = time.monotonic() + 5
    while not _charges(stripe_server.url) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert payments.reconcile_undefined(shop, settle_after=dt.timedelta(0)) == {
        "payments": 1, "refunds": 0}
    shop.commit()
    assert (pay.status, pay.number, inv.status) == ("processed", "R-000001", "paid")
    assert legs(shop, pay.posted_entry_id) == [("1010", 6000, 0, None), ("1200", 0, 6000, sub)]
    assert len(_charges(stripe_server.url)) == 1
    assert payments.reconcile_undefined(shop, settle_after=dt.timedelta(0)) == {
        "payments": 0, "refunds": 0}


def test_a_payment_that_never_reached_stripe_is_reconciled_as_failed(shop, stripe_server):
    sub = subscriber(shop)
    card = _card(shop, stripe_server.url, sub)
    stripe_server.fail_with = 503
    pay = payments.receive_payment(shop, sub, 700, "card", JAN, saved_method_id=card.id)
    shop.commit()
    stripe_server.fail_with = None
    assert pay.status == "undefined"
    assert payments.reconcile_undefined(shop, settle_after=dt.timedelta(0))["payments"] == 1
    shop.commit()
    assert (pay.status, pay.posted_entry_id) == ("failed", None)


@pytest.mark.postgresql_only  # row locks
def test_two_workers_with_one_transaction_id_make_one_payment_and_one_charge(
        app, shop, stripe_server):
    tenant = shop.info["tenant"]
    sub = subscriber(shop)
    posted_invoice(shop, sub, 3000)
    card = _card(shop, stripe_server.url, sub)
    barrier, results, errors = threading.Barrier(4), [], []

    def pay():
        try:
            with app.app_context(), acting_as(tenant):
                barrier.wait()
                payment = payments.receive_payment(db.session, sub, 3000, "card", JAN,
                                                   saved_method_id=card.id,
                                                   transaction_id="autopay-9-1")
                db.session.commit()
                results.append((payment.id, payment.status))
                db.session.remove()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=pay) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len({pid for pid, _ in results}) == 1 and len(results) == 4
    shop.expire_all()
    assert count(shop, Payment) == 1
    assert shop.scalar(select(Invoice.status).where(Invoice.subscriber_id == sub)) == "paid"
    assert len(_charges(stripe_server.url)) == 1
    assert ledger.subscriber_balance(shop, sub) == 0


# --- refunds ---------------------------------------------------------------------------------

def test_card_refund_in_part_then_the_rest(shop, stripe_server):
    sub = subscriber(shop)
    inv = posted_invoice(shop, sub, 5000)
    card = _card(shop, stripe_server.url, sub)
    pay = payments.receive_payment(shop, sub, 5000, "card", JAN, saved_method_id=card.id)
    shop.commit()
    part = payments.refund_payment(shop, pay.id, 1200, FEB, "outage")
    shop.commit()
    assert (part.status, part.reversal, pay.refunded) == ("processed", "refund", 1200)
    assert part.provider_ref.startswith("re_")
    assert (inv.status, inv.balance_due) == ("partially_paid", 1200)
    assert legs(shop, part.posted_entry_id) == [("1200", 1200, 0, sub), ("1010", 0, 1200, None)]
    with pytest.raises(ValidationFailed):
        payments.refund_payment(shop, pay.id, 3801, FEB)
    shop.rollback()
    payments.refund_payment(shop, pay.id, 3800, FEB)
    shop.commit()
    assert (pay.refunded, inv.status, inv.balance_due) == (5000, "open", 5000)
    refunds = sdk(stripe_server.url).v1.refunds.list({"limit": 10}).data
    assert sorted(r.amount for r in refunds) == [1200, 3800]


# --- webhooks --------------------------------------------------------------------------------

def _undefined_payment(shop, stripe_server, sub, card, amount, transaction_id) -> Payment:
    stripe_server.fail_with = 503
    pay = payments.receive_payment(shop, sub, amount, "card", JAN, saved_method_id=card.id,
                                   transaction_id=transaction_id)
    shop.commit()
    stripe_server.fail_with = None
    assert pay.status == "undefined"
    return pay


def test_a_signed_webhook_settles_a_payment_once(shop, stripe_server):
    sub = subscriber(shop)
    inv = posted_invoice(shop, sub, 2500)
    card = _card(shop, stripe_server.url, sub)
    pay = _undefined_payment(shop, stripe_server, sub, card, 2500, "pay-hook")
    intent = {"id": "pi_hook", "object": "payment_intent", "amount": 2500, "currency": "usd",
              "status": "succeeded", "metadata": {"transaction_id": "pay-hook"}}
    body = event("payment_intent.succeeded", intent, "evt_1")
    assert payments.handle_webhook(shop, "stripe", sign(body), body) == "applied"
    shop.commit()
    assert (pay.status, pay.provider_ref, inv.status) == ("processed", "pi_hook", "paid")
    entries = count(shop, JournalEntry)
    # redelivered, one after the other: nothing changes
    assert payments.handle_webhook(shop, "stripe", sign(body), body) == "duplicate"
    shop.commit()
    assert count(shop, JournalEntry) == entries and count(shop, GatewayEvent) == 1
    # another event about the same, already settled payment changes nothing either
    body = event("payment_intent.succeeded", intent, "evt_2")
    assert payments.handle_webhook(shop, "stripe", sign(body), body) == "unchanged"
    assert count(shop, JournalEntry) == entries


def test_a_failed_payment_webhook_marks_it_failed(shop, stripe_server):
    sub = subscriber(shop)
    card = _card(shop, stripe_server.url, sub)
    pay = _undefined_payment(shop, stripe_server, sub, card, 900, "pay-fail")
    intent = {"id": "pi_f", "object": "payment_intent", "amount": 900, "currency": "usd",
              "status": "requires_payment_method",
              "last_payment_error": {"code": "card_declined", "decline_code": "expired_card",
                                     "message": "Your card has expired."},
              "metadata": {"transaction_id": "pay-fail"}}
    body = event("payment_intent.payment_failed", intent, "evt_f")
    assert payments.handle_webhook(shop, "stripe", sign(body), body) == "applied"
    shop.commit()
    assert (pay.status, pay.decline_code, pay.posted_entry_id) == ("failed", "expired_card",
                                                                   None)


def test_bad_signature_or_disabled_plugin_writes_nothing(shop):
    body = event("payment_intent.succeeded", {"id": "pi_1", "amount": 1, "currency": "usd",
                                              "status": "succeeded", "metadata": {}}, "evt_x")
    with pytest.raises(ValidationFailed) as caught:
        payments.handle_webhook(shop, "stripe", sign(body, "whsec_wrong"), body)
    assert "signature" in caught.value.errors
    shop.rollback()
    with pytest.raises(NotFound):
        payments.handle_webhook(shop, "no-such-plugin", sign(body), body)
    set_enabled(shop, "stripe", False)
    with pytest.raises(NotFound):
        payments.handle_webhook(shop, "stripe", sign(body), body)
    shop.rollback()
    assert count(shop, GatewayEvent) == 0


def test_localstripes_own_deliveries_and_a_dashboard_refund(shop, stripe_server):
    inbox = stripe_server.deliver_webhooks(WEBHOOK_SECRET)
    sub = subscriber(shop)
    inv = posted_invoice(shop, sub, 3000)
    card = _card(shop, stripe_server.url, sub)
    pay = payments.receive_payment(shop, sub, 3000, "card", JAN, saved_method_id=card.id)
    shop.commit()
    headers, body = inbox.wait_for("payment_intent.succeeded")
    assert payments.handle_webhook(shop, "stripe", headers, body) == "unchanged"
    shop.commit()
    assert payments.handle_webhook(shop, "stripe", headers, body) == "duplicate"
    # Refunded in Stripe's dashboard (localstripe sends no charge.refunded: the event is
    # built from its charge and signed here): the webhook records it as a refund of ours.
    client = sdk(stripe_server.url)
    made = client.v1.refunds.create({"payment_intent": pay.provider_ref, "amount": 1000})
    charge = client.v1.charges.retrieve(made.charge).to_dict()
    charge["refunds"] = {"data": [made.to_dict()]}
    body = event("charge.refunded", charge, "evt_dashboard_refund")
    assert payments.handle_webhook(shop, "stripe", sign(body), body) == "applied"
    shop.commit()
    (refund,) = shop.scalars(select(Refund)).all()
    assert (refund.amount, refund.status, refund.provider_ref, pay.refunded) == (
        1000, "processed", made.id, 1000)
    assert (inv.status, inv.balance_due) == ("partially_paid", 1000)
    assert payments.handle_webhook(shop, "stripe", sign(body), body) == "duplicate"
    body = event("charge.refunded", charge, "evt_dashboard_refund_again")
    assert payments.handle_webhook(shop, "stripe", sign(body), body) == "unchanged"
    assert count(shop, Refund) == 1


def test_a_redelivery_after_a_failed_first_processing_is_processed(shop, stripe_server):
    sub = subscriber(shop)
    posted_invoice(shop, sub, 3000)
    card = _card(shop, stripe_server.url, sub)
    pay = payments.receive_payment(shop, sub, 3000, "card", JAN, saved_method_id=card.id)
    shop.commit()
    made = sdk(stripe_server.url).v1.refunds.create({"payment_intent": pay.provider_ref,
                                                     "amount": 500})
    # As Stripe sends it: the charge names its intent by id and carries none of our metadata,
    # so the plugin must ask Stripe whose payment it is.
    charge = {"id": made.charge, "object": "charge", "amount": 3000, "amount_refunded": 500,
              "currency": "usd", "payment_intent": pay.provider_ref, "metadata": {},
              "refunds": {"data": [made.to_dict()]}}
    body = event("charge.refunded", charge, "evt_retry")
    stripe_server.fail_with = 503
    with pytest.raises(payments.GatewayDown):
        payments.handle_webhook(shop, "stripe", sign(body), body)
    shop.rollback()
    stripe_server.fail_with = None
    assert (count(shop, GatewayEvent), count(shop, Refund)) == (0, 0)
    assert payments.handle_webhook(shop, "stripe", sign(body), body) == "applied"
    shop.commit()
    assert (pay.refunded, count(shop, GatewayEvent)) == (500, 1)


@pytest.mark.postgresql_only  # row locks
def test_one_event_delivered_concurrently_is_applied_once(app, shop, stripe_server):
    tenant = shop.info["tenant"]
    sub = subscriber(shop)
    posted_invoice(shop, sub, 2500)
    card = _card(shop, stripe_server.url, sub)
    pay = _undefined_payment(shop, stripe_server, sub, card, 2500, "pay-race")
    intent = {"id": "pi_race", "object": "payment_intent", "amount": 2500, "currency": "usd",
              "status": "succeeded", "metadata": {"transaction_id": "pay-race"}}
    body = event("payment_intent.succeeded", intent, "evt_race")
    barrier, outcomes, errors = threading.Barrier(4), [], []

    def deliver():
        try:
            with app.app_context(), acting_as(tenant):
                barrier.wait()
                try:
                    outcome = payments.handle_webhook(db.session, "stripe", sign(body), body)
                    db.session.commit()
                except IntegrityError:  # what the endpoint answers 200 "duplicate" to
                    db.session.rollback()
                    outcome = "duplicate"
                outcomes.append(outcome)
                db.session.remove()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(outcomes) == ["applied", "duplicate", "duplicate", "duplicate"]
    shop.expire_all()
    assert (pay.status, count(shop, GatewayEvent)) == ("processed", 1)
    assert shop.scalar(select(func.count()).select_from(JournalEntry).where(
        JournalEntry.source_type == "payment")) == 1
