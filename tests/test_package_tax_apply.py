"""A subscription keeps the tax settings its package had when it was added; editing the package
taxes new subscriptions only, until the package's "Apply" pushes them to its active ones."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal as D

import pytest
import sqlalchemy as sa
from headend.app import create_app
from headend.audit.models import AuditLog
from headend.billing.changes import change_package
from headend.billing.invoicing import invoice_now
from headend.billing.models import Invoice
from headend.billing.run import bill_run
from headend.billing.taxes import apply_package_taxes, live_subscription_count
from headend.catalog import models as cat
from headend.catalog.services import validate_package
from headend.db import db
from headend.errors import NotFound
from headend.subscribers.models import Subscription
from headend.tenancy.context import acting_as
from headend.testing import PASSWORD, app_settings

from tests.billing_run_helpers import RUN, catalog, subscription
from tests.invoicing_helpers import JAN20, subscribe, subscriber, tax_rate, triple_play

APR = dt.date(2026, 4, 1)
FEB20 = dt.date(2026, 2, 20)


def _edit_package(s, package_id: int, **fields) -> None:
    """The package form's save: validated, then written."""
    package = s.get(cat.Package, package_id)
    for name, value in fields.items():
        setattr(package, name, value)
    validate_package(s, package)
    s.flush()


def _taxes(invoice: Invoice) -> list[tuple[str, str, int]]:
    return sorted((line.kind, t.jurisdiction, t.amount) for line in invoice.lines
                  for t in line.taxes)


def _settings(s, subscription_id: int) -> tuple:
    sub = s.get(Subscription, subscription_id)
    s.refresh(sub)
    return (sub.tax_mode, sub.custom_tax_kind, sub.custom_tax_cycle_rate,
            sub.custom_tax_setup_rate)


def _run(s, day):
    with acting_as(None):
        return bill_run(s, day)


def _run_invoice(s, day, subscription_id) -> Invoice:
    return s.scalar(sa.select(Invoice).join(Invoice.lines).where(
        Invoice.invoice_date == day, Invoice.lines.any(subscription_id=subscription_id)))


# --- Invoice Now: percent rates ------------------------------------------------------------

def test_package_edit_taxes_new_subscriptions_only_until_apply(books):
    s = books
    state = tax_rate(s, "State tax", "10")
    package = triple_play(s)  # 119.99 a month, 49.99 setup, taxed per subscriber
    first = subscribe(s, subscriber(s, [state]), package)
    _edit_package(s, package.id, tax_mode="custom", custom_tax_kind="percent",
                  custom_tax_cycle_rate=D("5"), custom_tax_setup_rate=D("2"))
    second = subscribe(s, subscriber(s, [state]), package)
    assert _settings(s, first.id) == ("subscriber", None, None, None)
    assert _settings(s, second.id) == ("custom", "percent", D("5"), D("2"))

    # The existing subscription's next invoice is taxed as before the edit:
    # 10 % of 119.99 = 11.999 -> 12.00; of 49.99 setup = 4.999 -> 5.00.
    old = invoice_now(s, first.subscriber_id, JAN20)
    assert _taxes(old) == [("recurring", "State tax", 1200), ("setup", "State tax", 500)]
    # The new one by the package's new custom rate: 5 % of 119.99 = 5.9995 -> 6.00,
    # 2 % of 49.99 setup = 0.9998 -> 1.00, named after the package.
    new = invoice_now(s, second.subscriber_id, JAN20)
    assert _taxes(new) == [("recurring", f"{package.name} tax", 600),
                           ("setup", f"{package.name} setup tax", 100)]
    assert new.total == 11999 + 4999 + 700

    assert live_subscription_count(s, package.id) == 2
    applied = apply_package_taxes(s, package.id)
    assert (applied.live, applied.updated) == (2, 1)  # the second one already had them
    assert _settings(s, first.id) == ("custom", "percent", D("5"), D("2"))
    after = invoice_now(s, first.subscriber_id, FEB20)
    assert _taxes(after) == [("recurring", f"{package.name} tax", 600)]
    assert after.total == 11999 + 600
    # The change is audited with who, before and after.
    (row,) = s.scalars(sa.select(AuditLog).where(
        AuditLog.entity == "subscription", AuditLog.entity_id == str(first.id),
        AuditLog.action == "update")).all()
    assert row.before == {"tax_mode": "subscriber", "custom_tax_kind": None,
                          "custom_tax_cycle_rate": None, "custom_tax_setup_rate": None}
    assert row.after == {"tax_mode": "custom", "custom_tax_kind": "percent",
                         "custom_tax_cycle_rate": "5.000000",
                         "custom_tax_setup_rate": "2.000000"}
    assert apply_package_taxes(s, package.id).updated == 0  # nothing left to change


def test_package_edited_to_untaxed_keeps_taxing_existing_subscriptions(books):
    s = books
    state = tax_rate(s, "State tax", "10")
    package = triple_play(s, setup_fee=None)
    sub = subscribe(s, subscriber(s, [state]), package)
    _edit_package(s, package.id, tax_mode="none")
    assert _taxes(invoice_now(s, sub.subscriber_id, JAN20)) == [
        ("recurring", "State tax", 1200)]
    assert apply_package_taxes(s, package.id).updated == 1
    invoice = invoice_now(s, sub.subscriber_id, FEB20)
    assert (_taxes(invoice), invoice.tax_total, invoice.total) == ([], 0, 11999)


# --- the billing run: flat custom rates, setup tax, cancelled and other tenants -------------

@pytest.fixture
def isp(app, make_tenant):
    """A tenant's session with billing_run_helpers' catalog: Fiber 50 (50.00 a month, 10.00
    setup, taxed per subscriber) and a 10 % rate."""
    tenant = make_tenant("Tax ISP", "tax-isp")
    with app.app_context(), acting_as(tenant):
        db.session.info["ids"] = catalog(db.session)
        db.session.info["tenant"] = tenant
        yield db.session
        db.session.rollback()
        db.session.remove()


def test_billing_run_follows_each_subscriptions_settings_and_apply(isp, make_tenant):
    s, ids = isp, isp.info["ids"]
    _, before = subscription(s, ids)
    _, cancelled = subscription(s, ids, status="cancelled")
    _edit_package(s, ids["fiber"], tax_mode="custom", custom_tax_kind="flat",
                  custom_tax_cycle_rate=D("3.50"), custom_tax_setup_rate=D("1.25"))
    _, after = subscription(s, ids)
    s.commit()
    other = make_tenant("Other ISP", "other-isp")
    with acting_as(other):
        other_ids = catalog(s)
        _, theirs = subscription(s, other_ids)
        s.commit()

    _run(s, RUN)
    # Before the edit: 10 % of 50.00 and of the 10.00 setup. After: flat 3.50 a cycle and
    # 1.25 on the setup fee.
    assert _taxes(_run_invoice(s, RUN, before)) == [("recurring", "State tax", 500),
                                                    ("setup", "State tax", 100)]
    assert _taxes(_run_invoice(s, RUN, after)) == [("recurring", "Fiber 50 tax", 350),
                                                   ("setup", "Fiber 50 setup tax", 125)]
    assert _run_invoice(s, RUN, cancelled) is None

    applied = apply_package_taxes(s, ids["fiber"])
    s.commit()
    assert (applied.live, applied.updated) == (2, 1)
    assert _settings(s, cancelled) == ("subscriber", None, None, None)
    _run(s, APR)
    for sub_id in (before, after):
        invoice = _run_invoice(s, APR, sub_id)
        assert _taxes(invoice) == [("recurring", "Fiber 50 tax", 350)]
        assert invoice.total == 5000 + 350

    with acting_as(other):  # the other tenant's package and subscription are their own
        assert _settings(s, theirs) == ("subscriber", None, None, None)
        assert _taxes(_run_invoice(s, APR, theirs)) == [("recurring", "State tax", 500)]
    with pytest.raises(NotFound):
        apply_package_taxes(s, other_ids["fiber"])


def test_a_package_change_takes_the_new_packages_settings(isp):
    s, ids = isp, isp.info["ids"]
    basic = cat.Package(name="Basic 25", price_monthly=D("25.00"), tax_mode="custom",
                        custom_tax_kind="flat", custom_tax_cycle_rate=D("2.00"),
                        custom_tax_setup_rate=D("0"))
    s.add(basic)
    _, switched = subscription(s, ids)
    change_package(s, switched, basic.id, RUN)  # nothing billed yet: a plain switch
    assert _settings(s, switched) == ("custom", "flat", D("2.00"), D("0"))

    _, deferred = subscription(s, ids)
    s.commit()
    _run(s, RUN)
    change = change_package(s, deferred, basic.id, dt.date(2026, 3, 15))
    assert change.kind == "deferred_downgrade"
    assert _settings(s, deferred)[0] == "subscriber"  # until the downgrade takes over
    s.commit()
    _run(s, APR)
    # The period the downgrade bills is taxed by Basic 25's flat 2.00, not the 10 % rate.
    assert _taxes(_run_invoice(s, APR, deferred)) == [("recurring", "Basic 25 tax", 200)]
    assert _settings(s, deferred) == ("custom", "flat", D("2.00"), D("0"))


# --- the admin button and the API ----------------------------------------------------------

@pytest.fixture
def csrf_app(app, database_url):
    return create_app(overrides={**app_settings(database_url), "WTF_CSRF_ENABLED": True})


def _csrf_login(client, username) -> str:
    """Log in through the form; the session's CSRF token."""
    page = client.get("/login/").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    assert client.post("/login/", data={"username": username, "password": PASSWORD,
                                        "csrf_token": token}).status_code == 302
    return token


def _package_with_subscriptions(app, tenant) -> tuple[int, list[int]]:
    """Fiber 50 edited to a custom percent rate after two live and one cancelled subscription."""
    with app.app_context(), acting_as(tenant):
        ids = catalog(db.session)
        subs = [subscription(db.session, ids, status=status)[1]
                for status in ("active", "suspended", "cancelled")]
        _edit_package(db.session, ids["fiber"], tax_mode="custom", custom_tax_kind="percent",
                      custom_tax_cycle_rate=D("7.5"), custom_tax_setup_rate=D("7.5"))
        db.session.commit()
        return ids["fiber"], subs


def _modes(app, tenant, subs) -> list[str]:
    with app.app_context(), acting_as(tenant):
        modes = db.session.execute(sa.select(Subscription.id, Subscription.tax_mode)
                                   .where(Subscription.id.in_(subs))).all()
        db.session.remove()
    return [dict(modes)[sub_id] for sub_id in subs]


def test_apply_button_confirms_the_count_and_needs_csrf_and_write_access(
        csrf_app, make_tenant, make_user):
    tenant = make_tenant()
    package, subs = _package_with_subscriptions(csrf_app, tenant)
    admin = csrf_app.test_client()
    _csrf_login(admin, make_user(tenant, "Billing"))
    page = admin.get(f"/packageview/show/{package}").get_data(as_text=True)
    assert "Apply these tax settings to 2 active subscriptions?" in page
    token = re.search(r'id="apply-taxes".*?name="csrf_token" value="([^"]+)"', page, re.S)
    url = f"/packageview/apply_taxes/{package}"
    assert admin.post(url).status_code == 400  # no CSRF token
    assert _modes(csrf_app, tenant, subs) == ["subscriber"] * 3

    reader = csrf_app.test_client()
    reader_token = _csrf_login(reader, make_user(tenant, "ReadOnly"))
    shown = reader.get(f"/packageview/show/{package}").get_data(as_text=True)
    assert 'id="apply-taxes"' not in shown
    refused = reader.post(url, data={"csrf_token": reader_token})
    assert refused.status_code in (302, 403)
    assert _modes(csrf_app, tenant, subs) == ["subscriber"] * 3

    done = admin.post(url, data={"csrf_token": token.group(1)}, follow_redirects=True)
    assert "Tax settings applied: 2 of 2 active subscriptions updated" in \
        done.get_data(as_text=True)
    assert _modes(csrf_app, tenant, subs) == ["custom", "custom", "subscriber"]


def test_apply_api_counts_and_refuses_other_tenants_and_readers(app, make_tenant, api_as):
    mine, theirs = make_tenant("Mine"), make_tenant("Theirs")
    package, subs = _package_with_subscriptions(app, mine)
    their_package, their_subs = _package_with_subscriptions(app, theirs)
    c, headers = api_as(mine, "Admin")
    url = "/api/v1/package/{}/apply-taxes"
    assert c.post(url.format(their_package), headers=headers).status_code == 404
    assert c.post(url.format(999999), headers=headers).status_code == 404
    reader, reader_headers = api_as(mine, "ReadOnly")
    assert reader.post(url.format(package), headers=reader_headers).status_code in (401, 403)
    assert _modes(app, mine, subs) == ["subscriber"] * 3

    resp = c.post(url.format(package), headers=headers)
    assert resp.status_code == 200 and resp.get_json() == {"active": 2, "updated": 2}
    assert c.post(url.format(package), headers=headers).get_json() == {
        "active": 2, "updated": 0}
    assert _modes(app, mine, subs) == ["custom", "custom", "subscriber"]
    assert _modes(app, theirs, their_subs) == ["subscriber"] * 3
    shown = c.get(f"/api/v1/subscription/{subs[0]}", headers=headers).get_json()["result"]
    assert (shown["tax_mode"], D(shown["custom_tax_cycle_rate"])) == ("custom", D("7.5"))


def test_a_subscriptions_own_settings_are_edited_and_checked(app, make_tenant, api_as,
                                                             login_as):
    tenant = make_tenant()
    _, subs = _package_with_subscriptions(app, tenant)
    c, headers = api_as(tenant, "Admin")
    url = f"/api/v1/subscription/{subs[0]}"
    bad = c.put(url, json={"tax_mode": "custom", "custom_tax_kind": "percent",
                           "custom_tax_cycle_rate": "150"}, headers=headers)
    assert bad.status_code == 422
    assert set(bad.get_json()["message"]) == {"custom_tax_cycle_rate", "custom_tax_setup_rate"}
    ok = c.put(url, json={"tax_mode": "none"}, headers=headers)
    assert ok.status_code == 200
    assert _modes(app, tenant, subs) == ["none", "subscriber", "subscriber"]

    ui = login_as(tenant, "Billing")
    form = {"billing_cycle": "monthly", "bill_start_date": "2026-03-01", "tax_mode": "custom",
            "custom_tax_kind": "flat", "custom_tax_cycle_rate": "1.5",
            "custom_tax_setup_rate": ""}
    refused = ui.post(f"/subscriptionview/edit/{subs[1]}", data=form)
    assert refused.status_code == 200 and "is required" in refused.get_data(as_text=True)
    saved = ui.post(f"/subscriptionview/edit/{subs[1]}",
                    data=form | {"custom_tax_setup_rate": "0"})
    assert saved.status_code == 302
    with app.app_context(), acting_as(tenant):
        assert _settings(db.session, subs[1]) == ("custom", "flat", D("1.5"), D("0"))
    shown = ui.get(f"/subscriptionview/show/{subs[1]}").get_data(as_text=True)
    assert "Custom rate" in shown
