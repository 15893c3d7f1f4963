"""The issue's billing flow in a real browser: the profile's billing preview explains the
prorated first period, Invoice Now posts it, the invoice shows every part, the balance moves."""

import datetime as dt

from headend.billing.defaults import update_invoice_defaults
from headend.billing.models import Invoice
from headend.db import db
from headend.money import format_money
from headend.tenancy.context import acting_as
from headend.testing import PASSWORD
from sqlalchemy import select

from tests.browser.conftest import ui_login
from tests.invoicing_helpers import subscribe, subscriber, tax_rate, triple_play


def _subscriber_with_triple_play(app, tenant) -> int:
    today = dt.date.today()
    with app.app_context(), acting_as(tenant):
        s = db.session
        # A fixed bill day other than today: the first period is partial, hence prorated.
        update_invoice_defaults(s, billing_mode="fixed", bill_day=today.day % 28 + 1)
        sub = subscriber(s, rates=[tax_rate(s)])
        subscribe(s, sub, triple_play(s, name="Triple Play"), start=today)
        s.commit()
        return sub.id


def test_preview_then_invoice_now_shows_the_invoice_and_moves_the_balance(
        app, live_server, page, make_tenant, make_user, tmp_path):
    t = make_tenant()
    sid = _subscriber_with_triple_play(app, t)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    ui_login(page, live_server, make_user(t, "Billing"), PASSWORD)

    page.goto(f"{live_server}/subscriberview/profile/{sid}")
    assert page.inner_text("#balance").startswith("0")
    page.click("#billing-preview")
    page.wait_for_url("**/billing/subscriber/*/preview")
    prorated = page.locator("#preview-lines tr[data-kind=proration]")
    assert prorated.count() == 1
    assert "Triple Play" in prorated.inner_text()
    assert " days (" in prorated.locator(".line-explanation").inner_text()
    assert page.locator("#preview-lines tr[data-kind=setup]").count() == 1
    preview_total = page.inner_text("#preview-total")

    page.click("#invoice-now")
    page.wait_for_url("**/invoiceview/detail/*")
    with app.app_context(), acting_as(t):
        invoice = db.session.scalar(select(Invoice))
        number, total, due = invoice.number, invoice.total, invoice.due_date
    assert page.inner_text("#invoice-number") == number
    lines = page.inner_text("#invoice-lines")
    assert "Setup fee: Triple Play" in lines and "Triple Play (monthly)" in lines
    assert "Included: AC1200 router" in lines
    assert "State tax" in page.inner_text("#invoice-totals")
    assert page.inner_text("#total") == format_money(total, "USD") == preview_total
    assert page.inner_text("#due-date") == str(due)
    assert page.inner_text("#invoice-status") == "open"
    page.screenshot(path=str(tmp_path / "invoice.png"), full_page=True)

    page.click("#bill-to")
    page.wait_for_url("**/subscriberview/profile/*")
    assert page.inner_text("#balance").replace(",", "").startswith(f"{total / 100:.2f}")
    assert number in page.inner_text("#recent-invoices")
    assert errors == []
