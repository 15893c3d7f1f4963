"""Payments as staff and API clients see them: the Receive payment form (CSRF, bad input that
writes nothing, the allocation preview), payment detail, refund and void, the receipt, the
profile's sections and account history, gateway routes, the webhook endpoint, the REST API and
its permissions, and the daily reconciliation job."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time

import pytest
from headend.app import create_app
from headend.db import db
from headend.ledger.models import JournalEntry
from headend.ledger.services import set_closing_date, subscriber_balance
from headend.payments import jobs
from headend.payments import services as payments
from headend.payments.models import GatewayEvent, Payment, Refund, SavedPaymentMethod
from headend.plugins.services import set_enabled
from headend.tenancy.context import acting_as
from headend.tenancy.models import Tenant
from headend.testing import PASSWORD, app_settings
from sqlalchemy import func, select

from tests.ledger_helpers import subscriber
from tests.memo_helpers import posted_invoice
from tests.payments_helpers import (
    FEB,
    JAN,
    card_token,
    enable_manual,
    enable_stripe,
    event,
    sdk,
    sign,
)
from tests.peers import stripe as peer

localstripe_session, stripe_server = peer.localstripe_session, peer.stripe_server  # fixtures


@pytest.fixture
def isp(app, make_tenant):
    """A tenant with the manual gateway on, a subscriber and two open invoices (30.00 of
    January, 50.00 of February): (tenant id, subscriber id, [invoice ids])."""
    tenant = make_tenant("Payments ISP", "payments-isp")
    with app.app_context(), acting_as(tenant):
        enable_manual(db.session)
        sub = subscriber(db.session)
        invoices = [posted_invoice(db.session, sub, 3000, day=JAN).id,
                    posted_invoice(db.session, sub, 5000, day=FEB).id]
        db.session.commit()
    return tenant, sub, invoices


def _in(app, tenant, work):
    with app.app_context(), acting_as(tenant):
        result = work(db.session)
        db.session.commit()
        return result


def _count(app, tenant, model) -> int:
    return _in(app, tenant, lambda s: s.scalar(select(func.count()).select_from(model)))


def _form(**values) -> dict:
    return {"received_on": "2024-03-01", "method": "check", "reference": "1042",
            "amount": "60.00", **values}


# --- the Receive payment form ----------------------------------------------------------------

def test_receive_payment_form_posts_and_shows_the_payment(app, isp, login_as):
    tenant, sub, (jan, feb) = isp
    c = login_as(tenant, "Billing")
    page = c.get(f"/payments/subscriber/{sub}/receive").get_data(as_text=True)
    assert 'name="transaction_id" value="pay-' in page and "open-invoices" in page
    token = re.search(r'name="transaction_id" value="([^"]+)"', page).group(1)
    resp = c.post(f"/payments/subscriber/{sub}/receive",
                  data=_form(transaction_id=token))
    assert resp.status_code == 302
    detail = c.get(resp.headers["Location"]).get_data(as_text=True)
    assert "R-000001" in detail and "check" in detail and "1042" in detail
    assert "Payment R-000001 (check 1042)" in detail  # the ledger entry
    # the same form sent twice (a double click) records one payment
    assert c.post(f"/payments/subscriber/{sub}/receive",
                  data=_form(transaction_id=token)).status_code == 302
    assert _count(app, tenant, Payment) == 1
    assert _in(app, tenant, lambda s: subscriber_balance(s, sub)) == 2000
    profile = c.get(f"/subscriberview/profile/{sub}").get_data(as_text=True)
    assert 'id="payments"' in profile and "R-000001" in profile and "20.00" in profile
    history = c.get(f"/ledger/history/{sub}").get_data(as_text=True)
    assert "Payment R-000001 (check 1042)" in history


def test_chosen_invoice_and_the_resulting_credit_preview(app, isp, login_as):
    tenant, sub, (jan, feb) = isp
    c = login_as(tenant, "Billing")
    page = c.get(f"/payments/subscriber/{sub}/receive?amount=60.00&invoice_ids={feb}"
                 ).get_data(as_text=True)
    assert re.search(r'id="resulting-credit">10\.00', page), page[-2000:]
    resp = c.post(f"/payments/subscriber/{sub}/receive",
                  data={**_form(method="cash", reference=""), "invoice_ids": [str(feb)]})
    assert resp.status_code == 302
    assert _in(app, tenant, lambda s: s.execute(select(Payment.unapplied, Payment.method)
                                                ).one()) == (1000, "cash")


@pytest.mark.parametrize(("values", "field", "message"), [
    ({"amount": "0"}, "amount", "positive amount"),
    ({"amount": "-5.00"}, "amount", "cannot be negative"),
    ({"amount": "abc"}, "amount", "must be a number"),
    ({"method": "bitcoin"}, "method", "must be one of"),
    ({"reference": ""}, "reference", "a check needs its number"),
    ({"received_on": "yesterday"}, "received_on", "must be a date"),
])
def test_bad_input_names_the_field_and_writes_nothing(app, isp, login_as, values, field,
                                                      message):
    tenant, sub, _ = isp
    c = login_as(tenant, "Billing")
    resp = c.post(f"/payments/subscriber/{sub}/receive", data=_form(**values))
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert f'data-error-for="{field}"' in page and message in page
    assert _count(app, tenant, Payment) == 0


def test_closed_books_and_another_tenants_invoice_are_refused(app, isp, make_tenant, login_as):
    tenant, sub, _ = isp
    other = make_tenant("Other ISP", "other-isp")
    theirs = _in(app, other, lambda s: posted_invoice(s, subscriber(s), 1000).id)
    c = login_as(tenant, "Billing")
    resp = c.post(f"/payments/subscriber/{sub}/receive",
                  data={**_form(), "invoice_ids": [str(theirs)]})
    assert f"invoice {theirs} does not exist" in resp.get_data(as_text=True)
    _in(app, tenant, lambda s: set_closing_date(s, dt.date(2024, 3, 31)))
    resp = c.post(f"/payments/subscriber/{sub}/receive", data=_form())
    assert "the books are closed" in resp.get_data(as_text=True)
    assert _count(app, tenant, Payment) == 0
    # another tenant's subscriber is not there at all
    other_sub = _in(app, other, subscriber)
    assert c.get(f"/payments/subscriber/{other_sub}/receive").status_code == 404
    assert c.post(f"/payments/subscriber/{other_sub}/receive", data=_form()).status_code == 404


def test_read_only_staff_cannot_receive_or_refund(app, isp, login_as):
    tenant, sub, _ = isp
    pay = _in(app, tenant, lambda s: payments.receive_payment(s, sub, 1000, "cash", JAN).id)
    c = login_as(tenant, "ReadOnly")
    assert c.get(f"/payments/show/{pay}").status_code == 200
    assert c.get("/payments/list/").status_code == 200
    for url in (f"/payments/subscriber/{sub}/receive", f"/payments/refund/{pay}"):
        assert c.post(url, data=_form(amount="1.00")).status_code in (302, 403)
    assert c.post(f"/payments/void/{pay}").status_code in (302, 403)
    assert _count(app, tenant, Payment) == 1 and _count(app, tenant, Refund) == 0


# --- detail, refund, void, receipt, list ------------------------------------------------------

def test_refund_form_then_void_button_and_receipt(app, isp, login_as):
    tenant, sub, (jan, feb) = isp
    pay = _in(app, tenant, lambda s: payments.receive_payment(
        s, sub, 8000, "check", FEB, reference="77").id)
    c = login_as(tenant, "Billing")
    form = c.get(f"/payments/refund/{pay}").get_data(as_text=True)
    assert "80.00 USD can still be given back" in form
    too_much = c.post(f"/payments/refund/{pay}", data={"amount": "80.01",
                                                       "refunded_on": "2024-03-01"})
    assert "can still be refunded" in too_much.get_data(as_text=True)
    assert _count(app, tenant, Refund) == 0
    resp = c.post(f"/payments/refund/{pay}", data={"amount": "20.00", "reason": "goodwill",
                                                   "refunded_on": "2024-03-01"})
    assert resp.status_code == 302
    detail = c.get(f"/payments/show/{pay}").get_data(as_text=True)
    assert "Refund of payment R-000001 (check 77)" in detail and "goodwill" in detail
    assert c.post(f"/payments/void/{pay}", data={"voided_on": "2024-03-02"}).status_code == 302
    assert _in(app, tenant, lambda s: s.execute(select(Payment.status, Payment.refunded)
                                                ).one()) == ("voided", 8000)
    assert _in(app, tenant, lambda s: subscriber_balance(s, sub)) == 8000
    receipt = c.get(f"/payments/receipt/{pay}").get_data(as_text=True)
    assert "R-000001" in receipt and "VOIDED" in receipt and "Payments ISP" in receipt


def test_payments_list_filters_by_method_and_status(app, isp, login_as):
    tenant, sub, _ = isp
    _in(app, tenant, lambda s: payments.receive_payment(s, sub, 1000, "cash", JAN))
    _in(app, tenant, lambda s: payments.receive_payment(s, sub, 2000, "check", JAN,
                                                        reference="9"))
    c = login_as(tenant, "Support")
    every = c.get("/payments/list/").get_data(as_text=True)
    assert "R-000001" in every and "R-000002" in every
    checks = c.get("/payments/list/?_flt_0_method=check").get_data(as_text=True)
    assert "R-000002" in checks and "R-000001" not in checks
    assert "R-000001" in c.get(f"/payments/list/?_flt_0_subscriber_id={sub}"
                               ).get_data(as_text=True)


# --- gateway routes --------------------------------------------------------------------------

def test_gateway_routes_page(app, isp, login_as, stripe_server):
    tenant, _, _ = isp
    c = login_as(tenant, "Admin")
    plugins = c.get("/plugins/").get_data(as_text=True)
    assert 'id="gateway-routes-link"' in plugins and 'href="/payments/gateways/"' in plugins
    page = c.get("/payments/gateways/").get_data(as_text=True)
    assert 'id="route-card"' in page and "Manual payments" in page
    refused = c.post("/payments/gateways/", data={"card": "stripe"}).get_data(as_text=True)
    assert "not enabled" in refused
    _in(app, tenant, lambda s: enable_stripe(s, stripe_server.url, route=False))
    assert c.post("/payments/gateways/", data={"card": "stripe"}).status_code == 302
    assert _in(app, tenant, lambda s: payments.routes(s)["card"]) == "stripe"
    assert login_as(tenant, "Billing").post("/payments/gateways/",
                                            data={"card": ""}).status_code in (302, 403)
    assert _in(app, tenant, lambda s: payments.routes(s)["card"]) == "stripe"


# --- cards on the profile --------------------------------------------------------------------

def test_add_make_default_and_remove_cards_on_the_profile(app, isp, login_as, stripe_server):
    tenant, sub, _ = isp
    _in(app, tenant, lambda s: enable_stripe(s, stripe_server.url))
    c = login_as(tenant, "Billing")
    profile = c.get(f"/subscriberview/profile/{sub}").get_data(as_text=True)
    assert 'id="add-card"' in profile and "pk_test_headend" in profile
    for number in ("4242424242424242", "5555555555554444"):
        resp = c.post(f"/payments/subscriber/{sub}/cards",
                      data={"token": card_token(stripe_server.url, number), "method": "card",
                            "make_default": "y"})
        assert resp.status_code == 302
    bad = c.post(f"/payments/subscriber/{sub}/cards", data={"token": "pm_nope",
                                                            "method": "card"},
                 follow_redirects=True).get_data(as_text=True)
    assert "Token:" in bad
    visa, master = _in(app, tenant, lambda s: [m.id for m in s.scalars(
        select(SavedPaymentMethod).order_by(SavedPaymentMethod.id))])
    assert c.post(f"/payments/methods/{visa}/default").status_code == 302
    assert c.post(f"/payments/methods/{master}/remove").status_code == 302
    profile = c.get(f"/subscriberview/profile/{sub}").get_data(as_text=True)
    assert "visa ending 4242" in profile and "ending 4444" not in profile
    # the card pays through the form
    resp = c.post(f"/payments/subscriber/{sub}/receive",
                  data={"amount": "80.00", "method": "card", "received_on": "2024-03-01",
                        "saved_method_id": str(visa)})
    assert resp.status_code == 302
    assert _in(app, tenant, lambda s: s.scalar(select(Payment.status))) == "processed"


# --- the webhook endpoint --------------------------------------------------------------------

def test_webhook_endpoint(app, isp, stripe_server, database_url):
    tenant, sub, _ = isp
    _in(app, tenant, lambda s: enable_stripe(s, stripe_server.url))
    card = _in(app, tenant, lambda s: payments.save_card(s, sub, card_token(stripe_server.url)
                                                         ).id)
    stripe_server.fail_with = 503
    _in(app, tenant, lambda s: payments.receive_payment(
        s, sub, 3000, "card", JAN, saved_method_id=card, transaction_id="pay-web"))
    stripe_server.fail_with = None
    body = json.dumps({"id": "evt_web", "object": "event", "type": "payment_intent.succeeded",
                       "data": {"object": {
                           "id": "pi_web", "object": "payment_intent", "amount": 3000,
                           "currency": "usd", "status": "succeeded",
                           "metadata": {"transaction_id": "pay-web"}}}}).encode()
    # CSRF on, as in production: the endpoint needs no token, only the signature
    client = create_app(overrides={**app_settings(database_url),
                                   "WTF_CSRF_ENABLED": True}).test_client()
    url = "/payments/webhook/payments-isp/stripe"
    bad = client.post(url, data=body, headers=sign(body, "whsec_wrong"))
    assert bad.status_code == 400
    assert _count(app, tenant, GatewayEvent) == 0
    assert client.post(url, data=body, headers=sign(body)).get_json() == {
        "outcome": "applied"}
    assert client.post(url, data=body, headers=sign(body)).get_json() == {
        "outcome": "duplicate"}
    assert _in(app, tenant, lambda s: s.scalar(select(Payment.status))) == "processed"
    assert _count(app, tenant, GatewayEvent) == 1
    assert client.post("/payments/webhook/nobody/stripe", data=body,
                       headers=sign(body)).status_code == 404
    _in(app, tenant, lambda s: set_enabled(s, "stripe", False))
    assert client.post(url, data=body, headers=sign(body)).status_code == 404


def _undefined_card_payment(app, tenant, sub, server, transaction_id, amount=3000) -> bytes:
    """A card payment whose answer was lost, and the signed-off event that settles it."""
    _in(app, tenant, lambda s: enable_stripe(s, server.url))
    card = _in(app, tenant, lambda s: payments.save_card(s, sub, card_token(server.url)).id)
    server.fail_with = 503
    _in(app, tenant, lambda s: payments.receive_payment(
        s, sub, amount, "card", JAN, saved_method_id=card, transaction_id=transaction_id))
    server.fail_with = None
    return event("payment_intent.succeeded", {
        "id": f"pi_{transaction_id}", "object": "payment_intent", "amount": amount,
        "currency": "usd", "status": "succeeded",
        "metadata": {"transaction_id": transaction_id}}, f"evt_{transaction_id}")


def _payment_entries(app, tenant) -> int:
    return _in(app, tenant, lambda s: s.scalar(select(func.count()).select_from(
        JournalEntry).where(JournalEntry.source_type == "payment")))


def test_webhook_old_timestamp_or_bad_signature_is_400_and_writes_nothing(
        app, isp, stripe_server):
    tenant, sub, _ = isp
    body = _undefined_card_payment(app, tenant, sub, stripe_server, "pay-old")
    client = app.test_client()
    url = "/payments/webhook/payments-isp/stripe"
    an_hour_ago = int(time.time()) - 3600  # Stripe's tolerance is minutes
    for headers in (sign(body, at=an_hour_ago), sign(body, "whsec_wrong"),
                    {"Stripe-Signature": "t=1,v1=garbage"}, {}):
        resp = client.post(url, data=body, headers=headers)
        assert resp.status_code == 400, (headers, resp.get_json())
        assert "signature" in resp.get_json()["message"]
    assert _count(app, tenant, GatewayEvent) == 0 and _payment_entries(app, tenant) == 0
    assert _in(app, tenant, lambda s: s.scalar(select(Payment.status))) == "undefined"
    # the same event, signed now: processed
    assert client.post(url, data=body, headers=sign(body)).get_json() == {"outcome": "applied"}
    assert _payment_entries(app, tenant) == 1


def test_webhook_redelivered_after_a_failed_processing_is_processed(
        app, isp, stripe_server):
    tenant, sub, _ = isp
    _undefined_card_payment(app, tenant, sub, stripe_server, "pay-first")  # a saved card
    processed = _in(app, tenant, lambda s: payments.receive_payment(
        s, sub, 2000, "card", JAN, saved_method_id=s.scalar(select(SavedPaymentMethod.id)))
        .provider_ref)
    made = sdk(stripe_server.url).v1.refunds.create({"payment_intent": processed,
                                                     "amount": 500})
    body = event("charge.refunded", {
        "id": made.charge, "object": "charge", "amount": 2000, "amount_refunded": 500,
        "currency": "usd", "payment_intent": processed, "metadata": {},
        "refunds": {"data": [made.to_dict()]}}, "evt_refund_redelivered")
    client = app.test_client()
    url = "/payments/webhook/payments-isp/stripe"
    stripe_server.fail_with = 503  # the plugin must ask Stripe whose charge it is: it cannot
    assert client.post(url, data=body, headers=sign(body)).status_code == 503
    stripe_server.fail_with = None
    assert (_count(app, tenant, GatewayEvent), _count(app, tenant, Refund)) == (0, 0)
    assert client.post(url, data=body, headers=sign(body)).get_json() == {"outcome": "applied"}
    assert client.post(url, data=body, headers=sign(body)).get_json() == {
        "outcome": "duplicate"}
    assert (_count(app, tenant, GatewayEvent), _count(app, tenant, Refund)) == (1, 1)


@pytest.mark.postgresql_only  # row locks; SQLite refuses a second writer
def test_webhook_delivered_concurrently_posts_one_payment_once(app, isp, stripe_server):
    tenant, sub, _ = isp
    body = _undefined_card_payment(app, tenant, sub, stripe_server, "pay-burst")
    url = "/payments/webhook/payments-isp/stripe"
    barrier, answers, errors = threading.Barrier(4), [], []

    def deliver():
        try:
            client = app.test_client()
            barrier.wait()
            resp = client.post(url, data=body, headers=sign(body))
            answers.append((resp.status_code, resp.get_json()["outcome"]))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(answers) == [(200, "applied")] + [(200, "duplicate")] * 3
    assert _in(app, tenant, lambda s: s.scalars(select(Payment.status)).all()) == ["processed"]
    assert _count(app, tenant, GatewayEvent) == 1 and _payment_entries(app, tenant) == 1


# --- the REST API ----------------------------------------------------------------------------

def test_payment_api_contract(app, isp, api_as, make_tenant):
    tenant, sub, (jan, feb) = isp
    client, headers = api_as(tenant, "Billing")
    body = {"subscriber": sub, "amount": 6000, "method": "check", "reference": "1042",
            "received_on": "2024-03-01", "transaction_id": "api-1"}
    resp = client.post("/api/v1/payment/", json=body, headers=headers)
    assert resp.status_code == 201, resp.get_json()
    result = resp.get_json()["result"]
    assert (result["number"], result["status"], result["unapplied"]) == ("R-000001",
                                                                         "processed", 0)
    assert result["allocations"] == [{"invoice_id": jan, "amount": 3000},
                                     {"invoice_id": feb, "amount": 3000}]
    replay = client.post("/api/v1/payment/", json=body, headers=headers)
    assert replay.status_code == 200 and replay.get_json()["id"] == resp.get_json()["id"]
    got = client.get(f"/api/v1/payment/{resp.get_json()['id']}", headers=headers).get_json()
    assert got["result"]["amount"] == 6000
    listed = client.get("/api/v1/payment/", headers=headers).get_json()
    assert listed["count"] == 1
    for bad, field in (({**body, "amount": 0, "transaction_id": None}, "amount"),
                       ({**body, "amount": 10.5, "transaction_id": None}, "amount"),
                       ({**body, "method": "bitcoin", "transaction_id": None}, "method"),
                       ({**body, "received_on": "x", "transaction_id": None}, "received_on"),
                       ({**body, "no_such_field": 1}, "no_such_field"),
                       ({**body, "invoices": [999999], "transaction_id": None}, "invoice_ids"),
                       ({**body, "subscriber": 999999, "transaction_id": None}, "subscriber")):
        resp = client.post("/api/v1/payment/", json=bad, headers=headers)
        assert resp.status_code == 422 and field in resp.get_json()["message"], (bad, resp.json)
    assert _count(app, tenant, Payment) == 1
    # refunds: in part, then above what remains
    refund = client.post("/api/v1/refund/", json={
        "payment": result["id"] if "id" in result else got["id"], "amount": 1000,
        "refunded_on": "2024-03-02", "reason": "api"}, headers=headers)
    assert refund.status_code == 201 and refund.get_json()["result"]["status"] == "processed"
    over = client.post("/api/v1/refund/", json={"payment": got["id"], "amount": 5001,
                                                 "refunded_on": "2024-03-02"}, headers=headers)
    assert over.status_code == 422 and "amount" in over.get_json()["message"]
    # another tenant sees none of it
    other_client, other_headers = api_as(make_tenant("Other API ISP", "other-api"), "Admin")
    assert other_client.get(f"/api/v1/payment/{got['id']}",
                            headers=other_headers).status_code == 404
    missing = other_client.post("/api/v1/refund/", json={"payment": got["id"], "amount": 1,
                                                         "refunded_on": "2024-03-02"},
                                headers=other_headers)
    assert missing.status_code == 422 and missing.get_json()["message"] == {
        "payment": ["does not exist"]}
    # read-only roles read, never write; no credentials, nothing
    ro_client, ro_headers = api_as(tenant, "ReadOnly")
    assert ro_client.get("/api/v1/payment/", headers=ro_headers).status_code == 200
    assert ro_client.post("/api/v1/payment/", json=body, headers=ro_headers).status_code == 403
    assert client.get("/api/v1/payment/").status_code == 401


def test_saved_method_api(app, isp, api_as, stripe_server):
    tenant, sub, _ = isp
    _in(app, tenant, lambda s: enable_stripe(s, stripe_server.url))
    client, headers = api_as(tenant, "Billing")
    resp = client.post("/api/v1/saved_payment_method/", headers=headers, json={
        "subscriber": sub, "token": card_token(stripe_server.url)})
    assert resp.status_code == 201, resp.get_json()
    saved = resp.get_json()["result"]
    assert (saved["brand"], saved["last4"], saved["is_default"]) == ("visa", "4242", True)
    assert "provider_ref" not in saved
    refused = client.post("/api/v1/saved_payment_method/", headers=headers, json={
        "subscriber": sub, "token": card_token(stripe_server.url, "4000000000000002")})
    assert refused.status_code == 422 and "token" in refused.get_json()["message"]
    pay = client.post("/api/v1/payment/", headers=headers, json={
        "subscriber": sub, "amount": 3000, "method": "card", "received_on": "2024-03-01",
        "saved_method": saved["id"]})
    assert pay.status_code == 201 and pay.get_json()["result"]["status"] == "processed"
    stripe_server.fail_with = 503
    down = client.delete(f"/api/v1/saved_payment_method/{saved['id']}", headers=headers)
    assert down.status_code == 503
    stripe_server.fail_with = None
    assert client.delete(f"/api/v1/saved_payment_method/{saved['id']}",
                         headers=headers).status_code == 200
    assert client.delete(f"/api/v1/saved_payment_method/{saved['id']}",
                         headers=headers).status_code == 404


# --- CSRF and the job ------------------------------------------------------------------------

def test_the_receive_form_needs_the_csrf_token(app, isp, database_url, make_user):
    tenant, sub, _ = isp
    csrf_app = create_app(overrides={**app_settings(database_url), "WTF_CSRF_ENABLED": True})
    client = csrf_app.test_client()
    page = client.get("/login/").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    assert client.post("/login/", data={"username": make_user(tenant, "Billing"),
                                        "password": PASSWORD,
                                        "csrf_token": token}).status_code == 302
    url = f"/payments/subscriber/{sub}/receive"
    assert client.post(url, data=_form()).status_code == 400
    assert _count(app, tenant, Payment) == 0
    form = client.get(url).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    assert client.post(url, data=_form(csrf_token=token)).status_code == 302
    assert _count(app, tenant, Payment) == 1


def test_the_daily_job_reconciles_each_tenant(app, isp, stripe_server):
    tenant, sub, _ = isp
    _in(app, tenant, lambda s: enable_stripe(s, stripe_server.url))
    card = _in(app, tenant, lambda s: payments.save_card(s, sub, card_token(stripe_server.url)
                                                         ).id)
    stripe_server.fail_with = 503
    pay = _in(app, tenant, lambda s: payments.receive_payment(
        s, sub, 3000, "card", JAN, saved_method_id=card).id)
    stripe_server.fail_with = None
    # recorded long enough ago for reconciliation to ask about it
    _in(app, tenant, lambda s: setattr(s.get(Payment, pay), "created_at",
                                       dt.datetime(2024, 1, 15)))
    with app.app_context():
        done = jobs.enqueue_reconciles(dt.date(2024, 1, 16))
    assert [(e.job_id, e.status) for e in done if e.job_id.endswith(f":{tenant}:2024-01-16")
            ] == [(f"payments-reconcile:{tenant}:2024-01-16", "finished")]
    assert _in(app, tenant, lambda s: s.get(Payment, pay).status) == "failed"
    assert _in(app, tenant, lambda s: s.get(Tenant, tenant).slug) == "payments-isp"
