"""The Stripe gateway through the real SDK against localstripe on loopback (tests/peers/stripe)."""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json
import time

import pytest
import sqlalchemy as sa
import stripe
from headend.db import db
from headend.errors import ValidationFailed
from headend.plugins.interfaces import (
    GatewayUnavailable,
    PaymentGateway,
    PaymentStatus,
    SavedMethod,
)
from headend.plugins.services import configure_plugin, plugin_settings
from headend.tenancy.context import acting_as
from headend_gateway_stripe import StripeGateway
from headend_gateway_stripe.gateway import our_amount, stripe_amount

from tests.peers.stripe import PUBLISHABLE_KEY, SECRET_KEY, WEBHOOK_SECRET

GATEWAY = StripeGateway()
VISA = "4242424242424242"
DECLINES_ON_CHARGE = "4000000000000341"  # attaches, then every charge is declined
REFUSED_AT_ATTACH = "4000000000000002"
NEEDS_AUTHENTICATION = "4000002760003184"


@pytest.fixture
def settings(stripe_server):
    return {"secret_key": SECRET_KEY, "publishable_key": PUBLISHABLE_KEY,
            "webhook_secret": WEBHOOK_SECRET, "api_base": stripe_server.url, "timeout": 5}


@pytest.fixture
def sdk(stripe_server):
    """A plain SDK client to look at what localstripe holds."""
    return stripe.StripeClient(SECRET_KEY, base_addresses={"api": stripe_server.url},
                               max_network_retries=0)


def token(sdk, number: str) -> str:
    """What Stripe.js hands the browser for a card: a PaymentMethod id."""
    return sdk.v1.payment_methods.create({"type": "card", "card": {
        "number": number, "exp_month": 4, "exp_year": 2031, "cvc": "123"}}).id


def customer_with(settings, sdk, number: str = VISA, code: str = "SUB-1") -> tuple[str, str]:
    """A customer with one saved card: (customer_ref, payment method ref)."""
    customer = GATEWAY.create_customer(settings, code, "Ada Lovelace", "ada@example.org")
    return customer, GATEWAY.save_method(settings, customer, token(sdk, number)).provider_ref


def charges(sdk) -> list:
    return sdk.v1.charges.list({"limit": 100}).data


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> dict:
    """Stripe's scheme, computed here independently of the SDK: t=...,v1=HMAC-SHA256."""
    at = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), b"%d." % at + payload, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={at},v1={mac}"}


def event(kind: str, obj: dict, event_id: str = "evt_1") -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": kind,
                       "data": {"object": obj}}).encode()


def test_customer_and_saved_visa(settings, sdk):
    customer = GATEWAY.create_customer(settings, "SUB-1", "Ada Lovelace", "ada@example.org")
    assert customer.startswith("cus_")
    assert GATEWAY.create_customer(settings, "SUB-1", "Ada Lovelace", "ada@example.org") \
        == customer
    stored = sdk.v1.customers.retrieve(customer)
    assert (stored.email, stored.metadata["customer_code"]) == ("ada@example.org", "SUB-1")
    saved = GATEWAY.save_method(settings, customer, "pm_card_visa")
    assert saved == SavedMethod(saved.provider_ref, "card", "visa", "4242", 12, 2030)
    assert saved.provider_ref.startswith("pm_")
    assert sdk.v1.payment_methods.retrieve(saved.provider_ref).customer == customer


def test_card_refused_at_attach_raises_value_error(settings, sdk):
    customer = GATEWAY.create_customer(settings, "SUB-1", "Ada", "ada@example.org")
    refused = token(sdk, REFUSED_AT_ATTACH)
    with pytest.raises(ValueError, match="declined"):
        GATEWAY.save_method(settings, customer, refused)
    assert sdk.v1.payment_methods.retrieve(refused).customer is None


def test_remove_method_detaches_and_tolerates_a_second_time(settings, sdk):
    _, method = customer_with(settings, sdk)
    GATEWAY.remove_method(settings, method)
    assert sdk.v1.payment_methods.retrieve(method).customer is None
    GATEWAY.remove_method(settings, method)
    GATEWAY.remove_method(settings, "pm_never_existed")


def test_purchase_is_an_off_session_charge_keyed_by_our_transaction_id(settings, sdk,
                                                                      stripe_server):
    customer, method = customer_with(settings, sdk)
    result = GATEWAY.purchase(settings, "pay-1", 4_999, "USD", method, customer)
    assert (result.status, result.amount, result.currency, result.message) == (
        PaymentStatus.PROCESSED, 4_999, "USD", "paid")
    intent = sdk.v1.payment_intents.retrieve(result.provider_ref)
    assert (intent.status, intent.amount, intent.currency, intent.customer) == (
        "succeeded", 4_999, "usd", customer)
    assert intent.metadata["transaction_id"] == "pay-1"
    assert ("POST", "/v1/payment_intents", "pay-1") in stripe_server.requests
    (charge,) = charges(sdk)
    assert (charge.amount, charge.captured, charge.payment_method) == (4_999, True, method)


def test_decline_is_an_error_result_with_its_code(settings, sdk):
    customer, method = customer_with(settings, sdk, DECLINES_ON_CHARGE)
    result = GATEWAY.purchase(settings, "pay-1", 2_500, "USD", method, customer)
    assert (result.status, result.decline_code, result.message, result.amount) == (
        PaymentStatus.ERROR, "card_declined", "Your card was declined.", 2_500)
    assert [c.status for c in charges(sdk)] == ["failed"]


def test_the_same_transaction_id_charges_once(settings, sdk, stripe_server):
    customer, method = customer_with(settings, sdk)
    first = GATEWAY.purchase(settings, "pay-1", 1_000, "USD", method, customer)
    again = GATEWAY.purchase(settings, "pay-1", 1_000, "USD", method, customer)
    assert again == first and first.status == PaymentStatus.PROCESSED
    assert len(charges(sdk)) == 1
    other = GATEWAY.purchase(settings, "pay-2", 1_000, "USD", method, customer)
    assert other.provider_ref != first.provider_ref and len(charges(sdk)) == 2
    # reusing an id for a different charge is refused, not mistaken for the first one
    wrong = GATEWAY.purchase(settings, "pay-1", 1_500, "USD", method, customer)
    assert wrong.status == PaymentStatus.ERROR and "same parameters" in wrong.message
    assert len(charges(sdk)) == 2


def test_a_declined_charge_retried_with_its_id_is_the_same_decline(settings, sdk):
    customer, method = customer_with(settings, sdk, DECLINES_ON_CHARGE)
    first = GATEWAY.purchase(settings, "pay-1", 700, "USD", method, customer)
    assert GATEWAY.purchase(settings, "pay-1", 700, "USD", method, customer) == first
    assert len(charges(sdk)) == 1


def test_card_that_needs_authentication_fails_and_is_cancelled(settings, sdk):
    customer, method = customer_with(settings, sdk, NEEDS_AUTHENTICATION)
    result = GATEWAY.purchase(settings, "pay-1", 3_000, "USD", method, customer)
    assert (result.status, result.decline_code) == (PaymentStatus.ERROR,
                                                    "authentication_required")
    assert "authentication" in result.message
    assert sdk.v1.payment_intents.retrieve(result.provider_ref).status == "canceled"
    assert charges(sdk) == []


def test_authorize_then_capture_part(settings, sdk):
    customer, method = customer_with(settings, sdk)
    held = GATEWAY.authorize(settings, "auth-1", 5_000, "USD", method, customer)
    assert (held.status, held.message, held.amount) == (PaymentStatus.PROCESSED, "authorized",
                                                        5_000)
    assert sdk.v1.payment_intents.retrieve(held.provider_ref).status == "requires_capture"
    captured = GATEWAY.capture(settings, "cap-1", held.provider_ref, 3_000, "USD")
    assert (captured.status, captured.amount, captured.transaction_id) == (
        PaymentStatus.PROCESSED, 3_000, "cap-1")
    assert sdk.v1.payment_intents.retrieve(held.provider_ref).status == "succeeded"
    assert GATEWAY.capture(settings, "cap-1", held.provider_ref, 3_000, "USD") == captured
    late = GATEWAY.capture(settings, "cap-2", held.provider_ref, 1_000, "USD")
    assert late.status == PaymentStatus.ERROR and late.message.startswith("Stripe refused")


def test_void_an_authorization(settings, sdk):
    customer, method = customer_with(settings, sdk)
    held = GATEWAY.authorize(settings, "auth-1", 5_000, "USD", method, customer)
    voided = GATEWAY.void(settings, "void-1", held.provider_ref)
    assert (voided.status, voided.provider_ref, voided.amount) == (
        PaymentStatus.CANCELLED, held.provider_ref, 5_000)
    assert sdk.v1.payment_intents.retrieve(held.provider_ref).status == "canceled"
    paid = GATEWAY.purchase(settings, "pay-1", 1_000, "USD", method, customer)
    assert GATEWAY.void(settings, "void-2", paid.provider_ref).status == PaymentStatus.ERROR


def test_partial_refund_then_the_rest(settings, sdk):
    customer, method = customer_with(settings, sdk)
    paid = GATEWAY.purchase(settings, "pay-1", 10_000, "USD", method, customer)
    part = GATEWAY.refund(settings, "ref-1", paid.provider_ref, 4_000, "USD")
    assert (part.status, part.amount, part.reversal) == (PaymentStatus.PROCESSED, 4_000,
                                                         "refund")
    assert part.provider_ref.startswith("re_")
    assert GATEWAY.refund(settings, "ref-1", paid.provider_ref, 4_000, "USD") == part
    rest = GATEWAY.refund(settings, "ref-2", paid.provider_ref, 6_000, "USD")
    assert (rest.status, rest.amount, rest.reversal) == (PaymentStatus.PROCESSED, 6_000,
                                                         "refund")
    refunds = sdk.v1.refunds.list({"payment_intent": paid.provider_ref}).data
    assert sorted((r.amount, r.metadata["transaction_id"]) for r in refunds) == [
        (4_000, "ref-1"), (6_000, "ref-2")]
    (charge,) = charges(sdk)
    assert (charge.amount_refunded, charge.refunded) == (10_000, True)


def test_refund_of_an_uncaptured_authorization_voids_it(settings, sdk):
    customer, method = customer_with(settings, sdk)
    held = GATEWAY.authorize(settings, "auth-1", 5_000, "USD", method, customer)
    part = GATEWAY.refund(settings, "ref-0", held.provider_ref, 2_000, "USD")
    assert part.status == PaymentStatus.ERROR and "released whole" in part.message
    released = GATEWAY.refund(settings, "ref-1", held.provider_ref, 5_000, "USD")
    assert (released.status, released.reversal, released.provider_ref) == (
        PaymentStatus.PROCESSED, "void", held.provider_ref)
    assert sdk.v1.payment_intents.retrieve(held.provider_ref).status == "canceled"
    assert GATEWAY.refund(settings, "ref-1", held.provider_ref, 5_000, "USD") == released
    twice = GATEWAY.refund(settings, "ref-2", held.provider_ref, 5_000, "USD")
    assert twice.status == PaymentStatus.ERROR
    assert sdk.v1.refunds.list().data == []


def test_a_failed_payment_is_not_refunded(settings, sdk):
    customer, method = customer_with(settings, sdk, DECLINES_ON_CHARGE)
    GATEWAY.purchase(settings, "pay-1", 900, "USD", method, customer)
    (failed,) = sdk.v1.payment_intents.list().data
    result = GATEWAY.refund(settings, "ref-1", failed.id, 900, "USD")
    assert result.status == PaymentStatus.ERROR and "Nothing was paid" in result.message


def test_get_payment_info_finds_payments_and_refunds_by_our_id(settings, sdk):
    customer, method = customer_with(settings, sdk)
    declining = GATEWAY.save_method(settings, customer, token(sdk, DECLINES_ON_CHARGE))
    paid = GATEWAY.purchase(settings, "pay-1", 4_200, "USD", method, customer)
    GATEWAY.purchase(settings, "pay-2", 800, "USD", declining.provider_ref, customer)
    refund = GATEWAY.refund(settings, "ref-1", paid.provider_ref, 200, "USD")

    found = GATEWAY.get_payment_info(settings, "pay-1")
    assert (found.status, found.provider_ref, found.amount, found.currency) == (
        PaymentStatus.PROCESSED, paid.provider_ref, 4_200, "USD")
    assert GATEWAY.get_payment_info(settings, "pay-1", paid.provider_ref) == found
    declined = GATEWAY.get_payment_info(settings, "pay-2")
    assert (declined.status, declined.decline_code) == (PaymentStatus.ERROR, "card_declined")
    for ref in (None, paid.provider_ref, refund.provider_ref):
        again = GATEWAY.get_payment_info(settings, "ref-1", ref)
        assert (again.status, again.provider_ref, again.amount, again.reversal) == (
            PaymentStatus.PROCESSED, refund.provider_ref, 200, "refund")
    missing = GATEWAY.get_payment_info(settings, "never-sent")
    assert missing.status == PaymentStatus.ERROR and "no payment" in missing.message


def test_lost_answer_is_undefined_then_reconciled_and_not_charged_twice(settings, sdk,
                                                                       stripe_server):
    customer, method = customer_with(settings, sdk)
    stripe_server.delay = 1.5  # longer than the 1 s timeout; localstripe still charges
    lost = GATEWAY.purchase({**settings, "timeout": 1}, "pay-1", 6_000, "USD", method, customer)
    assert lost.status == PaymentStatus.UNDEFINED and "outcome is unknown" in lost.message
    stripe_server.delay = 0
    deadline = time.monotonic() + 5
    info = GATEWAY.get_payment_info(settings, "pay-1")
    while info.status != PaymentStatus.PROCESSED and time.monotonic() < deadline:
        time.sleep(0.1)
        info = GATEWAY.get_payment_info(settings, "pay-1")
    assert (info.status, info.amount) == (PaymentStatus.PROCESSED, 6_000)
    retried = GATEWAY.purchase(settings, "pay-1", 6_000, "USD", method, customer)
    assert (retried.status, retried.provider_ref) == (PaymentStatus.PROCESSED, info.provider_ref)
    assert len(charges(sdk)) == 1


def test_unreachable_or_failing_stripe_is_undefined(settings, sdk, stripe_server):
    customer, method = customer_with(settings, sdk)
    paid = GATEWAY.purchase(settings, "pay-0", 1_000, "USD", method, customer)
    closed = {**settings, "api_base": stripe_server.closed_url()}
    for result in (GATEWAY.purchase(closed, "pay-1", 1_000, "USD", method, customer),
                   GATEWAY.authorize(closed, "auth-1", 1_000, "USD", method, customer),
                   GATEWAY.capture(closed, "cap-1", paid.provider_ref, 1_000, "USD"),
                   GATEWAY.void(closed, "void-1", paid.provider_ref),
                   GATEWAY.get_payment_info(closed, "pay-0")):
        assert result.status == PaymentStatus.UNDEFINED, result
    # a refund looks the payment up first: unreachable there, nothing was given back
    refund = GATEWAY.refund(closed, "ref-1", paid.provider_ref, 500, "USD")
    assert refund.status == PaymentStatus.ERROR and "Nothing was refunded" in refund.message
    with pytest.raises(GatewayUnavailable):
        GATEWAY.create_customer(closed, "SUB-2", "Bob", "bob@example.org")
    stripe_server.fail_with = 503
    assert GATEWAY.purchase(settings, "pay-2", 1_000, "USD", method,
                            customer).status == PaymentStatus.UNDEFINED
    stripe_server.fail_with = None
    assert len(charges(sdk)) == 1


def test_webhook_with_a_good_signature_names_our_payment(settings):
    intent = {"id": "pi_1", "object": "payment_intent", "amount": 4_999, "currency": "usd",
              "status": "succeeded", "metadata": {"transaction_id": "pay-7"}}
    body = event("payment_intent.succeeded", intent, "evt_42")
    result = GATEWAY.handle_webhook(settings, None, sign(body), body)
    assert (result.status, result.transaction_id, result.amount, result.provider_ref,
            result.event_id) == (PaymentStatus.PROCESSED, "pay-7", 4_999, "pi_1", "evt_42")
    lower = {k.lower(): v for k, v in sign(body).items()}  # header names in any case
    assert GATEWAY.handle_webhook(settings, None, lower, body) == result

    failed = {**intent, "status": "requires_payment_method", "last_payment_error": {
        "code": "card_declined", "decline_code": "insufficient_funds",
        "message": "Your card has insufficient funds."}}
    body = event("payment_intent.payment_failed", failed, "evt_43")
    result = GATEWAY.handle_webhook(settings, None, sign(body), body)
    assert (result.status, result.decline_code, result.event_id) == (
        PaymentStatus.ERROR, "insufficient_funds", "evt_43")

    body = event("customer.created", {"id": "cus_1", "object": "customer"})
    assert GATEWAY.handle_webhook(settings, None, sign(body), body) is None


def test_webhook_with_a_bad_signature_is_refused(settings):
    body = event("payment_intent.succeeded", {"id": "pi_1", "amount": 100, "currency": "usd",
                                              "status": "succeeded", "metadata": {}})
    cases = [
        sign(body, "whsec_someone_else"),
        sign(body, at=int(time.time()) - 3_600),  # an old (replayed) delivery
        sign(body + b" "),  # the body was changed after signing
        {"Stripe-Signature": "garbage"},
        {},
    ]
    for headers in cases:
        with pytest.raises(ValueError, match="Stripe webhook refused"):
            GATEWAY.handle_webhook(settings, None, headers, body)
    with pytest.raises(ValueError, match="webhook_secret"):
        GATEWAY.handle_webhook({**settings, "webhook_secret": None}, None, sign(body), body)


def test_charge_refunded_webhook_names_the_refund_or_the_payment(settings, sdk):
    refund = {"id": "re_1", "object": "refund", "amount": 300, "currency": "usd",
              "status": "succeeded", "created": 2, "metadata": {"transaction_id": "ref-9"}}
    older = {**refund, "id": "re_0", "amount": 100, "created": 1, "metadata": {}}
    charge = {"id": "ch_1", "object": "charge", "amount": 1_000, "amount_refunded": 400,
              "currency": "usd", "payment_intent": "pi_x", "metadata": {},
              "refunds": {"data": [older, refund]}}
    body = event("charge.refunded", charge, "evt_9")
    result = GATEWAY.handle_webhook(settings, None, sign(body), body)
    assert (result.status, result.transaction_id, result.amount, result.provider_ref,
            result.reversal, result.event_id) == (
        PaymentStatus.PROCESSED, "ref-9", 300, "re_1", "refund", "evt_9")

    # refunded in Stripe's dashboard: no id of ours on it, so the payment's, from its intent
    customer, method = customer_with(settings, sdk)
    paid = GATEWAY.purchase(settings, "pay-3", 1_000, "USD", method, customer)
    foreign = {**charge, "payment_intent": paid.provider_ref,
               "refunds": {"data": [{**refund, "metadata": {}}]}}
    body = event("charge.refunded", foreign, "evt_10")
    result = GATEWAY.handle_webhook(settings, None, sign(body), body)
    assert (result.transaction_id, result.amount, result.reversal) == ("pay-3", 300, "refund")


def test_events_localstripe_delivers_are_verified_and_translated(settings, sdk, stripe_server):
    inbox = stripe_server.deliver_webhooks(WEBHOOK_SECRET)
    customer, method = customer_with(settings, sdk)
    paid = GATEWAY.purchase(settings, "pay-1", 2_000, "USD", method, customer)
    headers, body = inbox.wait_for("payment_intent.succeeded")
    result = GATEWAY.handle_webhook(settings, None, headers, body)
    assert (result.status, result.transaction_id, result.provider_ref) == (
        PaymentStatus.PROCESSED, "pay-1", paid.provider_ref)
    assert result.event_id == json.loads(body)["id"] and result.event_id.startswith("evt_")

    declining = GATEWAY.save_method(settings, customer, token(sdk, DECLINES_ON_CHARGE))
    GATEWAY.purchase(settings, "pay-2", 500, "USD", declining.provider_ref, customer)
    headers, body = inbox.wait_for("payment_intent.payment_failed")
    result = GATEWAY.handle_webhook(settings, None, headers, body)
    assert (result.status, result.transaction_id, result.decline_code) == (
        PaymentStatus.ERROR, "pay-2", "card_declined")
    with pytest.raises(ValueError):
        GATEWAY.handle_webhook({**settings, "webhook_secret": "whsec_other"}, None, headers,
                               body)


def test_amounts_follow_stripes_currency_units(settings, sdk):
    assert [stripe_amount(a, c) for a, c in ((1_999, "USD"), (500, "JPY"), (7, "ISK"),
                                             (1_230, "BHD"))] == [1_999, 500, 700, 1_230]
    assert (our_amount(700, "ISK"), our_amount(500, "JPY")) == (7, 500)
    customer, method = customer_with(settings, sdk)
    result = GATEWAY.purchase(settings, "pay-isk", 7, "ISK", method, customer)
    assert (result.status, result.amount, result.currency) == (PaymentStatus.PROCESSED, 7, "ISK")
    assert sdk.v1.payment_intents.retrieve(result.provider_ref).amount == 700


def test_missing_secret_key_is_an_error_not_a_crash(settings):
    bare = {**settings, "secret_key": None}
    result = GATEWAY.purchase(bare, "pay-1", 100, "USD", "pm_x", "cus_x")
    assert result.status == PaymentStatus.ERROR and "secret_key" in result.message
    assert GATEWAY.refund(bare, "ref-1", "pi_x", 100, "USD").status == PaymentStatus.ERROR
    with pytest.raises(ValueError, match="secret_key"):
        GATEWAY.create_customer(bare, "SUB-1", "Ada", "ada@example.org")


def test_methods_match_the_interface():
    assert GATEWAY.methods == ("card",) and GATEWAY.saves_methods is True
    for name in ("purchase", "authorize", "capture", "void", "refund", "get_payment_info",
                 "handle_webhook", "create_customer", "save_method", "remove_method"):
        ours = inspect.signature(getattr(StripeGateway, name))
        assert ours.parameters.keys() == inspect.signature(
            getattr(PaymentGateway, name)).parameters.keys(), name


def test_keys_are_stored_encrypted_and_used(app, make_tenant, stripe_server, sdk):
    tenant = make_tenant("Stripe Fiber")
    values = {"publishable_key": PUBLISHABLE_KEY, "api_base": stripe_server.url}
    with app.app_context(), acting_as(tenant):
        with pytest.raises(ValidationFailed) as refused:
            configure_plugin(db.session, "stripe", True, values)
        assert "secret_key" in refused.value.errors
        configure_plugin(db.session, "stripe", True, {**values, "secret_key": SECRET_KEY,
                                                      "webhook_secret": WEBHOOK_SECRET})
        db.session.commit()
        raw = db.session.execute(sa.text(
            "SELECT config, secret_config FROM plugin_configuration WHERE plugin_id = 'stripe'"
        )).one()
        for secret in (SECRET_KEY, WEBHOOK_SECRET):
            assert secret not in str(raw.config) and secret not in raw.secret_config
        settings = plugin_settings(db.session, "stripe")
        (gateway,) = app.extensions["headend_plugins"].plugins_for(tenant, "payment_gateway")
    assert (settings["secret_key"], settings["timeout"]) == (SECRET_KEY, 30)
    assert gateway.plugin_id == "stripe"
    customer, method = customer_with(settings, sdk)
    assert gateway.purchase(settings, "pay-1", 1_000, "USD", method,
                            customer).status == PaymentStatus.PROCESSED


def test_gateway_is_found_through_its_entry_point(app):
    gateways = {p.plugin_id: p for p in
                app.extensions["headend_plugins"].of_kind("payment_gateway")}
    assert isinstance(gateways["stripe"], StripeGateway)
