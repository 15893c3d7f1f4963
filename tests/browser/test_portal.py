"""The portal in a real browser: an invited subscriber chooses a password from the emailed link,
signs out and in again and pays an invoice with their saved card; another pays with a new card
typed into the Stripe.js stand-in localstripe serves. The invoices then read paid."""

from headend.billing.models import Invoice
from headend.db import db
from headend.payments import services as payments
from headend.tenancy.context import acting_as

from tests.memo_helpers import posted_invoice
from tests.payments_helpers import card_token, enable_stripe
from tests.peers import stripe as peer
from tests.portal_helpers import PORTAL_PASSWORD, customer, invited

localstripe_session, stripe_server = peer.localstripe_session, peer.stripe_server  # fixtures


def _allow_cross_origin(page, stripe_url: str) -> None:
    """Stripe.js posts the card from the page's origin to the provider: answer with the CORS
    header localstripe sends when served by its own command."""
    def handle(route, request):
        response = route.fetch()
        headers = {**response.headers,
                   "access-control-allow-origin": request.headers.get("origin", "*")}
        route.fulfill(response=response, headers=headers)
    page.route(f"{stripe_url}/v1/**", handle)


def _status(page, invoice_id: int) -> str:
    return page.inner_text(f"tr[data-invoice-id='{invoice_id}'] td.status")


def _customer(app, tenant, stripe_url, saved_card: bool) -> tuple[int, int, int]:
    """Ana of "valley" (cards through localstripe) owing two invoices: (subscriber, first,
    second)."""
    with app.app_context(), acting_as(tenant):
        s = db.session
        enable_stripe(s, stripe_url)
        sub = customer(s, "ana@example.test")
        first = posted_invoice(s, sub, 4999).id
        second = posted_invoice(s, sub, 2500).id
        if saved_card:
            payments.save_card(s, sub, card_token(stripe_url))
        s.commit()
    return sub, first, second


def test_a_subscriber_signs_in_and_pays_an_invoice_with_the_saved_card(
        app, live_server, page, make_tenant, stripe_server):
    tenant = make_tenant("Valley Net", "valley")
    sub, first, second = _customer(app, tenant, stripe_server.url, saved_card=True)
    link = invited(app, tenant, sub)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(f"{live_server}{link}")
    page.fill("#password", PORTAL_PASSWORD)
    page.fill("#confirm", PORTAL_PASSWORD)
    page.click("#save-password")
    page.wait_for_url("**/portal/valley/")
    assert page.inner_text("#balance") == "74.99 USD"
    page.click("#logout")
    page.wait_for_url("**/portal/valley/login")
    page.fill("#login", "Ana@Example.test")
    page.fill("#password", PORTAL_PASSWORD)
    page.click("#sign-in")
    page.wait_for_url("**/portal/valley/")

    # the first invoice, with the saved card
    page.click("text=Invoices")
    assert _status(page, first) == "open"
    page.click(f"tr[data-invoice-id='{first}'] a.pay")
    assert page.inner_text("#pay-amount") == "49.99 USD"
    assert page.is_checked("input[name=saved_method]:not([value=new])")
    page.click("#pay-submit")
    page.wait_for_url("**/portal/valley/payments/*")
    assert page.get_attribute("#payment-outcome", "data-status") == "processed"
    assert "49.99 USD" in page.inner_text("#payment-outcome")

    page.click("text=Invoices")
    assert (_status(page, first), _status(page, second)) == ("paid", "open")
    page.click("text=Overview")
    assert page.inner_text("#balance") == "25.00 USD"
    assert errors == []
    with app.app_context(), acting_as(tenant):
        assert db.session.get(Invoice, first).status == "paid"


def test_a_subscriber_pays_with_a_new_card_typed_into_the_card_element(
        app, live_server, page, make_tenant, stripe_server):
    tenant = make_tenant("Valley Net", "valley")
    sub, first, _ = _customer(app, tenant, stripe_server.url, saved_card=False)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _allow_cross_origin(page, stripe_server.url)
    page.goto(f"{live_server}{invited(app, tenant, sub)}")
    page.fill("#password", PORTAL_PASSWORD)
    page.fill("#confirm", PORTAL_PASSWORD)
    page.click("#save-password")
    page.wait_for_url("**/portal/valley/")

    page.click("text=Invoices")
    page.click(f"tr[data-invoice-id='{first}'] a.pay")
    assert page.is_checked("#use-new-card")  # no saved card: the card element shows
    card = page.locator(".card-element")
    card.locator("input[placeholder=number]").fill("5555555555554444")
    card.locator("input[placeholder=exp_month]").fill("12")
    card.locator("input[placeholder=exp_year]").fill("30")
    card.locator("input[placeholder=cvc]").fill("123")
    card.locator("input[placeholder=postal_code]").fill("62701")
    page.click("#pay-submit")
    page.wait_for_url("**/portal/valley/payments/*")
    assert page.get_attribute("#payment-outcome", "data-status") == "processed"

    page.click("text=Invoices")
    assert _status(page, first) == "paid"
    assert errors == []
    with app.app_context(), acting_as(tenant):
        (saved,) = payments.saved_methods(db.session, sub)
        assert (saved.last4, saved.is_default) == ("4444", True)
