"""Invoice pages and the invoice API: thin layers over the services, errors named by field."""

import datetime as dt

from headend.billing.models import Invoice
from headend.db import db
from headend.ledger.services import subscriber_balance
from headend.tenancy.context import acting_as
from sqlalchemy import func, select

from tests.invoicing_helpers import subscribe, subscriber, tax_rate, triple_play

TODAY = dt.date.today()


def _setup(app, tenant, **over):
    with app.app_context(), acting_as(tenant):
        s = db.session
        sub = subscriber(s, rates=[tax_rate(s)], **over)
        subscribe(s, sub, triple_play(s), start=TODAY)
        s.commit()
        return sub.id, sub.account_number


def _invoices(app, tenant):
    with app.app_context(), acting_as(tenant):
        return db.session.scalars(select(Invoice).order_by(Invoice.id)).all()


def test_profile_preview_invoice_now_and_detail(app, make_tenant, login_as):
    t = make_tenant()
    sid, _ = _setup(app, t)
    client = login_as(t, "Billing")
    profile = client.get(f"/subscriberview/profile/{sid}").get_data(as_text=True)
    assert 'id="billing"' in profile and 'id="invoice-now"' in profile
    preview = client.get(f"/billing/subscriber/{sid}/preview").get_data(as_text=True)
    assert "Setup fee" in preview and "AC1200 router" in preview
    assert not _invoices(app, t)
    resp = client.post(f"/billing/subscriber/{sid}/invoice-now")
    (invoice,) = _invoices(app, t)
    assert resp.status_code == 302 and resp.location.endswith(f"/invoiceview/detail/{invoice.id}")
    page = client.get(resp.location).get_data(as_text=True)
    assert invoice.number in page and "Setup fee" in page and "State tax" in page
    assert str(invoice.due_date) in page and 'id="void-invoice"' in page
    again = client.post(f"/billing/subscriber/{sid}/invoice-now", follow_redirects=True)
    assert "Nothing is due" in again.get_data(as_text=True) and len(_invoices(app, t)) == 1
    listing = client.get("/invoiceview/list/").get_data(as_text=True)
    assert invoice.number in listing
    client.post(f"/invoiceview/void/{invoice.id}")
    assert _invoices(app, t)[0].status == "void"
    with app.app_context(), acting_as(t):
        assert subscriber_balance(db.session, sid) == 0


def test_read_only_users_see_but_cannot_invoice(app, make_tenant, login_as):
    t = make_tenant()
    sid, _ = _setup(app, t)
    client = login_as(t, "Support")
    assert 'id="invoice-now"' not in client.get(f"/subscriberview/profile/{sid}").get_data(
        as_text=True)
    client.post(f"/billing/subscriber/{sid}/invoice-now")
    assert not _invoices(app, t)


def test_new_invoice_form_names_bad_fields(app, make_tenant, login_as):
    t = make_tenant()
    sid, account = _setup(app, t)
    client = login_as(t, "Admin")
    late = (TODAY + dt.timedelta(days=400)).isoformat()
    page = client.post("/invoiceview/new", data={
        "account_number": account, "invoice_date": late,
        "new-description-1": "Cable", "new-unit_price-1": "5"}).get_data(as_text=True)
    assert "must be on or before the bill date" in page and not _invoices(app, t)
    page = client.post("/invoiceview/new", data={
        "account_number": account, "invoice_date": TODAY.isoformat(),
        "new-description-1": "Cable", "new-unit_price-1": "5", "new-quantity-1": "-1"}
    ).get_data(as_text=True)
    assert "Quantity: line 1: cannot be negative" in page and not _invoices(app, t)
    resp = client.post("/invoiceview/new", data={
        "account_number": account, "invoice_date": TODAY.isoformat(),
        "new-description-1": "Cable", "new-unit_price-1": "5", "new-kind-1": "equipment"})
    (invoice,) = _invoices(app, t)
    assert resp.status_code == 302 and invoice.total == 500 + 31


def test_invoice_defaults_form(app, make_tenant, login_as):
    t = make_tenant()
    client = login_as(t, "Admin")
    assert 'id="invoice-defaults"' in client.get("/billing/defaults/").get_data(as_text=True)
    form = {"billing_mode": "fixed", "bill_day": "40", "days_in_advance": "3", "due_days": "10",
            "proration_basis": "actual_days", "downgrade_policy": "deferred",
            "tax_rounding": "line", "tax_engine": "simple_tax",
            "number_format": "INV-{seq:05d}", "invoiced_statuses": "active"}
    page = client.post("/billing/defaults/", data=form).get_data(as_text=True)
    assert "must be between 1 and 28" in page
    assert client.post("/billing/defaults/", data={**form, "bill_day": "5"}).status_code == 302
    from headend.billing.drafting import settings

    with app.app_context(), acting_as(t):
        row = settings(db.session)
        assert (row.billing_mode, row.bill_day, row.number_format) == ("fixed", 5,
                                                                        "INV-{seq:05d}")


def test_api_creates_reads_and_voids_with_422_by_field(app, make_tenant, api_as):
    t, other = make_tenant(), make_tenant("Other ISP", "other")
    sid, _ = _setup(app, t)
    client, headers = api_as(t, "Billing")
    bad = client.post("/api/v1/invoice/", headers=headers, json={
        "subscriber_id": sid, "invoice_date": TODAY.isoformat(),
        "lines": [{"description": "X", "unit_price": "5"},
                  {"description": "Too much", "unit_price": "6", "kind": "discount"}]})
    assert bad.status_code == 422 and "amount" in bad.json["message"]
    bad = client.post("/api/v1/invoice/", headers=headers, json={"subscriber_id": "x"})
    assert bad.status_code == 422 and {"subscriber_id", "lines"} <= set(bad.json["message"])
    made = client.post("/api/v1/invoice/", headers=headers, json={
        "subscriber_id": sid, "invoice_date": TODAY.isoformat(),
        "lines": [{"description": "Router", "unit_price": "89.00", "kind": "equipment"}]})
    assert made.status_code == 201, made.json
    invoice_id = made.json["id"]
    shown = client.get(f"/api/v1/invoice/{invoice_id}", headers=headers).json["result"]
    assert shown["total"] == 8900 + 556 and shown["lines"][0]["taxes"][0]["amount"] == 556
    other_client, other_headers = api_as(other, "Admin")
    assert other_client.post(f"/api/v1/invoice/{invoice_id}/void",
                             headers=other_headers).status_code == 404
    voided = client.post(f"/api/v1/invoice/{invoice_id}/void", headers=headers)
    assert voided.status_code == 200 and voided.json["result"]["status"] == "void"
    again = client.post(f"/api/v1/invoice/{invoice_id}/void", headers=headers)
    assert again.status_code == 422 and "status" in again.json["message"]
    with app.app_context(), acting_as(t):
        assert db.session.scalar(select(func.count(Invoice.id))) == 1


def test_dashboard_charts_billed_revenue_per_month(app, make_tenant, login_as):
    from headend.billing.invoicing import new_invoice, void_invoice
    from headend.dashboard import billed_revenue

    t = make_tenant()
    sid, _ = _setup(app, t)
    with app.app_context(), acting_as(t):
        s = db.session
        for day, price in ((dt.date(2026, 1, 5), "10"), (dt.date(2026, 1, 20), "5"),
                           (dt.date(2026, 3, 2), "7")):
            new_invoice(s, sid, day, [{"description": "X", "unit_price": price,
                                       "kind": "fee"}], today=day)
        void_invoice(s, new_invoice(s, sid, dt.date(2026, 3, 3),
                                    [{"description": "Y", "unit_price": "100"}],
                                    today=dt.date(2026, 3, 3)).id)
        s.commit()
        rows = billed_revenue(s, dt.date(2026, 3, 15))
    assert len(rows) == 12 and rows[0][0] == "2025-04" and rows[-1][0] == "2026-03"
    # Fees are taxed at 6.25 %: 10.63 + 5.31 in January, 7.44 in March; the void is left out.
    assert {m: total for m, total, _ in rows if total} == {"2026-01": 1063 + 531,
                                                           "2026-03": 744}
    page = login_as(t, "ReadOnly").get("/").get_data(as_text=True)
    assert 'data-testid="chart-revenue"' in page and "Billed revenue per month" in page


def test_edit_page_posts_the_difference_and_delete_refuses_posted(app, make_tenant, login_as):
    from headend.billing.invoicing import new_invoice

    t = make_tenant()
    sid, _ = _setup(app, t, tax_exempt=True, tax_exemption_code="GOV")
    with app.app_context(), acting_as(t):
        invoice = new_invoice(db.session, sid, TODAY, [{"description": "Cable",
                                                        "unit_price": "5"}])
        db.session.commit()
        invoice_id, line_id = invoice.id, invoice.lines[0].id
    client = login_as(t, "Billing")
    assert 'id="edit-invoice-form"' in client.get(
        f"/invoiceview/edit_lines/{invoice_id}").get_data(as_text=True)
    bad = client.post(f"/invoiceview/edit_lines/{invoice_id}", data={
        f"quantity-{line_id}": "-1", f"unit_price-{line_id}": "5"}).get_data(as_text=True)
    assert "cannot be negative" in bad
    resp = client.post(f"/invoiceview/edit_lines/{invoice_id}", data={
        f"quantity-{line_id}": "3", f"unit_price-{line_id}": "5"})
    assert resp.status_code == 302
    with app.app_context(), acting_as(t):
        assert db.session.get(Invoice, invoice_id).total == 1500
        assert subscriber_balance(db.session, sid) == 1500
    page = client.post(f"/invoiceview/delete_draft/{invoice_id}", follow_redirects=True)
    assert "only an unposted draft can be deleted" in page.get_data(as_text=True)
    assert len(_invoices(app, t)) == 1
