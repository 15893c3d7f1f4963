"""An invoice as PDF with the classic form: its content (pdftotext), where things sit on the
page (pdftotext -bbox) and what the page looks like (pdftoppm), as the UI and the API serve it;
another tenant's invoice is a 404."""

from __future__ import annotations

import io

import pytest
from headend.billing.models import Invoice
from headend.branding.services import save_branding
from headend.db import db
from headend.documents.render import invoice_pdf
from headend.documents.services import save_design
from headend.tenancy.context import acting_as
from PIL import Image

from tests.documents_helpers import (
    find,
    has_color,
    invoiced_tenant,
    page_count,
    page_image,
    pdf_text,
    words,
)


def _pdf(app, tenant, invoice_id) -> bytes:
    with app.app_context(), acting_as(tenant):
        return invoice_pdf(db.session, invoice_id)


def _number(app, tenant, invoice_id) -> str:
    with app.app_context(), acting_as(tenant):
        return db.session.get(Invoice, invoice_id).number


def _design(app, tenant, **values):
    with app.app_context(), acting_as(tenant):
        save_design(db.session, tenant, **values)
        db.session.commit()


def test_the_pdf_carries_number_lines_taxes_and_totals(app, make_tenant):
    tenant, (invoice_id, _) = invoiced_tenant(app, make_tenant, "Text ISP")
    with app.app_context(), acting_as(tenant):
        save_branding(db.session, display_name="Valley Fiber", address="1 Main St\nSpringfield",
                      billing_name="Valley Fiber Billing", billing_address="PO Box 9")
        db.session.commit()
    pdf = _pdf(app, tenant, invoice_id)
    assert pdf.startswith(b"%PDF") and page_count(pdf) == 1
    text = pdf_text(pdf)
    number = _number(app, tenant, invoice_id)
    for expected in (number, "Valley Fiber", "Bill to", "Ana Doc0", "100 N State St",
                     "Fiber 500 monthly", "Static IP address", "Wi-Fi extender rental",
                     "59.99 USD", "9.00 USD", "Subtotal 73.99 USD", "State tax 4.62 USD",
                     "Total 78.61 USD", "Amount paid 0.00 USD", "Balance due 78.61 USD",
                     "2026-03-01", "Make payable to", "Valley Fiber Billing", "PO Box 9",
                     "Amount due: 78.61 USD"):
        assert expected in " ".join(text.split()), expected


def test_positions_stub_in_the_bottom_third_amounts_right_of_descriptions(app, make_tenant):
    tenant, (invoice_id, _) = invoiced_tenant(app, make_tenant, "Layout ISP")
    (width, height), found = words(_pdf(app, tenant, invoice_id))
    (detach,) = find(found, "detach")
    assert detach[2] > height * 2 / 3, "the remittance stub starts in the bottom third"
    (enclosed,) = find(found, "enclosed:")
    assert enclosed[2] > height * 2 / 3
    (fiber,) = find(found, "Fiber")
    amounts = [w for w in find(found, "59.99") if abs(w[2] - fiber[2]) < 3]
    assert amounts, "the line's price sits on the line's row"
    assert min(a[1] for a in amounts) > fiber[3], "amounts are right of the description"
    (total_label,) = [w for w in find(found, "Total") if w[2] < height * 2 / 3]
    assert total_label[1] > width / 2, "the totals are on the right half"
    (invoice_title,) = find(found, "INVOICE")
    assert invoice_title[1] > width / 2 and invoice_title[2] < height / 6


def test_colours_and_logo_are_drawn(app, make_tenant):
    tenant, (invoice_id, _) = invoiced_tenant(app, make_tenant, "Colour ISP")
    logo = io.BytesIO()
    Image.new("RGB", (120, 40), (0, 200, 0)).save(logo, "PNG")
    with app.app_context(), acting_as(tenant):
        save_branding(db.session, primary_color="#cc0033", logo=logo.getvalue(),
                      display_name="Colour Fiber", address="1 Main St\nSpringfield\nIL",
                      phone="555-0100", website="colour.test", tax_id="12-345")
        db.session.commit()
    pdf = _pdf(app, tenant, invoice_id)
    _, found = words(pdf)
    name = min(find(found, "Colour"), key=lambda w: w[2])  # the top one (the stub has it too)
    assert name[2] >= 30 + 40, "the name is drawn below the 40 pt logo, not over it"
    (tax_id,) = find(found, "12-345")
    (bill_to,) = find(found, "Bill")
    assert tax_id[4] < bill_to[2], "the company block ends above the bill-to"
    image = page_image(pdf)
    assert has_color(image, "#cc0033"), "the primary colour heads the line table"
    assert has_color(image, "#00c800"), "the logo is drawn"


def test_design_texts_columns_and_stub_follow_the_design(app, make_tenant):
    tenant, (invoice_id, _) = invoiced_tenant(app, make_tenant, "Design ISP")
    text = " ".join(pdf_text(_pdf(app, tenant, invoice_id)).split())
    assert "Qty × Unit price" in text and "detach" in text
    _design(app, tenant, header_text="Thank you for your business",
            footer_text="Questions? Call 555-0100", marketing_message="Fiber 1000 is here",
            columns=["quantity"], remittance_stub=False)
    text = " ".join(pdf_text(_pdf(app, tenant, invoice_id)).split())
    for expected in ("Thank you for your business", "Questions? Call 555-0100",
                     "Fiber 1000 is here", "Qty"):
        assert expected in text, expected
    for gone in ("Unit price", "Period", "detach", "Make payable to"):
        assert gone not in text, gone


def test_an_invoice_with_many_lines_flows_onto_more_pages(app, make_tenant):
    lines = [{"description": f"Charge number {n}", "quantity": "1", "unit_price": "1.00"}
             for n in range(60)]
    tenant, (invoice_id,) = invoiced_tenant(app, make_tenant, "Long ISP", count=1, lines=lines)
    pdf = _pdf(app, tenant, invoice_id)
    assert page_count(pdf) >= 2
    text = pdf_text(pdf)
    assert "Charge number 0" in text and "Charge number 59" in text
    assert text.count("detach") == 1, "the stub is on the first page only"
    pages = [page for page in text.split("\f") if page.strip()]
    assert len(pages) == page_count(pdf)
    assert all("Description" in page and "Amount" in page for page in pages), \
        "the lines' header row repeats on every page"


def test_ui_and_api_serve_the_pdf_and_404_another_tenants(app, make_tenant, login_as, api_as):
    tenant, (invoice_id, _) = invoiced_tenant(app, make_tenant, "Mine ISP")
    other, (theirs, _) = invoiced_tenant(app, make_tenant, "Theirs ISP")
    client = login_as(tenant, "ReadOnly")
    resp = client.get(f"/documents/invoice/{invoice_id}.pdf")
    assert resp.status_code == 200 and resp.mimetype == "application/pdf"
    assert _number(app, tenant, invoice_id) in pdf_text(resp.data)
    assert client.get(f"/documents/invoice/{theirs}.pdf").status_code == 404
    api, headers = api_as(tenant, "ReadOnly")
    resp = api.get(f"/api/v1/invoice_document/{invoice_id}", headers=headers)
    assert resp.status_code == 200 and resp.mimetype == "application/pdf"
    assert _number(app, tenant, invoice_id) in pdf_text(resp.data)
    assert api.get(f"/api/v1/invoice_document/{theirs}", headers=headers).status_code == 404
    assert api.get(f"/api/v1/invoice_document/{invoice_id}").status_code == 401


def test_rendering_another_tenants_invoice_in_a_service_is_a_lookup_error(app, make_tenant):
    tenant, _ = invoiced_tenant(app, make_tenant, "Scoped ISP")
    _, (theirs, _) = invoiced_tenant(app, make_tenant, "Other ISP")
    with app.app_context(), acting_as(tenant), pytest.raises(LookupError):
        invoice_pdf(db.session, theirs)


def _usage_invoice(app, tenant, shown: bool) -> int:
    from decimal import Decimal as D

    from headend.billing.invoicing import new_invoice
    from headend.catalog.models import InternetProfile
    from headend.network.models import UsageCharge

    from tests.documents_helpers import INVOICE_DATE, LINES
    from tests.invoicing_helpers import subscribe, subscriber, triple_play

    with app.app_context(), acting_as(tenant):
        s = db.session
        package = triple_play(s)
        s.add(InternetProfile(package=package, usage_billing_enabled=True,
                              usage_billing_basis="MB", usage_show_on_invoice=shown))
        sub = subscriber(s)
        subscription = subscribe(s, sub, package)
        invoice = new_invoice(s, sub.id, INVOICE_DATE, LINES, today=INVOICE_DATE)
        s.add(UsageCharge(service_id=subscription.services[0].id,
                          period_start=INVOICE_DATE.replace(month=2),
                          period_end=INVOICE_DATE.replace(day=28, month=2), used=D("51234.5"),
                          included=D("50000"), billed_units=D("1234.5"), unit_price=D("0.01"),
                          amount=D("12.345"), invoice_id=invoice.id))
        s.commit()
        return invoice.id


def test_usage_shows_when_the_package_and_the_design_say_so(app, make_tenant):
    tenant = make_tenant("Usage ISP")
    shown, hidden = _usage_invoice(app, tenant, True), _usage_invoice(app, tenant, False)
    text = " ".join(pdf_text(_pdf(app, tenant, shown)).split())
    assert "Usage" in text and "2026-02-01 - 2026-02-28" in text
    assert "51234.5 MB used, 50000 included, 1234.5 billed (12.35 USD)" in text
    assert "MB used" not in pdf_text(_pdf(app, tenant, hidden)), "the package hides usage"
    _design(app, tenant, show_usage=False)
    assert "MB used" not in pdf_text(_pdf(app, tenant, shown)), "the design hides usage"
