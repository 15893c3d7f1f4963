"""The public signup page end to end over HTTP, with cards through the Stripe plugin against
localstripe: packages listed and filtered, signups with and without payment (invoice and
activation per the package's options), declined cards that leave nothing behind, and the abuse
guards (CSRF, honeypot, rate limit) and 404s."""

from __future__ import annotations

import re

import pytest
from headend.app import create_app
from headend.billing.models import Invoice
from headend.db import db
from headend.mail.models import OutboundEmail
from headend.payments.card_form import card_form_context
from headend.payments.models import Payment, SavedPaymentMethod
from headend.signup.models import SignupAttempt
from headend.subscribers.models import ServiceInstance, Subscriber, SubscriberNote, Subscription
from headend.tenancy.context import acting_as
from headend.tenancy.models import Tenant
from headend.testing import app_settings
from sqlalchemy import select

from tests.payments_helpers import card_token, enable_stripe, sdk
from tests.peers import stripe as peer
from tests.signup_helpers import count, form, signup_package, submit, text

localstripe_session, stripe_server = peer.localstripe_session, peer.stripe_server  # fixtures

SLUG = "valley-signup"
DECLINES_ON_CHARGE = "4000000000000341"
REFUSED_AT_ATTACH = "4000000000000002"


@pytest.fixture
def isp(app, make_tenant, stripe_server):
    """A tenant taking cards through Stripe (localstripe): its id."""
    tenant = make_tenant("Valley Signup", SLUG)
    with app.app_context(), acting_as(tenant):
        enable_stripe(db.session, stripe_server.url)
        db.session.commit()
    return tenant


def _in(app, tenant, work):
    with app.app_context(), acting_as(tenant):
        result = work(db.session)
        db.session.commit()
        return result


def _package(app, tenant, **options) -> int:
    return _in(app, tenant, lambda s: signup_package(s, **options).id)


def _nothing_created(s) -> None:
    assert [count(s, m) for m in (Subscriber, Subscription, Invoice, Payment,
                                  SavedPaymentMethod, OutboundEmail)] == [0, 0, 0, 0, 0, 0]


def peer_charges(url) -> list:
    return sdk(url).v1.charges.list({"limit": 100}).data


def _attempts(s) -> list[tuple]:
    return [(a.status, a.reason) for a in s.scalars(select(SignupAttempt)
                                                    .order_by(SignupAttempt.id))]


# --- the page --------------------------------------------------------------------------------

def test_packages_are_listed_and_filtered_by_customer_type(app, client, isp):
    def catalog(s):
        signup_package(s, name="Home 100", customer_type="residential")
        signup_package(s, name="Office 500", customer_type="business")
        signup_package(s, name="Any 50", customer_type="both")
        signup_package(s, name="Staff Only", signup=False)
        signup_package(s, name="Retired", active=False)
    _in(app, isp, catalog)
    page = text(client.get(f"/signup/{SLUG}/"))
    assert all(name in page for name in ("Home 100", "Office 500", "Any 50"))
    assert "Staff Only" not in page and "Retired" not in page
    assert "40.00 USD / month" in page and "110.00 USD / quarter" in page
    assert "Setup fee 25.00 USD" in page
    business = text(client.get(f"/signup/{SLUG}/?type=business"))
    assert "Office 500" in business and "Any 50" in business and "Home 100" not in business
    home = text(client.get(f"/signup/{SLUG}/?type=residential"))
    assert "Home 100" in home and "Any 50" in home and "Office 500" not in home


def test_unknown_or_inactive_tenants_and_unoffered_packages_are_404(app, client, isp,
                                                                   make_tenant):
    offered = _package(app, isp)
    hidden = _package(app, isp, signup=False)
    other = make_tenant("Other ISP", "other-isp")
    theirs = _package(app, other)
    assert client.get("/signup/nobody/").status_code == 404
    assert client.get(f"/signup/{SLUG}/{hidden}").status_code == 404
    assert submit(client, SLUG, hidden).status_code == 404
    # another tenant's package through this tenant's page
    assert client.get(f"/signup/{SLUG}/{theirs}").status_code == 404
    assert submit(client, SLUG, theirs).status_code == 404
    assert client.get(f"/signup/other-isp/{theirs}").status_code == 200

    def suspend(s):
        s.get(Tenant, isp).active = False
    _in(app, None, suspend)
    assert client.get(f"/signup/{SLUG}/").status_code == 404
    assert client.get(f"/signup/{SLUG}/{offered}").status_code == 404
    _in(app, isp, _nothing_created)


# --- without payment -------------------------------------------------------------------------

def test_signup_invoiced_and_activated_per_the_package(app, client, isp):
    package = _package(app, isp, invoice=True, activate=True, info_prompt="Gate code?")
    page = client.get(f"/signup/{SLUG}/{package}").get_data(as_text=True)
    assert "Gate code?" in page and 'name="website"' in page and "card_token" not in page
    resp = submit(client, SLUG, package, additional_info="4711#", billing_cycle="quarterly")
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/signup/{SLUG}/welcome")
    welcome = text(client.get(resp.headers["Location"]))
    assert "Your account number is 000001" in welcome and "Your service is active" in welcome
    assert "We have emailed rosa@example.test a link to set up your online account" in welcome

    def check(s):
        sub = s.scalar(select(Subscriber))
        assert (sub.account_number, sub.display_name, sub.email, sub.phone, sub.service_city,
                sub.status, sub.customer_type, sub.billing_cycle) == (
            "000001", "Rosa Prospect", "rosa@example.test", "+1 555 0100", "Springfield",
            "active", "residential", "quarterly")
        (note,) = s.scalars(select(SubscriberNote)).all()
        assert note.body == "Gate code?\n4711#" and note.author == "online signup"
        (subscription,) = sub.subscriptions
        assert (subscription.status, subscription.billing_cycle) == ("active", "quarterly")
        (service,) = s.scalars(select(ServiceInstance)).all()
        assert service.status == "active" and service.username and service.password
        (invoice,) = s.scalars(select(Invoice)).all()
        assert invoice.status == "open" and invoice.subscriber_id == sub.id
        assert {line.kind for line in invoice.lines} >= {"setup", "recurring"}
        assert count(s, Payment) == 0
        assert _attempts(s) == [("completed", None)]
        (email,) = s.scalars(select(OutboundEmail)).all()  # the portal invitation
        assert (email.kind, email.to_address, email.subscriber_id) == (
            "portal_invite", "rosa@example.test", sub.id)
        assert f"/portal/{SLUG}/set-password/" in email.body_text
    _in(app, isp, check)


def test_emailed_links_use_the_public_address_and_a_taken_email_gets_no_invitation(
        app, client, isp):
    package = _package(app, isp, invoice=True, activate=True)
    saved = app.config.get("HEADEND_PUBLIC_URL")
    app.config["HEADEND_PUBLIC_URL"] = "https://billing.valley.example/"
    try:
        resp = client.post(f"/signup/{SLUG}/{package}", data=form(),
                           headers={"Host": "evil.example"})
    finally:
        app.config["HEADEND_PUBLIC_URL"] = saved
    assert resp.status_code == 302
    # a second prospect with the same email: a subscriber, but no portal login squatted
    assert submit(client, SLUG, package, nonce="second-form-0123456789",
                  first_name="Otto").status_code == 302

    def check(s):
        (email,) = s.scalars(select(OutboundEmail)).all()
        assert email.body_text.count("https://billing.valley.example/portal/") == 1
        assert "evil.example" not in email.body_text
        assert count(s, Subscriber) == 2
    _in(app, isp, check)


def test_behind_a_proxy_the_visitors_address_is_counted(database_url, make_tenant):
    app = create_app(overrides={**app_settings(database_url), "HEADEND_PROXY_HOPS": 1})
    tenant = make_tenant("Proxied ISP", "proxied")
    package = _package(app, tenant)
    client = app.test_client()
    client.post(f"/signup/proxied/{package}", data=form(website="bot"),
                headers={"X-Forwarded-For": "203.0.113.9"})

    def check(s):
        assert [a.ip for a in s.scalars(select(SignupAttempt))] == ["203.0.113.9"]
    _in(app, tenant, check)


def test_signup_without_options_waits_for_staff(app, client, isp):
    package = _package(app, isp, internet=False)
    resp = submit(client, SLUG, package)
    assert resp.status_code == 302
    assert "schedule your installation" in text(client.get(resp.headers["Location"]))

    def check(s):
        sub = s.scalar(select(Subscriber))
        (subscription,) = sub.subscriptions
        assert (sub.status, subscription.status, subscription.bill_start_date) == (
            "prospect", "pending", None)
        assert [svc.status for svc in subscription.services] == ["pending"]
        assert count(s, Invoice) == 0
    _in(app, isp, check)


def test_bad_details_are_named_kept_and_create_nothing(app, client, isp):
    package = _package(app, isp, customer_type="business", info_prompt="Tax id?")
    resp = submit(client, SLUG, package, company="", email="not-an-email",
                  billing_cycle="annual", service_city="")
    assert resp.status_code == 422
    page = resp.get_data(as_text=True)
    for field in ("company", "email", "billing_cycle", "service_city", "additional_info"):
        assert f'data-field="{field}"' in page
    assert "is required for a business" in page and "is not an email address" in page
    assert 'value="12 Elm St"' in page and 'value="not-an-email"' in page

    def check(s):
        _nothing_created(s)
        ((status, reason),) = _attempts(s)
        assert status == "refused" and "company" in reason
    _in(app, isp, check)


# --- with payment ----------------------------------------------------------------------------

def test_good_card_pays_the_first_invoice_and_activates(app, client, isp, stripe_server):
    package = _package(app, isp, pays=True, invoice=True, activate=True)
    page = client.get(f"/signup/{SLUG}/{package}").get_data(as_text=True)
    assert f"{stripe_server.url}/js.stripe.com/v3/" in page and 'name="card_token"' in page
    assert "charged today for your first invoice" in page
    resp = submit(client, SLUG, package, card_token=card_token(stripe_server.url))
    assert resp.status_code == 302
    welcome = text(client.get(resp.headers["Location"]))
    assert "We received your payment" in welcome and "Your service is active" in welcome

    def check(s):
        sub = s.scalar(select(Subscriber))
        (invoice,) = s.scalars(select(Invoice)).all()
        (payment,) = s.scalars(select(Payment)).all()
        assert (payment.status, payment.source, payment.method, payment.amount) == (
            "processed", "signup", "card", invoice.total)
        assert payment.transaction_id == "signup-nonce-0123456789abcdef"
        assert (invoice.status, invoice.amount_paid) == ("paid", invoice.total)
        assert sub.subscriptions[0].status == "active" and sub.status == "active"
        (card,) = s.scalars(select(SavedPaymentMethod)).all()
        assert (card.subscriber_id, card.last4, card.is_default) == (sub.id, "4242", True)
        ((status, _),) = _attempts(s)
        attempt = s.scalar(select(SignupAttempt))
        assert (status, attempt.subscriber_id, attempt.payment_id) == (
            "completed", sub.id, payment.id)
    _in(app, isp, check)


def test_the_same_form_sent_again_charges_once(app, client, isp, stripe_server):
    package = _package(app, isp, pays=True, invoice=True, activate=True)
    assert submit(client, SLUG, package, card_token=card_token(stripe_server.url)
                  ).status_code == 302
    again = submit(client, SLUG, package, card_token=card_token(stripe_server.url))
    assert again.status_code == 422 and "already sent" in text(again)

    def check(s):
        assert [count(s, m) for m in (Subscriber, Subscription, Invoice, Payment)] == [
            1, 1, 1, 1]
    _in(app, isp, check)
    assert len(peer_charges(stripe_server.url)) == 1


def test_a_free_signup_sent_twice_signs_up_once(app, client, isp):
    package = _package(app, isp, invoice=True, activate=True)
    assert submit(client, SLUG, package).status_code == 302
    again = submit(client, SLUG, package)
    assert again.status_code == 422 and "already sent" in text(again)
    assert submit(client, SLUG, package, nonce="another-form-0123456789",
                  email="otto@example.test").status_code == 302  # a new form: a new signup

    def check(s):
        assert [count(s, m) for m in (Subscriber, Subscription, Invoice)] == [2, 2, 2]
        assert sorted(status for status, _ in _attempts(s)) == [
            "completed", "completed", "refused"]
    _in(app, isp, check)


def test_without_invoice_the_charge_is_credit_for_the_first_invoice(app, client, isp,
                                                                    stripe_server):
    package = _package(app, isp, pays=True, activate=False)
    page = client.get(f"/signup/{SLUG}/{package}").get_data(as_text=True)
    assert "credited to your first invoice" in page
    resp = submit(client, SLUG, package, card_token=card_token(stripe_server.url))
    assert resp.status_code == 302

    def check(s):
        (payment,) = s.scalars(select(Payment)).all()
        assert payment.status == "processed" and payment.unapplied == payment.amount
        assert payment.amount >= 6500  # the setup fee and (at least part of) a month
        assert count(s, Invoice) == 0
        (subscription,) = s.scalars(select(Subscription)).all()
        assert subscription.status == "pending" and subscription.bill_start_date is not None
    _in(app, isp, check)


@pytest.mark.parametrize("number", [DECLINES_ON_CHARGE, REFUSED_AT_ATTACH])
def test_a_declined_card_creates_nothing_and_says_why(app, client, isp, stripe_server, number):
    package = _package(app, isp, pays=True, invoice=True, activate=True,
                       info_prompt="Gate code?")
    resp = submit(client, SLUG, package, additional_info="9#",
                  card_token=card_token(stripe_server.url, number))
    assert resp.status_code == 422
    page = text(resp)
    assert "Your card:" in page and "declined" in page.lower()
    html = resp.get_data(as_text=True)
    assert 'value="Rosa"' in html and 'value="rosa@example.test"' in html and ">9#<" in html
    assert 'name="card_token" value=""' in html  # a new card is typed, never the old token
    nonce = re.search(r'name="nonce" value="([^"]+)"', html).group(1)
    assert nonce != form()["nonce"]  # a fresh id for the next charge

    def check(s):
        _nothing_created(s)
        assert count(s, SubscriberNote) == 0
        ((status, reason),) = _attempts(s)
        assert status == "failed" and "declined" in reason.lower()
    _in(app, isp, check)
    # The next prospect is not refused by the provider: a fresh account number and customer.
    resp = submit(client, SLUG, package, additional_info="1#", first_name="Otto",
                  email="otto@example.test", nonce=nonce,
                  card_token=card_token(stripe_server.url))
    assert resp.status_code == 302

    def after(s):
        sub = s.scalar(select(Subscriber))
        assert sub.first_name == "Otto" and sub.account_number == "000002"
        assert s.scalar(select(Invoice)).status == "paid"
    _in(app, isp, after)


def test_stripe_unreachable_creates_nothing(app, client, isp, stripe_server):
    package = _package(app, isp, pays=True, invoice=True)
    token = card_token(stripe_server.url)
    stripe_server.fail_with = 503
    resp = submit(client, SLUG, package, card_token=token)
    assert resp.status_code == 422 and "could not be reached" in text(resp)

    def check(s):
        _nothing_created(s)
        ((status, reason),) = _attempts(s)
        assert status == "failed" and "could not be reached" in reason
    _in(app, isp, check)


def test_a_package_requiring_payment_needs_the_card(app, client, isp):
    package = _package(app, isp, pays=True)
    resp = submit(client, SLUG, package)
    assert resp.status_code == 422 and "enter your card" in text(resp)
    _in(app, isp, _nothing_created)


def test_without_a_card_gateway_payment_packages_cannot_be_signed_up_for(app, client,
                                                                         make_tenant):
    tenant = make_tenant("Cash Only", "cash-only")
    package = _package(app, tenant, pays=True)
    page = text(client.get(f"/signup/cash-only/{package}"))
    assert "Card payments are not available online" in page
    assert _in(app, tenant, card_form_context) is None
    assert submit(client, "cash-only", package, card_token="pm_x").status_code == 422
    _in(app, tenant, _nothing_created)


def test_card_form_context_points_at_the_gateways_browser_library(app, isp, stripe_server):
    assert _in(app, isp, card_form_context) == {
        "plugin_id": "stripe", "publishable_key": peer.PUBLISHABLE_KEY,
        "js_url": f"{stripe_server.url}/js.stripe.com/v3/"}


# --- abuse -----------------------------------------------------------------------------------

def test_the_honeypot_thanks_the_bot_and_creates_nothing(app, client, isp):
    package = _package(app, isp, invoice=True, activate=True)
    resp = submit(client, SLUG, package, website="http://spam.example")
    assert resp.status_code == 302
    page = text(client.get(resp.headers["Location"]))
    assert "We have received your request" in page and "account number" not in page

    def check(s):
        _nothing_created(s)
        assert _attempts(s) == [("refused", "honeypot")]
    _in(app, isp, check)


def test_submits_are_rate_limited_per_address(app, client, isp, monkeypatch):
    monkeypatch.setitem(app.config, "SIGNUP_RATE_LIMIT", 2)
    package = _package(app, isp)
    assert submit(client, SLUG, package, email="bad").status_code == 422
    assert submit(client, SLUG, package, email="bad").status_code == 422
    resp = submit(client, SLUG, package)
    assert resp.status_code == 429 and "Too many signups" in text(resp)
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "10.1.2.3"
    assert other.post(f"/signup/{SLUG}/{package}", data=form()).status_code == 302

    def check(s):
        assert [a[0] for a in _attempts(s)] == ["refused", "refused", "refused", "completed"]
        assert _attempts(s)[2] == ("refused", "rate limit")
        assert count(s, Subscriber) == 1
    _in(app, isp, check)


def test_a_post_without_the_csrf_token_is_refused(app, database_url, isp):
    csrf_app = create_app(overrides={**app_settings(database_url), "WTF_CSRF_ENABLED": True})
    package = _package(app, isp)
    client = csrf_app.test_client()
    page = client.get(f"/signup/{SLUG}/{package}").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert submit(client, SLUG, package).status_code == 400
    _in(app, isp, _nothing_created)
    assert submit(client, SLUG, package, csrf_token=token).status_code == 302
    assert _in(app, isp, lambda s: count(s, Subscriber)) == 1


# --- staff -----------------------------------------------------------------------------------

def test_staff_see_the_tenants_signup_attempts_only(app, client, isp, login_as, make_tenant):
    package = _package(app, isp)
    assert submit(client, SLUG, package).status_code == 302
    assert submit(client, SLUG, package, website="spam", email="bot@example.test"
                  ).status_code == 302
    page = login_as(isp, "Support").get("/signups/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert html.count('data-status="completed"') == 1 and html.count('data-status="refused"') == 1
    assert "honeypot" in html and "bot@example.test" in html and f"/signup/{SLUG}/" in html
    other = login_as(make_tenant("Other ISP", "other-isp"), "Admin").get("/signups/")
    assert "bot@example.test" not in other.get_data(as_text=True)
    assert client.get("/signups/").status_code in (302, 401, 403)
