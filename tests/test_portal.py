"""The subscriber portal: its own login (throttled, never an admin session), invitations and
password resets by emailed one-time link, and pages that show only the subscriber's own rows."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from headend.app import create_app
from headend.billing.models import Invoice
from headend.catalog.models import InternetProfile, Package
from headend.db import db, utcnow
from headend.errors import ValidationFailed
from headend.mail.models import OutboundEmail
from headend.network.models import UsageDaily
from headend.portal import accounts
from headend.portal.models import PortalAccount, PortalLoginFailure, PortalToken
from headend.subscribers.models import Subscriber
from headend.subscribers.services import add_package
from headend.tenancy.context import acting_as
from headend.testing import app_settings
from sqlalchemy import func, select, update

from tests.factories import make_row
from tests.memo_helpers import posted_invoice
from tests.portal_helpers import (
    PORTAL_PASSWORD,
    customer,
    emailed_link,
    invited,
    portal_login,
    signed_in,
)


@pytest.fixture
def valley(app, make_tenant):
    """Tenant "valley" with one subscriber (its id in .sub), acting as it inside `with`."""
    tenant = make_tenant("Valley Net", "valley")
    with app.app_context(), acting_as(tenant):
        sub = customer(db.session, "Ana@Example.test")
        db.session.commit()
    return tenant, sub


def _in(app, tenant_id):
    """An app context acting as the tenant (for reading what a request left behind)."""
    class _Ctx:
        def __enter__(self):
            self.app_ctx = app.app_context()
            self.app_ctx.__enter__()
            self.scope = acting_as(tenant_id)
            self.scope.__enter__()
            return db.session

        def __exit__(self, *exc):
            db.session.remove()
            self.scope.__exit__(*exc)
            self.app_ctx.__exit__(*exc)
    return _Ctx()


# --- invitations, passwords, login --------------------------------------------------------------

def test_invite_emails_a_link_that_sets_the_password_and_signs_in(app, valley):
    tenant, sub = valley
    link = invited(app, tenant, sub)
    assert link.startswith("/portal/valley/set-password/")
    with _in(app, tenant) as s:
        account = s.scalar(select(PortalAccount))
        mail = s.scalar(select(OutboundEmail))
        token = s.scalar(select(PortalToken))
        assert (account.login, account.password_hash) == ("ana@example.test", None)
        assert (mail.kind, mail.to_address, mail.status) == (
            "portal_invite", "Ana@Example.test", "queued")
        assert "http://portal.test/portal/valley/set-password/" in mail.body_text
        # only the token's hash is stored
        assert link.rsplit("/", 1)[1] not in (token.token_hash, mail.key)
        assert token.expires_at - token.created_at == dt.timedelta(hours=72)
    client = app.test_client()
    assert client.get(link).status_code == 200
    resp = client.post(link, data={"password": PORTAL_PASSWORD, "confirm": PORTAL_PASSWORD})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/portal/valley/")
    page = client.get("/portal/valley/")
    assert page.status_code == 200 and "Hello Ana Portal" in page.get_data(as_text=True)
    # signed out, then in again with the chosen password; the login is case-insensitive
    client.post("/portal/valley/logout")
    assert client.get("/portal/valley/").status_code == 302
    resp = portal_login(client, "valley", "  ANA@example.TEST ")
    assert resp.status_code == 302
    assert client.get("/portal/valley/").status_code == 200


def test_a_link_works_once(app, valley):
    tenant, sub = valley
    link = invited(app, tenant, sub)
    client = app.test_client()
    assert client.post(link, data={"password": PORTAL_PASSWORD,
                                   "confirm": PORTAL_PASSWORD}).status_code == 302
    again = app.test_client().post(link, data={"password": "Another-pass-99",
                                               "confirm": "Another-pass-99"})
    assert again.status_code == 400
    assert "already been used" in again.get_data(as_text=True)
    assert app.test_client().get(link).status_code == 400
    # the first password still works, the second was never set
    assert portal_login(app.test_client(), "valley", "ana@example.test").status_code == 302
    assert portal_login(app.test_client(), "valley", "ana@example.test",
                        "Another-pass-99").status_code == 401


def test_an_expired_reset_link_changes_nothing(app, valley):
    tenant, sub = valley
    signed_in(app, tenant, sub)
    client = app.test_client()
    resp = client.post("/portal/valley/forgot", data={"login": "ana@example.test"})
    assert resp.status_code == 302
    with _in(app, tenant) as s:
        link = emailed_link(s, sub, "password_reset")
        reset = s.scalar(select(PortalToken).where(PortalToken.purpose == "reset"))
        assert reset.expires_at - reset.created_at == dt.timedelta(hours=1)
        before = s.scalar(select(PortalAccount.password_hash))
        s.execute(update(PortalToken).where(PortalToken.id == reset.id)
                  .values(expires_at=utcnow() - dt.timedelta(seconds=1)))
        s.commit()
    resp = client.post(link, data={"password": "Brand-new-pass-1", "confirm": "Brand-new-pass-1"})
    assert resp.status_code == 400 and "expired" in resp.get_data(as_text=True)
    with _in(app, tenant) as s:
        assert s.scalar(select(PortalAccount.password_hash)) == before
        assert s.scalar(select(PortalToken.used_at).where(PortalToken.purpose == "reset")) is None
    assert portal_login(client, "valley", "ana@example.test").status_code == 302


def test_reset_link_sets_a_new_password_and_ends_other_sessions(app, valley):
    tenant, sub = valley
    old_session = signed_in(app, tenant, sub)
    assert old_session.get("/portal/valley/").status_code == 200
    client = app.test_client()
    client.post("/portal/valley/forgot", data={"login": "ANA@example.test"})
    with _in(app, tenant) as s:
        link = emailed_link(s, sub, "password_reset")
    bad = client.post(link, data={"password": "short", "confirm": "short"})
    assert bad.status_code == 400 and "10 to 128 characters" in bad.get_data(as_text=True)
    resp = client.post(link, data={"password": "Brand-new-pass-1", "confirm": "Brand-new-pass-1"})
    assert resp.status_code == 302
    assert client.get("/portal/valley/").status_code == 200
    assert old_session.get("/portal/valley/").status_code == 302  # the old password's session
    assert portal_login(app.test_client(), "valley", "ana@example.test").status_code == 401
    assert portal_login(app.test_client(), "valley", "ana@example.test",
                        "Brand-new-pass-1").status_code == 302


def test_forgot_password_answers_the_same_for_unknown_logins(app, valley):
    tenant, sub = valley
    invited(app, tenant, sub)
    client = app.test_client()
    known = client.post("/portal/valley/forgot", data={"login": "ana@example.test"},
                        follow_redirects=True)
    unknown = client.post("/portal/valley/forgot", data={"login": "nobody@example.test"},
                          follow_redirects=True)
    assert known.status_code == unknown.status_code == 200
    message = "If an account uses that login"
    assert message in known.get_data(as_text=True) and message in unknown.get_data(as_text=True)
    with _in(app, tenant) as s:
        kinds = s.scalars(select(OutboundEmail.kind).order_by(OutboundEmail.id)).all()
        assert kinds == ["portal_invite", "password_reset"]
        # a new link makes the earlier one useless
        assert s.scalar(select(func.count()).select_from(PortalToken)
                        .where(PortalToken.used_at.is_(None))) == 1
    # at most three reset emails an hour
    for _ in range(4):
        client.post("/portal/valley/forgot", data={"login": "ana@example.test"})
    with _in(app, tenant) as s:
        assert s.scalar(select(func.count()).select_from(OutboundEmail)
                        .where(OutboundEmail.kind == "password_reset")) == 3


def test_wrong_password_then_throttled(app, valley):
    tenant, sub = valley
    signed_in(app, tenant, sub)
    client = app.test_client()
    for _ in range(accounts.MAX_FAILURES):
        resp = portal_login(client, "valley", "ana@example.test", "wrong-password")
        assert resp.status_code == 401
        assert "Wrong login or password" in resp.get_data(as_text=True)
    # the right password is refused now, without being checked
    resp = portal_login(client, "valley", "ana@example.test")
    assert resp.status_code == 429 and "Too many failed attempts" in resp.get_data(as_text=True)
    assert client.get("/portal/valley/").status_code == 302
    # unknown logins are counted (and answered) the same way
    for _ in range(accounts.MAX_FAILURES):
        assert portal_login(client, "valley", "ghost@example.test").status_code == 401
    assert portal_login(client, "valley", "ghost@example.test").status_code == 429
    # the window passes: the right password works and clears the count
    with _in(app, tenant) as s:
        s.execute(update(PortalLoginFailure).values(
            failed_at=utcnow() - accounts.FAILURE_WINDOW - dt.timedelta(seconds=1)))
        s.commit()
    assert portal_login(client, "valley", "ana@example.test").status_code == 302
    with _in(app, tenant) as s:
        assert s.scalar(select(func.count()).select_from(PortalLoginFailure)
                        .where(PortalLoginFailure.login == "ana@example.test")) == 0


def test_invite_needs_an_email_no_other_account_using_it(app, valley):
    tenant, sub = valley
    with _in(app, tenant) as s:
        nomail = customer(s)
        s.get(Subscriber, nomail).email = None
        twin = customer(s, "ana@example.test")
        s.commit()
        accounts.invite(s, sub)
        s.commit()
        with pytest.raises(accounts.ValidationFailed) as caught:
            accounts.invite(s, nomail)
        assert "no email" in caught.value.errors["email"][0]
        with pytest.raises(accounts.ValidationFailed) as caught:
            accounts.invite(s, twin)
        assert "another subscriber" in caught.value.errors["email"][0]
        s.rollback()
        assert s.scalar(select(func.count()).select_from(PortalAccount)) == 1


def test_a_subscriber_cannot_sign_in_at_another_tenants_portal(app, valley, make_tenant):
    tenant, sub = valley
    summit = make_tenant("Summit Net", "summit")
    link = invited(app, tenant, sub)
    client = app.test_client()
    assert portal_login(client, "summit", "ana@example.test").status_code == 401
    # nor use valley's link there
    other = link.replace("/portal/valley/", "/portal/summit/")
    resp = client.post(other, data={"password": PORTAL_PASSWORD, "confirm": PORTAL_PASSWORD})
    assert resp.status_code == 400 and "not valid" in resp.get_data(as_text=True)
    with _in(app, tenant) as s:
        assert s.scalar(select(PortalAccount.password_hash)) is None
    # signed in at valley, summit's pages still ask for a login
    client.post(link, data={"password": PORTAL_PASSWORD, "confirm": PORTAL_PASSWORD})
    assert client.get("/portal/valley/").status_code == 200
    assert client.get("/portal/summit/").status_code == 302
    assert client.get("/portal/nowhere/login").status_code == 404
    del summit


# --- a portal session is no admin session, and the other way round -----------------------------

def test_a_portal_session_opens_no_admin_page_or_api(app, valley):
    tenant, sub = valley
    client = signed_in(app, tenant, sub)
    assert client.get("/portal/valley/").status_code == 200
    for url in ("/subscriberview/list/", f"/subscriberview/show/{sub}", "/payments/list/",
                f"/subscriberview/profile/{sub}"):
        resp = client.get(url)
        assert resp.status_code in (302, 401, 403), url
        assert "/portal/" not in resp.headers.get("Location", "")
        if resp.status_code == 302:
            assert "/login/" in resp.headers["Location"], url
    for url in ("/api/v1/subscriber/", f"/api/v1/subscriber/{sub}"):
        assert client.get(url).status_code == 401, url
    assert client.post("/api/v1/subscriber/", json={"first_name": "X"}).status_code == 401


def test_an_admin_session_is_no_portal_session(app, valley, login_as):
    tenant, sub = valley
    admin = login_as(tenant, "Admin")
    assert admin.get("/subscriberview/list/").status_code == 200
    resp = admin.get("/portal/valley/")
    assert resp.status_code == 302 and "/portal/valley/login" in resp.headers["Location"]
    assert admin.post("/portal/valley/autopay", data={"autopay": "on"}).status_code == 403


def test_portal_forms_need_the_csrf_token(app, valley, database_url):
    tenant, sub = valley
    invited(app, tenant, sub)
    csrf_app = create_app(overrides={**app_settings(database_url), "WTF_CSRF_ENABLED": True})
    client = csrf_app.test_client()
    assert portal_login(client, "valley", "ana@example.test").status_code == 400
    page = client.get("/portal/valley/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    resp = client.post("/portal/valley/login", data={
        "login": "ana@example.test", "password": "wrong-password-1", "csrf_token": token})
    assert resp.status_code == 401  # the form was taken (and the password refused)


# --- staff: Invite to portal ---------------------------------------------------------------------

def test_one_address_guessing_across_logins_is_throttled(app, valley):
    """Password spraying: one address trying many logins is refused after
    MAX_ADDRESS_FAILURES, even for a right password; other addresses are not."""
    tenant, sub = valley
    signed_in(app, tenant, sub)
    client = app.test_client()
    for n in range(accounts.MAX_ADDRESS_FAILURES):
        assert portal_login(client, "valley", f"guess{n}@example.test",
                            address="203.0.113.7").status_code == 401
    resp = portal_login(client, "valley", "ana@example.test", address="203.0.113.7")
    assert resp.status_code == 429 and "Too many failed attempts" in resp.get_data(as_text=True)
    assert portal_login(app.test_client(), "valley", "ana@example.test",
                        address="198.51.100.2").status_code == 302
    with _in(app, tenant) as s:
        assert s.scalar(select(func.count()).select_from(PortalLoginFailure).where(
            PortalLoginFailure.address == "203.0.113.7")) == accounts.MAX_ADDRESS_FAILURES


def test_staff_close_a_portal_login_and_open_it_again(app, valley, login_as):
    tenant, sub = valley
    portal = signed_in(app, tenant, sub)
    assert portal.get("/portal/valley/").status_code == 200
    support = login_as(tenant, "Support")
    resp = support.post(f"/portal-admin/access/{sub}", data={"active": "0"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/{sub}#portal")
    # the open session ends, and the password no longer signs in
    assert portal.get("/portal/valley/").status_code == 302
    assert portal_login(app.test_client(), "valley", "ana@example.test").status_code == 401
    assert login_as(tenant, "ReadOnly").post(f"/portal-admin/access/{sub}",
                                             data={"active": "1"}).status_code in (302, 403)
    with _in(app, tenant) as s:
        assert s.scalar(select(PortalAccount.active)) is False
    support.post(f"/portal-admin/access/{sub}", data={"active": "1"})
    assert portal_login(app.test_client(), "valley", "ana@example.test").status_code == 302


def test_closing_a_login_that_does_not_exist_says_so(app, make_tenant, login_as):
    tenant = make_tenant("Bare Net", "bare")
    with _in(app, tenant) as s:
        sub = customer(s, "bo@example.test")
        s.commit()
        with pytest.raises(ValidationFailed) as refused:
            accounts.set_access(s, sub, False)
        assert "portal" in refused.value.errors


def test_staff_invite_button(app, valley, login_as, make_tenant):
    tenant, sub = valley
    support = login_as(tenant, "Support")
    resp = support.post(f"/portal-admin/invite/{sub}")
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/{sub}#portal")
    with _in(app, tenant) as s:
        assert s.scalar(select(PortalAccount.login)) == "ana@example.test"
        assert s.scalar(select(func.count()).select_from(OutboundEmail)) == 1
    assert login_as(tenant, "ReadOnly").post(f"/portal-admin/invite/{sub}").status_code in (
        302, 403)
    with _in(app, tenant) as s:
        assert s.scalar(select(func.count()).select_from(OutboundEmail)) == 1
    other = make_tenant("Other Net", "other")
    with _in(app, other) as s:
        foreign = make_row(s, Subscriber).id
        s.commit()
    assert support.post(f"/portal-admin/invite/{foreign}").status_code == 404


# --- the subscriber's pages ----------------------------------------------------------------------

@pytest.fixture
def billed(app, valley):
    """Ana with two posted invoices, a visible and a hidden package, and a second subscriber
    (.other) with an invoice of their own."""
    tenant, sub = valley
    with _in(app, tenant) as s:
        first = posted_invoice(s, sub, 4999, day=dt.date(2024, 1, 15))
        second = posted_invoice(s, sub, 2500, day=dt.date(2024, 2, 15))
        draft = Invoice(subscriber_id=sub, invoice_date=dt.date(2024, 3, 1), currency="USD",
                        due_date=dt.date(2024, 3, 16), status="draft", total=700)
        s.add(draft)
        other = customer(s)
        foreign = posted_invoice(s, other, 1234)
        shown = make_row(s, Package)
        shown.name = "Fiber 500"
        s.add(InternetProfile(package=shown, download_speed=500, upload_speed=50,
                              speed_unit="Mbps"))
        hidden = make_row(s, Package)
        hidden.name = "Staff-only Promo"
        s.flush()
        add_package(s, sub, shown.id, billing_cycle="monthly")
        add_package(s, sub, hidden.id, billing_cycle="monthly")
        hidden.account_manager_visibility = "hidden"  # (a hidden package is not sold either)
        s.commit()
        ids = {"first": first.id, "second": second.id, "draft": draft.id,
               "foreign": foreign.id, "other": other}
    return tenant, sub, ids


def test_overview_shows_balance_next_due_and_visible_packages_only(app, billed):
    tenant, sub, ids = billed
    client = signed_in(app, tenant, sub)
    page = client.get("/portal/valley/").get_data(as_text=True)
    assert 'id="balance">74.99 USD<' in page  # the draft is not owed
    assert 'id="due-date">2024-01-30<' in page
    assert "Fiber 500" in page
    assert "Staff-only Promo" not in page


def test_invoices_list_and_pdfs_only_own(app, billed, make_tenant):
    tenant, sub, ids = billed
    client = signed_in(app, tenant, sub)
    page = client.get("/portal/valley/invoices").get_data(as_text=True)
    assert f'data-invoice-id="{ids["first"]}"' in page
    assert f'data-invoice-id="{ids["second"]}"' in page
    assert f'data-invoice-id="{ids["draft"]}"' not in page
    pdf = client.get(f"/portal/valley/invoices/{ids['first']}.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    assert pdf.headers["Content-Type"] == "application/pdf"
    for invoice_id in (ids["foreign"], ids["draft"], 999999):
        assert client.get(f"/portal/valley/invoices/{invoice_id}.pdf").status_code == 404
    # another tenant's invoice, by id
    summit = make_tenant("Summit Net", "summit")
    with _in(app, summit) as s:
        theirs = posted_invoice(s, customer(s), 999).id
        s.commit()
    assert client.get(f"/portal/valley/invoices/{theirs}.pdf").status_code == 404
    assert client.get(f"/portal/valley/pay?invoice={theirs}").status_code == 404
    assert client.get(f"/portal/valley/pay?invoice={ids['foreign']}").status_code == 404


def test_usage_chart_of_this_and_the_previous_period(app, billed):
    tenant, sub, _ = billed
    today = dt.date.today()
    with _in(app, tenant) as s:
        service = s.get(Subscriber, sub).subscriptions[0].services[0]
        for back, down in ((0, 3_000_000_000), (40, 1_500_000_000)):
            s.add(UsageDaily(service_id=service.id, day=today - dt.timedelta(days=back),
                             download_bytes=down, upload_bytes=250_000_000))
        s.commit()
        service_id = service.id
    client = signed_in(app, tenant, sub)
    page = client.get("/portal/valley/usage").get_data(as_text=True)
    assert f'id="usage-{service_id}"' in page
    assert "3.00 GB download, 0.25 GB upload" in page  # this period: today only
    assert f'data-testid="usage-chart-{service_id}-1"' in page
    assert f'data-testid="usage-chart-{service_id}-2"' in page
    assert "<svg" in page and "3.00 GB download</title>" in page


def test_payments_page_lists_own_payments(app, billed):
    tenant, sub, ids = billed
    from headend.payments.services import receive_payment
    from headend.plugins.services import configure_plugin

    with _in(app, tenant) as s:
        configure_plugin(s, "manual", True, {})
        mine = receive_payment(s, sub, 1000, "cash", dt.date(2024, 2, 1)).id
        theirs = receive_payment(s, ids["other"], 500, "cash", dt.date(2024, 2, 1)).id
        s.commit()
    client = signed_in(app, tenant, sub)
    page = client.get("/portal/valley/payments").get_data(as_text=True)
    assert f'data-payment-id="{mine}"' in page and f'data-payment-id="{theirs}"' not in page
    assert client.get(f"/portal/valley/payments/{mine}").status_code == 200
    assert client.get(f"/portal/valley/payments/{theirs}").status_code == 404


def test_emailed_links_use_the_configured_address_not_the_host_header(app, valley, monkeypatch):
    tenant, sub = valley
    invited(app, tenant, sub)
    monkeypatch.setitem(app.config, "HEADEND_PUBLIC_URL", "https://my.valley.example/")
    app.test_client().post("/portal/valley/forgot", data={"login": "ana@example.test"},
                           headers={"Host": "attacker.example"})
    with _in(app, tenant) as s:
        body = s.scalar(select(OutboundEmail.body_text)
                        .where(OutboundEmail.kind == "password_reset"))
    assert "https://my.valley.example/portal/valley/set-password/" in body
    assert "attacker.example" not in body


def test_profile_box_shows_the_login_and_the_invite_button(app, valley):
    from flask import render_template

    tenant, sub = valley
    with app.test_request_context("/"), acting_as(tenant):
        subscriber = db.session.get(Subscriber, sub)
        html = render_template("portal/_profile_box.html", sub=subscriber, account=None,
                               can_write=True)
        assert f'action="/portal-admin/invite/{sub}"' in html and "Invite to portal" in html
        accounts.invite(db.session, sub)
        html = render_template("portal/_profile_box.html", sub=subscriber,
                               account=accounts.account_of(db.session, sub), can_write=False)
        assert "ana@example.test" in html and "no password chosen yet" in html
        assert "portal-invite" not in html and "portal-access" not in html
        html = render_template("portal/_profile_box.html", sub=subscriber,
                               account=accounts.account_of(db.session, sub), can_write=True)
        assert f'action="/portal-admin/access/{sub}"' in html and "Close portal login" in html
        accounts.set_access(db.session, sub, False)
        html = render_template("portal/_profile_box.html", sub=subscriber,
                               account=accounts.account_of(db.session, sub), can_write=True)
        assert "(closed)" in html and "Open portal login" in html
        db.session.rollback()
