"""Paying in the portal through the real Stripe plugin against localstripe: an invoice paid
with a saved card, a decline shown with nothing posted, a double submit charged once, a new
card, the subscriber's cards and the autopay toggle."""

from __future__ import annotations

import re
import threading

import pytest
from headend.billing.models import Invoice
from headend.db import db
from headend.dunning.models import SubscriberCollection
from headend.ledger.services import subscriber_balance
from headend.payments import services as payments
from headend.payments.models import Payment, SavedPaymentMethod
from headend.tenancy.context import acting_as
from sqlalchemy import func, select

from tests.memo_helpers import posted_invoice
from tests.payments_helpers import card_token, enable_manual, enable_stripe, sdk
from tests.peers import stripe as peer
from tests.portal_helpers import customer, signed_in

localstripe_session, stripe_server = peer.localstripe_session, peer.stripe_server  # fixtures

DECLINES_ON_CHARGE = "4000000000000341"


class Shop:
    """Tenant "valley" taking cards through localstripe; Ana owes two invoices."""

    def __init__(self, app, tenant, sub, invoices, url):
        self.app, self.tenant, self.sub, self.invoices, self.url = app, tenant, sub, invoices, url

    def session(self):
        return _Scoped(self.app, self.tenant)

    def card(self, number="4242424242424242", default=True) -> int:
        with self.session() as s:
            saved = payments.save_card(s, self.sub, card_token(self.url, number),
                                       make_default=default)
            s.commit()
            return saved.id


class _Scoped:
    def __init__(self, app, tenant):
        self.app_ctx, self.scope = app.app_context(), acting_as(tenant)

    def __enter__(self):
        self.app_ctx.__enter__()
        self.scope.__enter__()
        return db.session

    def __exit__(self, *exc):
        db.session.remove()
        self.scope.__exit__(*exc)
        self.app_ctx.__exit__(*exc)


@pytest.fixture
def shop(app, make_tenant, stripe_server):
    tenant = make_tenant("Valley Net", "valley")
    with app.app_context(), acting_as(tenant):
        s = db.session
        enable_manual(s)
        enable_stripe(s, stripe_server.url)
        sub = customer(s, "ana@example.test")
        invoices = [posted_invoice(s, sub, 4999).id, posted_invoice(s, sub, 2500).id]
        s.commit()
        db.session.remove()
    return Shop(app, tenant, sub, invoices, stripe_server.url)


def _nonce(page: str) -> str:
    return re.search(r'name="nonce" value="([^"]+)"', page).group(1)


def _pay_page(client, invoice_id=None) -> str:
    url = "/portal/valley/pay" + (f"?invoice={invoice_id}" if invoice_id else "")
    resp = client.get(url)
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


def _charges(url) -> list:
    return sdk(url).v1.charges.list({"limit": 100}).data


def test_pay_an_invoice_with_a_saved_card(shop):
    card = shop.card()
    client = signed_in(shop.app, shop.tenant, shop.sub)
    first = shop.invoices[0]
    page = _pay_page(client, first)
    assert "49.99 USD" in page and f'value="{card}" checked' in page
    resp = client.post(f"/portal/valley/pay?invoice={first}",
                       data={"nonce": _nonce(page), "saved_method": str(card)})
    assert resp.status_code == 302
    result = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert 'data-status="processed"' in result and "49.99 USD" in result
    with shop.session() as s:
        payment = s.scalar(select(Payment))
        assert (payment.status, payment.source, payment.amount, payment.saved_method_id) == (
            "processed", "portal", 4999, card)
        assert s.get(Invoice, first).status == "paid"
        assert s.get(Invoice, shop.invoices[1]).status == "open"
        assert subscriber_balance(s, shop.sub) == 2500
    invoices = client.get("/portal/valley/invoices").get_data(as_text=True)
    assert re.search(rf'data-invoice-id="{first}">.*?status-paid', invoices, re.S)
    assert len(_charges(shop.url)) == 1


def test_pay_the_whole_balance_leaves_nothing_owed(shop):
    card = shop.card()
    client = signed_in(shop.app, shop.tenant, shop.sub)
    page = _pay_page(client)
    assert "74.99 USD" in page
    resp = client.post("/portal/valley/pay", data={"nonce": _nonce(page),
                                                   "saved_method": str(card)})
    assert resp.status_code == 302
    with shop.session() as s:
        assert subscriber_balance(s, shop.sub) == 0
        assert {inv.status for inv in s.scalars(select(Invoice))} == {"paid"}
    overview = client.get("/portal/valley/").get_data(as_text=True)
    assert 'id="balance">0.00 USD<' in overview and "Nothing is due" in overview
    assert 'id="nothing-due"' in _pay_page(client)


def test_a_declined_card_leaves_the_invoice_open_and_says_why(shop):
    card = shop.card(DECLINES_ON_CHARGE)
    client = signed_in(shop.app, shop.tenant, shop.sub)
    first = shop.invoices[0]
    page = _pay_page(client, first)
    resp = client.post(f"/portal/valley/pay?invoice={first}",
                       data={"nonce": _nonce(page), "saved_method": str(card)},
                       follow_redirects=True)
    text = resp.get_data(as_text=True)
    assert 'data-status="failed"' in text and "was declined" in text
    assert "card declined" in text
    with shop.session() as s:
        assert s.get(Invoice, first).status == "open"
        assert subscriber_balance(s, shop.sub) == 7499
        assert s.scalar(select(Payment.posted_entry_id)) is None


def test_a_double_submit_charges_once(shop):
    card = shop.card()
    client = signed_in(shop.app, shop.tenant, shop.sub)
    first = shop.invoices[0]
    form = {"nonce": _nonce(_pay_page(client, first)), "saved_method": str(card)}
    one = client.post(f"/portal/valley/pay?invoice={first}", data=form)
    two = client.post(f"/portal/valley/pay?invoice={first}", data=form)
    assert one.status_code == two.status_code == 302
    assert one.headers["Location"] == two.headers["Location"]
    with shop.session() as s:
        assert s.scalar(select(func.count()).select_from(Payment)) == 1
    assert len(_charges(shop.url)) == 1
    # a new form (new nonce) for an invoice already paid charges nothing either
    again = client.post(f"/portal/valley/pay?invoice={first}",
                        data={"nonce": "a-fresh-nonce-0123456789", "saved_method": str(card)})
    assert again.status_code == 422 and "nothing is owed" in again.get_data(as_text=True)
    assert len(_charges(shop.url)) == 1


def test_while_a_payment_is_in_flight_pay_now_waits(shop):
    card = shop.card()
    client = signed_in(shop.app, shop.tenant, shop.sub)
    second = shop.invoices[1]
    with shop.session() as s:  # a charge whose outcome the provider has not told yet
        s.add(Payment(subscriber_id=shop.sub, amount=7499, method="card", status="undefined",
                      received_on=s.get(Invoice, second).invoice_date, source="portal",
                      transaction_id="portal-in-flight-1", currency="USD", plugin_id="stripe"))
        s.commit()
    resp = client.post(f"/portal/valley/pay?invoice={second}",
                       data={"nonce": _nonce(_pay_page(client, second)),
                             "saved_method": str(card)})
    assert resp.status_code == 422 and "still being processed" in resp.get_data(as_text=True)
    assert _charges(shop.url) == []


def test_nonces_are_per_account(shop):
    """The same nonce from two subscribers is two payments: no one sees another's."""
    card = shop.card()
    with shop.session() as s:
        bob = customer(s, "bob@example.test")
        posted_invoice(s, bob, 1000)
        bob_card = payments.save_card(s, bob, card_token(shop.url)).id
        s.commit()
    ana = signed_in(shop.app, shop.tenant, shop.sub)
    bobs = signed_in(shop.app, shop.tenant, bob)
    nonce = "shared-nonce-0123456789abcdef"
    a = ana.post("/portal/valley/pay", data={"nonce": nonce, "saved_method": str(card)})
    b = bobs.post("/portal/valley/pay", data={"nonce": nonce, "saved_method": str(bob_card)})
    assert a.status_code == b.status_code == 302
    assert a.headers["Location"] != b.headers["Location"]
    # nor may Ana pay with Bob's card
    bad = ana.post("/portal/valley/pay", data={"nonce": "another-nonce-0123456789",
                                               "saved_method": str(bob_card)})
    assert bad.status_code == 422


def test_pay_with_a_new_card_keeps_it(shop):
    client = signed_in(shop.app, shop.tenant, shop.sub)
    page = _pay_page(client, shop.invoices[1])
    assert 'value="new" id="use-new-card" checked' in page  # no saved card yet
    assert "/js.stripe.com/v3/" in page
    resp = client.post(f"/portal/valley/pay?invoice={shop.invoices[1]}", data={
        "nonce": _nonce(page), "saved_method": "new",
        "card_token": card_token(shop.url, "5555555555554444")})
    assert resp.status_code == 302
    with shop.session() as s:
        (saved,) = payments.saved_methods(s, shop.sub)
        assert (saved.last4, saved.is_default) == ("4444", True)
        assert s.scalar(select(Payment.status)) == "processed"
        assert s.get(Invoice, shop.invoices[1]).status == "paid"
    # "new card" chosen but nothing typed: asked for the card, nothing charged
    page = _pay_page(client, shop.invoices[0])
    resp = client.post(f"/portal/valley/pay?invoice={shop.invoices[0]}",
                       data={"nonce": _nonce(page), "saved_method": "new"})
    assert resp.status_code == 422 and "enter your card" in resp.get_data(as_text=True)


def test_cards_add_default_remove_and_autopay(shop):
    client = signed_in(shop.app, shop.tenant, shop.sub)
    page = client.get("/portal/valley/cards").get_data(as_text=True)
    assert "No saved cards" in page and 'id="autopay-state">off<' in page
    # autopay needs a card
    client.post("/portal/valley/autopay", data={"autopay": "on"})
    with shop.session() as s:
        assert s.scalar(select(SubscriberCollection.autopay)) in (None, False)
    for number in ("4242424242424242", "5555555555554444"):
        resp = client.post("/portal/valley/cards", data={"card_token": card_token(shop.url,
                                                                                  number)})
        assert resp.status_code == 302
    with shop.session() as s:
        visa, master = payments.saved_methods(s, shop.sub)
        assert (visa.last4, master.last4) == ("4242", "4444")
        visa_id, master_id = visa.id, master.id
        assert visa.is_default and not master.is_default  # the first card became the default
    assert client.post("/portal/valley/autopay", data={"autopay": "on"}).status_code == 302
    assert 'id="autopay-state">on<' in client.get("/portal/valley/cards").get_data(as_text=True)
    with shop.session() as s:
        row = s.scalar(select(SubscriberCollection))
        assert (row.autopay, row.autopay_method_id) == (True, visa_id)
    # the default moves: autopay follows it
    client.post(f"/portal/valley/cards/{master_id}/default")
    with shop.session() as s:
        assert s.scalar(select(SubscriberCollection.autopay_method_id)) == master_id
    # removing the default card: the other one becomes the default, autopay moves to it
    client.post(f"/portal/valley/cards/{master_id}/remove")
    with shop.session() as s:
        assert [m.id for m in payments.saved_methods(s, shop.sub)] == [visa_id]
        assert s.get(SavedPaymentMethod, visa_id).is_default
        assert s.scalar(select(SubscriberCollection.autopay_method_id)) == visa_id
    client.post("/portal/valley/autopay", data={"autopay": "off"})
    with shop.session() as s:
        assert s.scalar(select(SubscriberCollection.autopay)) is False
    assert 'id="autopay-state">off<' in client.get("/portal/valley/cards").get_data(as_text=True)


def test_another_subscribers_card_is_404(shop):
    with shop.session() as s:
        bob = customer(s, "bob@example.test")
        bob_card = payments.save_card(s, bob, card_token(shop.url)).id
        s.commit()
    client = signed_in(shop.app, shop.tenant, shop.sub)
    assert client.post(f"/portal/valley/cards/{bob_card}/remove").status_code == 404
    assert client.post(f"/portal/valley/cards/{bob_card}/default").status_code == 404
    with shop.session() as s:
        assert s.get(SavedPaymentMethod, bob_card).removed_at is None


@pytest.mark.postgresql_only  # row locks: SQLite runs one writer at a time anyway
def test_a_form_submitted_from_two_tabs_at_once_charges_once(shop):
    from headend.portal import pay

    card = shop.card()
    barrier, results, errors = threading.Barrier(3), [], []

    def submit():
        try:
            with shop.session() as s:
                barrier.wait()
                payment = pay.pay(s, shop.sub, 7, "same-form-nonce-0123456789",
                                  invoice_id=shop.invoices[0], saved_method_id=card)
                s.commit()
                results.append(payment.id)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and len(results) == 3 and len(set(results)) == 1
    with shop.session() as s:
        assert s.scalar(select(func.count()).select_from(Payment)) == 1
        assert s.get(Invoice, shop.invoices[0]).status == "paid"
    assert len(_charges(shop.url)) == 1
