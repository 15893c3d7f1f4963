"""The issue's signup flow in a real browser: a prospect picks a package on the tenant's public
page, fills in their details, types a card into the Stripe.js stand-in localstripe serves, and
lands on the thank-you page; the subscription is active and its first invoice paid."""

from headend.billing.models import Invoice
from headend.db import db
from headend.payments.models import Payment
from headend.subscribers.models import Subscriber
from headend.tenancy.context import acting_as
from sqlalchemy import select

from tests.payments_helpers import enable_stripe
from tests.peers import stripe as peer
from tests.signup_helpers import signup_package

localstripe_session, stripe_server = peer.localstripe_session, peer.stripe_server  # fixtures


def _allow_cross_origin(page, stripe_url: str) -> None:
    """Stripe.js posts the card from the page's origin to the provider: answer with the CORS
    header localstripe sends when served by its own command (tests/peers/stripe.py does not
    copy its on_response_prepare hook)."""
    def handle(route, request):
        response = route.fetch()
        headers = {**response.headers,
                   "access-control-allow-origin": request.headers.get("origin", "*")}
        route.fulfill(response=response, headers=headers)
    page.route(f"{stripe_url}/v1/**", handle)


def test_a_prospect_signs_up_with_a_card_and_is_active(app, live_server, page, make_tenant,
                                                        stripe_server):
    tenant = make_tenant("Valley Fiber", "valley-fiber")
    with app.app_context(), acting_as(tenant):
        enable_stripe(db.session, stripe_server.url)
        signup_package(db.session, name="Home Fiber", customer_type="residential", pays=True,
                       invoice=True, activate=True, info_prompt="Where should we install?")
        signup_package(db.session, name="Office Fiber", customer_type="business")
        db.session.commit()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _allow_cross_origin(page, stripe_server.url)

    page.goto(f"{live_server}/signup/valley-fiber/")
    page.click("text=Residential")
    assert page.locator("section.package").count() == 1
    page.click("text=Choose Home Fiber")
    page.wait_for_url("**/signup/valley-fiber/*")
    page.fill("#first_name", "Rosa")
    page.fill("#last_name", "Prospect")
    page.fill("#email", "rosa@example.test")
    page.fill("#phone", "555 0100")
    page.fill("#service_line1", "12 Elm St")
    page.fill("#service_city", "Springfield")
    page.fill("#service_postal_code", "62701")
    page.fill("#additional_info", "Basement, next to the meter")
    card = page.locator(".card-element")
    card.locator("input[placeholder=number]").fill("4242424242424242")
    card.locator("input[placeholder=exp_month]").fill("12")
    card.locator("input[placeholder=exp_year]").fill("30")
    card.locator("input[placeholder=cvc]").fill("123")
    card.locator("input[placeholder=postal_code]").fill("62701")
    page.click("#signup-submit")
    page.wait_for_url("**/signup/valley-fiber/welcome")
    account = page.inner_text("#account-number")
    assert "Your service is active" in page.inner_text("#next-step")
    assert "We received your payment" in page.inner_text("main")
    assert errors == []

    with app.app_context(), acting_as(tenant):
        s = db.session
        sub = s.scalar(select(Subscriber).where(Subscriber.account_number == account))
        (subscription,) = sub.subscriptions
        assert (sub.display_name, sub.status, subscription.status) == (
            "Rosa Prospect", "active", "active")
        (invoice,) = s.scalars(select(Invoice).where(Invoice.subscriber_id == sub.id)).all()
        (payment,) = s.scalars(select(Payment).where(Payment.subscriber_id == sub.id)).all()
        assert (invoice.status, invoice.amount_paid) == ("paid", invoice.total)
        assert (payment.status, payment.amount, payment.source) == (
            "processed", invoice.total, "signup")
        assert payment.saved_method.last4 == "4242"
